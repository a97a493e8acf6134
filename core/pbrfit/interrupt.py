"""A Ctrl-C that cancels within a second, in every phase of a command-line run.

Python runs signal handlers only between bytecodes of the main thread, so a Ctrl-C that
arrives while the main thread is inside a long native call (reading a large EXR, building
a ray-tracing scene, a big torch operation) waits for that call to return: seconds. So
:meth:`CancellableRun.run` runs the work on a worker thread and keeps the main thread free
to take the signal:

1. Ctrl-C sets :attr:`CancellableRun.cancel`; the work sees it at its next check (between
   views, iterations, stages) and raises :class:`pbrfit.errors.FitCancelled`; the
   command prints one line and exits with 130.
2. If the work has not stopped :data:`GRACE` seconds later (it is inside a native call),
   or at a second Ctrl-C, the main thread runs the abort callbacks (removing the staging
   folder), prints the same line and ends the process with status 130 (``os._exit``).
3. Inside :meth:`CancellableRun.commit` (the short step that publishes the outputs and
   writes back onto the stage) nothing is interrupted: a cancel that arrives there is too
   late, the run completes. A cancel before the commit starts keeps it from starting.

Nothing is written before the commit, so a cancel always leaves every file as it was.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator, TypeVar

from .errors import FitCancelled

__all__ = ["CancellableRun", "GRACE", "CANCELLED"]

#: seconds the work gets to stop by itself after Ctrl-C before the process ends
GRACE = 0.5
#: what a cancelled run prints on stderr
CANCELLED = "pbrfit: cancelled; nothing was written"

T = TypeVar("T")


class CancellableRun:
    """Run one command's work so that Ctrl-C is honoured promptly (see the module docstring).

    Attributes:
        cancel: set by Ctrl-C; pass it to :func:`pbrfit.fit.fit_material`.
    """

    def __init__(self, grace: float = GRACE):
        self.cancel = threading.Event()
        self.grace = grace
        self._lock = threading.Lock()
        self._committing = False
        self._aborts: list[Callable[[], None]] = []
        self._signals = 0
        self._first_signal = 0.0

    def on_abort(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` if the process has to be ended before the work stopped by itself."""
        self._aborts.append(fn)

    def check(self) -> None:
        """Raise FitCancelled when a cancel was asked for."""
        if self.cancel.is_set():
            raise FitCancelled(CANCELLED.removeprefix("pbrfit: "))

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        """The step that must not be cut in half (publishing, write-back).

        Raises:
            FitCancelled: the cancel came before the commit began (then nothing is done).
        """
        with self._lock:
            self.check()
            self._committing = True
        try:
            yield
        finally:
            with self._lock:
                self._committing = False

    def _on_sigint(self, signum, frame) -> None:
        self._signals += 1
        if self._signals == 1:
            self._first_signal = time.monotonic()
        self.cancel.set()

    def _abort(self) -> None:
        """End the process now (status 130), unless the commit is under way."""
        with self._lock:
            if self._committing:
                return
            with contextlib.suppress(BaseException):
                sys.stderr.write(("\n" if sys.stderr.isatty() else "") + CANCELLED + "\n")
            self.exit_now(130)

    def exit_now(self, code: int) -> None:
        """Run the abort callbacks, flush stdout and stderr, and end the process without the
        interpreter's teardown (unloading torch and the ray tracer takes most of a second)."""
        for fn in self._aborts:
            with contextlib.suppress(BaseException):
                fn()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)

    @property
    def interrupted(self) -> bool:
        """Whether Ctrl-C arrived (not only a cancel set in code)."""
        return self._signals > 0

    def run(self, work: Callable[[], T]) -> T:
        """Run ``work()`` on a worker thread; return its result or raise its exception."""
        if threading.current_thread() is not threading.main_thread():
            return work()  # signals only reach the main thread: nothing to add here
        outcome: dict = {}

        def target():
            try:
                outcome["value"] = work()
            except BaseException as e:  # handed to the main thread
                outcome["error"] = e

        worker = threading.Thread(target=target, name="pbrfit-run", daemon=True)
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            worker.start()
            while worker.is_alive():
                worker.join(0.05)
                if self.cancel.is_set() and worker.is_alive() and (
                        self._signals > 1 or time.monotonic() - self._first_signal > self.grace):
                    self._abort()  # returns only while committing
        finally:
            signal.signal(signal.SIGINT, previous)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
