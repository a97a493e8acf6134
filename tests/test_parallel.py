"""Views on several threads: order kept, the first error propagates and stops what has not
started, subnormal flushing is per thread."""

import threading
import time

import pytest
import torch

from pbrfit.parallel import default_threads, map_ordered
from pbrfit.scene_renderer import flush_subnormals


def test_results_come_back_in_order_from_several_threads():
    seen = set()

    def slow_square(x):
        seen.add(threading.current_thread().name)
        time.sleep(0.02 * (5 - x))  # later items finish first
        return x * x

    assert map_ordered(slow_square, range(5), workers=3) == [0, 1, 4, 9, 16]
    assert len(seen) > 1
    assert map_ordered(slow_square, [2], workers=3) == [4]


def test_the_first_error_propagates_and_unstarted_items_never_start():
    started = []

    def work(x):
        started.append(x)
        if x == 0:
            raise KeyboardInterrupt("cancelled")
        time.sleep(0.2)
        return x

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        map_ordered(work, range(10), workers=2)
    assert time.monotonic() - t0 < 0.5  # does not wait for the running item
    time.sleep(0.3)
    assert len(started) <= 3


def test_default_threads_is_the_cores_at_most_four():
    assert 1 <= default_threads() <= 4


def test_subnormal_flushing_is_per_thread_and_restored():
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # subnormal in float32

    def inside():
        with flush_subnormals():
            return float(tiny * 1.0)

    assert map_ordered(lambda _: inside(), range(4), workers=4) == [0.0] * 4
    assert float(tiny * 1.0) > 0.0  # this thread never flushed
    with flush_subnormals():
        with flush_subnormals():
            assert float(tiny * 1.0) == 0.0
        assert float(tiny * 1.0) == 0.0  # the inner exit keeps the outer's switch
    assert float(tiny * 1.0) > 0.0
