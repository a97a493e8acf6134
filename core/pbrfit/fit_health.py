"""What a run's own numbers say about trusting its result.

Two things a low train ΔE2000 does not show, each turned into a note (``{about: "fit",
severity, message}``) that travels with the plausibility flags into material.json, the top of
report.html, the CLI summary and both hosts' panels. The run still succeeds: it is a result,
with a warning and what would help.

* **Over-fitting**: the material explains the views it was fitted to much better than the
  held-out ones (validation views, under lighting the fit never saw). Checked on the final
  metrics; without validation views it cannot be checked, and a note says so.
* **An unfinished optimization**: the last stage ran out of iterations while its checks were
  still improving (the path refinement's checks, or the raster stage's loss).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

__all__ = ["ABOUT", "OVERFIT_EXCESS", "OVERFIT_RATIO", "STILL_IMPROVING", "notes", "overfit_note", "unfinished_note"]

#: the ``about`` (and, in the findings, ``parameter``) of every run-level note
ABOUT = "fit"

#: validation ΔE2000 mean above train by more than this (ΔE2000) ...
OVERFIT_EXCESS = 1.5
#: ... and more than this many times train reads as over-fitting. Lighting changes noise and
#: contrast, so validation reads somewhat above or below train on a good fit (the demo: 1.4
#: against 2.0; the benchmark's cases: within 0.3 of their floors on both).
OVERFIT_RATIO = 1.5
#: a stage whose last checks still fell by more than this share of their value was still improving
STILL_IMPROVING = 0.02


def overfit_note(metrics: Mapping) -> dict | None:
    """A warning when validation ΔE2000 is far above train (:data:`OVERFIT_EXCESS`,
    :data:`OVERFIT_RATIO`); a note when there are no validation views."""
    train = (metrics.get("train") or {}).get("mean") or {}
    val = (metrics.get("validate") or {}).get("mean")
    if not train:
        return None
    if not val:
        return {"about": ABOUT, "severity": "note",
                "message": "no validation views: over-fitting cannot be detected; add a view under another "
                           "lighting (split = \"validate\") to have the fit checked on light it never saw"}
    t, v = train.get("de2000_mean"), val.get("de2000_mean")
    if t is None or v is None or not (math.isfinite(t) and math.isfinite(v)):
        return None
    if v > t + OVERFIT_EXCESS and v > OVERFIT_RATIO * t:
        return {"about": ABOUT, "severity": "warning",
                "message": f"over-fitted: validation ΔE2000 {v:.2f} against train {t:.2f}; the material explains "
                           "the train views far better than light it never saw, so its parameters are not "
                           "trustworthy. Add views from other angles or a reference under another lighting, or "
                           "choose a preset that names the finish (--preset)"}
    return None


def _still_falling(values: Sequence[float], window: int) -> tuple[float, float] | None:
    """(the best before the last ``window`` values, the best of them) when the latter beat the
    former by more than :data:`STILL_IMPROVING` of its value; else None. Bests, not last
    values: a line search's trial steps and Monte Carlo checks go up and down."""
    values = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if len(values) <= window:
        return None
    before, recent = min(values[:-window]), min(values[-window:])
    if before - recent > STILL_IMPROVING * abs(recent):
        return before, recent
    return None


def unfinished_note(stopped: str, schedule: Sequence[Mapping], history: Sequence[Mapping],
                    window: int = 2) -> dict | None:
    """A warning when the run stopped on its iteration budget while its last stage was still
    improving: over its last ``window`` checks (the path refinement's) or the last fifth of its
    evaluations (a raster stage's losses)."""
    stages = [s for s in schedule if s.get("stage") != "prune"]  # pruning re-fits briefly, on its own budget
    if stopped != "iterations" or not stages:
        return None
    last = stages[-1]
    if last.get("stage") == "path":
        falling = _still_falling(last.get("checks") or [], window)
        if falling is None:
            return None
        what = "relative error" if last.get("check_metric") == "relative_error" else "ΔE2000"
        return {"about": ABOUT, "severity": "warning",
                "message": f"not converged: the path refinement was still improving when its {last['iterations']} "
                           f"iterations ran out (check {what} {falling[0]:.4g} -> {falling[1]:.4g}); more "
                           "--path-iterations may lower it further"}
    losses = [h["loss"] for h in history if h.get("stage") == last.get("stage")]
    falling = _still_falling(losses, max(window, len(losses) // 5))
    if falling is None:
        return None
    return {"about": ABOUT, "severity": "warning",
            "message": f"not converged: the {last.get('stage')} stage was still improving when its iterations ran "
                       f"out (loss {falling[0]:.4g} -> {falling[1]:.4g}); more --iterations may lower it further"}


def notes(metrics: Mapping, stopped: str, schedule: Sequence[Mapping], history: Sequence[Mapping]) -> list[dict]:
    """Every fit-health note of a finished run (warnings first)."""
    found = [n for n in (overfit_note(metrics), unfinished_note(stopped, schedule, history)) if n is not None]
    return sorted(found, key=lambda n: n["severity"] != "warning")
