"""The fit in a worker thread, talking to Blender's main thread through a queue. (No bpy.)

The worker only calls :func:`pbrfit.fit.fit_material` on an already extracted scene; it
never touches Blender data. The main thread (a modal operator's timer) calls
:meth:`FitWorker.drain` and gets messages:

* ``("progress", pbrfit.fit.Progress)`` after each objective evaluation;
* ``("done", FitResult)``, ``("cancelled", message)`` or ``("error", message)``, exactly
  one of them, last.
"""

from __future__ import annotations

import queue
import threading
import traceback

__all__ = ["FitWorker"]


class FitWorker:
    """Runs one fit in a daemon thread.

    Args:
        scene: a :class:`pbrfit.scene.FitScene`.
        options: a :class:`pbrfit.fit.FitOptions`.
    """

    def __init__(self, scene, options):
        self.scene, self.options = scene, options
        self.cancel_event = threading.Event()
        self.messages: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="pbrfit-fit", daemon=True)

    def start(self) -> "FitWorker":
        self.thread.start()
        return self

    def cancel(self) -> None:
        """Ask the fit to stop at its next evaluation."""
        self.cancel_event.set()

    def _run(self) -> None:
        from pbrfit.errors import FitCancelled, PbrfitError
        from pbrfit.fit import fit_material

        try:
            result = fit_material(self.scene, self.options, progress=lambda p: self.messages.put(("progress", p)),
                                  cancel=self.cancel_event)
        except FitCancelled as e:
            self.messages.put(("cancelled", str(e)))
        except PbrfitError as e:
            self.messages.put(("error", str(e)))
        except Exception as e:  # keep Blender alive; the message carries the cause
            self.messages.put(("error", f"fit failed: {type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"))
        else:
            self.messages.put(("done", result))

    def drain(self) -> list[tuple[str, object]]:
        """Every message waiting now (non-blocking)."""
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)
