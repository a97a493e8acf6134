"""Other explanations of the same photographs that a local fit cannot move between.

The staged fit (:mod:`pbrfit.warm_start`) frees the layers last, after the base has already
explained what it could. Two looks then trap a gradient fit in the wrong structure:

* **A clear coat over a rough base.** The gloss stage, with no coat yet, gives the base the
  coat's sharp highlight (a red paint with a 0.05 coat over a 0.5 base came out as a 0.14 base
  with no coat: train loss 2.74, the truth 2.28, judged 1.85 ΔE2000 against Cycles' floor of
  0.53). Switching a coat on from there only adds a second highlight, so the 1-D warm start
  keeps it off. The hypothesis :func:`coat_takes_highlight` gives the highlight to the coat
  (full weight, its roughness chosen at or below the base's) and then searches the base's
  roughness and colour again.
* **Thin film on another branch.** Film colour is periodic in thickness; the 1-D search
  picks the best thickness for the current roughness and base colour, which the film itself
  was meant to correct. :func:`film_branches` starts from the other local minima of the
  thickness profile.

Each hypothesis is a starting material; :meth:`pbrfit.fit_run.FitRun.try_hypotheses` gives each
a short fit and keeps the best alternative only when it beats the ordinary warm start by
:data:`pbrfit.layers.LAYER_GAIN` of the noise-free train error
(:meth:`pbrfit.fit_run.FitRun.structure_evidence`; the simpler, first explanation wins ties); by how
many standard errors of its pixels' paired differences it did is reported with it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .layers import LAYER_GAIN, LAYER_SIGNIFICANCE, SIMPLEST
from .params import ParameterSpace
from .warm_start import GRID_EDGE, warm_start

__all__ = ["FILM_PROFILE_POINTS", "FILM_BRANCHES", "HYPOTHESIS_EVALUATIONS", "COAT_ROUGHNESS_SHARES", "alternatives",
           "coat_takes_highlight",
           "film_branches", "structure_summary"]

#: thickness samples of the film profile over its whole range (about 25 nm apart on 0..1500 nm:
#: a quarter of the narrowest colour period, ~100 nm at film IOR 1.33 at normal incidence)
FILM_PROFILE_POINTS = 61
#: other local minima of the thickness profile tried (best first)
FILM_BRANCHES = 2
#: objective evaluations (with gradient) of each hypothesis' short fit
HYPOTHESIS_EVALUATIONS = 12
#: the coat hypothesis' candidates for the coat's roughness, as shares of the warm start's base
#: roughness: the gloss stage's base highlight is the coat's blurred by the base lobe beneath
#: (Suzanne's 0.05 coat: the base took 0.28, and 12 evaluations of L-BFGS from there reached
#: only 0.14)
COAT_ROUGHNESS_SHARES = (1.0, 0.7, 0.5, 0.35, 0.25)

LossOf = Callable[[ParameterSpace, object], float]


def _loss(loss_of: LossOf, values: dict) -> float:
    s = ParameterSpace(values, [])
    return float(loss_of(s, s.initial_vector()))


def _stand_ins_reset(values: dict, fitted: list[str]) -> dict:
    """``values`` with what the gloss stage uses to mimic a layer not yet free back at its
    simplest (:data:`pbrfit.layers.SIMPLEST`, the nearest where there are two): the specular
    level (a coat's extra reflection, a film's changed Fresnel; the 350 nm film finish came out
    at level 0.11, which moved the film profile's minimum to 475 nm) and metallic (a film's
    coloured reflection: the 450 nm film over a dark plastic on Suzanne came out 0.26 metal, and
    from there the right branch's short fit ended 3x worse than the wrong branch's)."""
    values = dict(values)
    for name in ("specular_ior_level", "metallic"):
        if name in fitted:
            values[name] = min(SIMPLEST[name], key=lambda v: abs(v - values[name]))
    return values


def _parabola_minimum(t: np.ndarray, profile: np.ndarray, i: int) -> float:
    """The minimum of the parabola through the profile's point ``i`` and its neighbours (the
    grid's 25 nm step is a quarter of the narrowest colour period: 450 nm read as 438 nm
    costs a 1.4x train loss on the iridescent finish); ``t[i]`` at the ends or where the
    points do not curve upwards."""
    if i == 0 or i == len(t) - 1:
        return float(t[i])
    a, b, c = profile[i - 1], profile[i], profile[i + 1]
    curvature = a - 2 * b + c
    if curvature <= 0:
        return float(t[i])
    shift = 0.5 * (a - c) / curvature  # in grid steps, within [-0.5, 0.5] at a local minimum
    return float(t[i] + np.clip(shift, -1.0, 1.0) * (t[1] - t[0]))


def coat_takes_highlight(space: ParameterSpace, values: dict, fitted: list[str], loss_of: LossOf,
                         objective=None) -> dict | None:
    """The coat at full weight takes the sharpest highlight, then the base is searched again:
    the coat's roughness is chosen among :data:`COAT_ROUGHNESS_SHARES` of the base's roughness
    (the highlight the gloss stage gave the base) and, where the warm start switched on a weak
    coat sharper than the base, that coat's own roughness, with the base as the warm start left
    it (its specular level back to its default); then the base's roughness and colour are
    searched again (:func:`pbrfit.warm_start.warm_start`). None when the coat, its roughness or
    the base roughness is not fitted, or the coat already carries a sharper highlight than the
    base at more than half weight.

    The coat chooses first so that the base cannot keep the highlight: Suzanne's clear-coated
    paint (a 0.05 coat over a 0.5 base) had a warm start of a 0.25 coat at roughness 0 over a
    0.30 base; with the coat at the base's 0.30 and the base searched first, the base took the
    highlight (0.14), no sharper coat then paid, and the fit ended with the roughnesses
    swapped (a 0.08 base under a 0.52 coat; Cycles-judged 0.75 against a floor of 0.69). Coat
    first: a 0.10 coat over a 0.54 base, whose short fit's noise-free error was 0.0075 against
    the swapped start's 0.0111 (the truth's own: 0.0090)."""
    if not {"coat_weight", "coat_roughness", "roughness"} <= set(fitted):
        return None
    coat_lo, coat_hi = space.bounds_of("coat_weight")
    sharper_coat = values["coat_weight"] > coat_lo and values["coat_roughness"] < values["roughness"]
    if sharper_coat and values["coat_weight"] > coat_lo + 0.5 * (coat_hi - coat_lo):
        return None
    start = _stand_ins_reset(dict(values, coat_weight=coat_hi), fitted)
    lo = space.bounds_of("coat_roughness")[0]
    candidates = [max(lo, share * values["roughness"]) for share in COAT_ROUGHNESS_SHARES]
    if sharper_coat:
        candidates.append(values["coat_roughness"])
    losses = [_loss(loss_of, dict(start, coat_roughness=c)) for c in candidates]
    start = dict(start, coat_roughness=candidates[int(np.argmin(losses))])  # the first wins ties
    return warm_start(space, start, [n for n in ("base_color", "roughness") if n in fitted], loss_of, objective)


def film_branches(space: ParameterSpace, values: dict, fitted: list[str], loss_of: LossOf,
                  objective=None) -> list[dict]:
    """Starts on the other branches of the thin-film thickness: the :data:`FILM_BRANCHES`
    lowest local minima of the train loss over :data:`FILM_PROFILE_POINTS` thicknesses (the
    current one's neighbourhood excluded; the specular level at its default), each with the
    base's roughness and colour searched again. Empty when the film is not fitted or the warm
    start left it off."""
    name = "thin_film_thickness"
    if name not in fitted:
        return []
    lo, hi = space.bounds_of(name)
    if values[name] <= lo:
        return []
    values = _stand_ins_reset(values, fitted)
    t = np.linspace(lo + GRID_EDGE * (hi - lo), hi - GRID_EDGE * (hi - lo), FILM_PROFILE_POINTS)
    profile = np.array([_loss(loss_of, dict(values, **{name: float(v)})) for v in t])
    step = t[1] - t[0]
    minima = [i for i in range(len(t))
              if (i == 0 or profile[i] <= profile[i - 1]) and (i == len(t) - 1 or profile[i] <= profile[i + 1])
              and abs(t[i] - values[name]) > 1.5 * step]
    minima.sort(key=lambda i: profile[i])
    search = [n for n in ("base_color", "roughness") if n in fitted]
    return [warm_start(space, dict(values, **{name: _parabola_minimum(t, profile, i)}), search, loss_of, objective)
            for i in minima[:FILM_BRANCHES]]


def alternatives(space: ParameterSpace, values: dict, fitted: list[str], loss_of: LossOf,
                 objective=None) -> list[tuple[str, dict]]:
    """``[(name, starting material)]``: every hypothesis that applies to ``values`` (the
    layers stage's warm start) with the parameters ``fitted``."""
    found = []
    coat = coat_takes_highlight(space, values, fitted, loss_of, objective)
    if coat is not None:
        found.append(("coat takes the highlight", coat))
    for start in film_branches(space, values, fitted, loss_of, objective):
        found.append((f"thin film at {start['thin_film_thickness']:.0f} nm", start))
    return found


def simplified_in(schedule: list[dict]) -> dict[str, float]:
    """``{parameter: value}`` that pruning moved to their simplest value
    (:data:`pbrfit.layers.SIMPLEST`), from a fit's schedule."""
    return {n: v for s in schedule if s.get("stage") == "prune" for n, v in s.get("simplified", {}).items()}


def structure_summary(schedule: list[dict]) -> dict | None:
    """What material.json and the report say about the structure search, from a fit's
    schedule: ``{"tried": [{"hypothesis", "error", "chosen"}], "chosen", "pruned", "simplified",
    "tests", "rule"}`` (``pruned``: the layers switched off; ``simplified``: {parameter: value}
    moved to their simplest value, :data:`pbrfit.layers.SIMPLEST`; ``tests``: pruning's trials,
    ``pbrfit.layers._test_record``); None when the fit tried no other
    structure and pruned nothing."""
    stage = next((s for s in schedule if s.get("hypotheses")), {})
    tried = stage.get("hypotheses", [])
    estimator = next((s["structure_estimator"] for s in schedule if s.get("structure_estimator")), "raster")
    by = {"path": "the path tracer's (the part shades itself)"}.get(estimator, "the raster renderer's")
    simplified = simplified_in(schedule)
    pruned = [n for s in schedule if s.get("stage") == "prune" for n in s.get("parameters", []) if n not in simplified]
    tests = [t for s in schedule if s.get("stage") == "prune" for t in s.get("tests", [])]
    if not tried and not pruned and not simplified and not tests:
        return None
    return {"tried": tried, "chosen": next((t["hypothesis"] for t in tried if t["chosen"]), None),
            "pruned": pruned, "simplified": simplified, "tests": tests,
            "rule": (f"another structure replaces the warm start's only when it lowers the noise-free train "
                     f"error ({by}) by {LAYER_GAIN:.0%}; a layer is kept only when switching it off (and "
                     f"re-fitting) raises both that error and the train loss by {LAYER_GAIN:.0%} or more, the "
                     f"error by {LAYER_SIGNIFICANCE:g} standard errors of its pixels' differences too; so is a "
                     f"metallic between 0 and 1 and a specular level other than 0.5")}
