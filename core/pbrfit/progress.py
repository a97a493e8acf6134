"""How a long run shows its progress: a terminal bar, log lines, or JSON lines for pipelines.

The fit reports :class:`pbrfit.fit.Progress` events (phase, stage, iteration of a total
fixed when the run starts, loss, ΔE2000 on train and validation, elapsed and estimated
remaining seconds). A reporter turns them into one of three forms, all on a stream of
their own (stderr by default, so that stdout keeps the command's result):

* ``bar``: a tqdm progress bar, redrawn in place (an interactive terminal);
* ``lines``: one plain line every few seconds and at every phase change (a log file, CI,
  any stream that is not a terminal: carriage returns would pile up there);
* ``json``: one JSON object per line per event (scripts and services), with
  ``"event"`` one of ``"progress"``, ``"done"``, ``"cancelled"``, ``"error"``; see
  :meth:`JsonLines.progress` for the fields. The command line writes these to stdout
  (instead of its human summary), so that stdout is one JSON stream.

``auto`` picks ``bar`` on a terminal and ``lines`` elsewhere; ``none`` is silent.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import IO

__all__ = ["MODES", "Reporter", "TerminalBar", "LogLines", "JsonLines", "Silent", "make_reporter", "describe"]

#: the ``--progress`` choices
MODES = ("auto", "bar", "lines", "json", "none")


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def describe(p) -> str:
    """One line for a person: where the run is and how it is doing (hosts show it too)."""
    parts = [(p.stage if p.phase == "fit" else p.phase) + f" {min(p.iteration, p.total)}/{p.total}"]
    if _finite(p.loss) is not None:
        parts.append(f"loss {p.loss:.4g}")
    if _finite(p.train_de2000) is not None:
        parts.append(f"ΔE2000 train {p.train_de2000:.2f}")
    if _finite(p.validate_de2000) is not None:
        parts.append(f"validate {p.validate_de2000:.2f}")
    parts.append(f"{p.elapsed:.0f} s")
    if _finite(p.remaining) is not None:
        parts.append(f"~{p.remaining:.0f} s left")
    return ", ".join(parts)


class Reporter:
    """Receives progress events and the run's end; the base class ignores them.

    Attributes:
        machine: the events are for a program (JSON): the command prints no human summary.
    """

    machine = False

    def progress(self, p) -> None:
        """One :class:`pbrfit.fit.Progress` event."""

    def done(self, summary: dict) -> None:
        """The run succeeded; ``summary`` is what the command printed (paths, metrics)."""

    def failed(self, kind: str, message: str, exit_code: int) -> None:
        """The run ended without a result: ``kind`` "cancelled" or "error"."""

    def close(self) -> None:
        """Release the stream's display (end a bar's line)."""


class Silent(Reporter):
    """``--progress none`` (and ``--quiet``)."""


class TerminalBar(Reporter):
    """A tqdm bar redrawn in place; its total is the run's fixed total of work units."""

    def __init__(self, stream: IO = sys.stderr):
        self.stream = stream
        self.bar = None

    def progress(self, p) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=p.total, unit="it", dynamic_ncols=True, file=self.stream, leave=True)
        self.bar.update(max(0, min(p.iteration, p.total) - self.bar.n))
        post = {"phase": p.phase if p.phase != "fit" else p.stage}
        if _finite(p.loss) is not None:
            post["loss"] = f"{p.loss:.4g}"
        if _finite(p.train_de2000) is not None:
            post["dE train"] = f"{p.train_de2000:.2f}"
        if _finite(p.validate_de2000) is not None:
            post["dE val"] = f"{p.validate_de2000:.2f}"
        self.bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LogLines(Reporter):
    """One line every ``every`` seconds, and at each change of phase or stage."""

    def __init__(self, stream: IO = sys.stderr, every: float = 5.0):
        self.stream, self.every = stream, every
        self._last_time = -math.inf
        self._last_where = None

    def progress(self, p) -> None:
        where = (p.phase, p.stage)
        now = time.monotonic()
        if where == self._last_where and now - self._last_time < self.every and p.iteration < p.total:
            return
        self._last_time, self._last_where = now, where
        print(f"pbrfit: {describe(p)}", file=self.stream, flush=True)


class JsonLines(Reporter):
    """One JSON object per line and per event, flushed at once."""

    machine = True

    def __init__(self, stream: IO = sys.stdout):
        self.stream = stream

    def _emit(self, obj: dict) -> None:
        self.stream.write(json.dumps(obj, allow_nan=False) + "\n")
        self.stream.flush()

    def progress(self, p) -> None:
        """``{"event": "progress", "phase", "stage", "iteration", "total", "loss",
        "de2000_train", "de2000_validate", "elapsed_s", "remaining_s"}``; a value not
        known (yet) is null."""
        self._emit({"event": "progress", "phase": p.phase, "stage": p.stage, "iteration": min(p.iteration, p.total),
                    "total": p.total, "loss": _finite(p.loss), "de2000_train": _finite(p.train_de2000),
                    "de2000_validate": _finite(p.validate_de2000), "elapsed_s": round(float(p.elapsed), 3),
                    "remaining_s": None if _finite(p.remaining) is None else round(float(p.remaining), 1)})

    def done(self, summary: dict) -> None:
        self._emit({"event": "done", **summary})

    def failed(self, kind: str, message: str, exit_code: int) -> None:
        self._emit({"event": kind, "message": message, "exit_code": exit_code})


def make_reporter(mode: str = "auto", stream: IO | None = None) -> Reporter:
    """The reporter for ``mode`` (one of :data:`MODES`); ``stream`` defaults to stderr, and
    to stdout for ``json``."""
    if mode == "json":
        return JsonLines(stream or sys.stdout)
    stream = stream or sys.stderr
    if mode == "auto":
        mode = "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
    return {"bar": TerminalBar, "lines": LogLines}.get(mode, lambda stream: Silent())(stream)
