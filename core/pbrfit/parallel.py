"""Views rendered at once: a fit's views are independent (their renderers share only read-only
state), so the CPU work of several runs on several threads.

Each thread runs its view's torch work on one torch thread (``torch.set_num_threads(1)``,
:func:`pbrfit.fit.compute_settings`): no OpenMP pool that spins against other processes on a
busy machine, and the Python that dispatches torch's operations (a large share of the time at
these tensor sizes) also runs on several cores while the operations release the GIL. Results
come back in the order of the views, and gradients are summed in that order, so a run is
deterministic for any number of threads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

__all__ = ["map_ordered", "default_threads", "MAX_DEFAULT_THREADS"]

T = TypeVar("T")
R = TypeVar("R")

#: the most threads :func:`default_threads` picks (a job has 4-8 views; more threads mostly wait)
MAX_DEFAULT_THREADS = 4


def default_threads() -> int:
    """CPU threads a fit uses by default: the cores this process may run on, at most
    :data:`MAX_DEFAULT_THREADS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores))


def map_ordered(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` on up to ``workers`` threads, in the order of ``items``.

    The first exception (a cancel raised by ``fn``'s own checks, an error) propagates; views
    not started yet are not started, those running finish their current step (``fn`` should
    check for a cancel between its steps).
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="pbrfit-view")
    try:
        futures = [pool.submit(fn, x) for x in items]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
