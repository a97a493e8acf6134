"""One fit on a background thread, for hosts that must keep their main thread free.

Blender's modal operator and Kit's window both run the fit this way: the host builds the
:class:`pbrfit.scene.FitScene` on its main thread (host data is not thread-safe), starts a
:class:`FitSession`, and polls it from a timer or an event loop: :meth:`FitSession.poll`
returns the progress reports since the last call, :attr:`FitSession.state` tells when it
has ended, and :meth:`FitSession.cancel` stops it at the fit's next check. The session
never touches host data, and no exception escapes its thread: whatever ends the fit is
kept in :attr:`FitSession.error` with a one-line :attr:`FitSession.message` for the UI.
"""

from __future__ import annotations

import queue
import threading
import traceback

from .errors import FitCancelled, PbrfitError

__all__ = ["FitSession", "STATES"]

#: the states a session goes through: idle -> running -> one of the last three
STATES = ("idle", "running", "done", "cancelled", "failed")


class FitSession:
    """Runs :func:`pbrfit.fit.fit_material` on ``scene`` in a daemon thread.

    Args:
        scene: the :class:`pbrfit.scene.FitScene` to fit (built by the host beforehand).
        options: a :class:`pbrfit.fit.FitOptions`.

    Attributes:
        result: the :class:`pbrfit.fit.FitResult` once ``state == "done"``, else None.
        error: the exception that ended the fit (cancelled or failed), else None.
        message: one line describing the end ("cancelled; nothing was written", the input
            error, or "fit failed: <type>: <cause>"); empty while running or when done.
        details: the traceback of an unexpected failure (for a log), else "".
        latest: the last :class:`pbrfit.fit.Progress` returned by :meth:`poll`, or None.
    """

    def __init__(self, scene, options):
        self.scene, self.options = scene, options
        self.result = None
        self.error: BaseException | None = None
        self.message = ""
        self.details = ""
        self.latest = None
        self._progress: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "idle"

    # --- lifetime ---------------------------------------------------------------------------

    def start(self) -> FitSession:
        """Start the fit thread; returns the session.

        Raises:
            RuntimeError: the session was started before (make a new one).
        """
        if self._state != "idle":
            raise RuntimeError(f"this fit session is already {self._state}; make a new one")
        self._state = "running"
        self._thread = threading.Thread(target=self._run, name="pbrfit-fit", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            from .fit import fit_material  # inside the try: a broken install is a failure, not a dead thread

            result = fit_material(self.scene, self.options, progress=self._progress.put, cancel=self._cancel)
        except FitCancelled as e:
            self._end("cancelled", error=e, message=str(e))
        except PbrfitError as e:
            self._end("failed", error=e, message=str(e).splitlines()[0] if str(e) else type(e).__name__)
        except BaseException as e:
            self._end("failed", error=e, message=f"fit failed: {type(e).__name__}: {e}".splitlines()[0],
                      details=traceback.format_exc())
        else:
            if self._cancel.is_set():  # cancelled after the last check: the result is not wanted
                self._end("cancelled", error=FitCancelled("fit cancelled; nothing was written"),
                          message="fit cancelled; nothing was written")
            else:
                self.result = result
                self._end("done")

    def _end(self, state: str, *, error: BaseException | None = None, message: str = "", details: str = ""):
        self.error, self.message, self.details = error, message, details
        self._state = state  # last: a poller that sees the end sees everything above

    def cancel(self) -> None:
        """Ask the fit to stop at its next check; the state becomes ``"cancelled"``."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the fit thread ends (or ``timeout`` seconds); True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- state ------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """One of :data:`STATES`."""
        return self._state

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def finished(self) -> bool:
        """The fit has ended (done, cancelled or failed) and its thread is gone."""
        return self._state in STATES[2:] and (self._thread is None or not self._thread.is_alive())

    def poll(self) -> list:
        """The progress reports since the last call, oldest first (updates :attr:`latest`)."""
        items = []
        while True:
            try:
                items.append(self._progress.get_nowait())
            except queue.Empty:
                break
        if items:
            self.latest = items[-1]
        return items

    def outcome(self):
        """The :class:`pbrfit.fit.FitResult`, or raise what ended the fit.

        Raises:
            FitCancelled, InputError, ...: the error that ended the fit.
            RuntimeError: the fit has not ended.
        """
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise RuntimeError("the fit has not finished")
        return self.result
