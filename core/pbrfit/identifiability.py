"""Which fitted parameters these photos determine, and which trade against each other.

A low ΔE2000 does not mean every parameter is right: a rough plastic looks the same with a
little more roughness and a little less specular level, a base under a strong coat hardly
shows its own roughness. A designer reads the parameters ("is there a clear coat?") and a
material library stores them, so each fitted parameter gets a *tolerance*: how far it can
move, with the other fitted parameters free to compensate, before the train renders change
visibly.

Method (a local, linearised analysis at the fitted material, on the fit's raster renderer and
its train pixels): the CIELAB colour of each train pixel is differentiated by forward
differences in each fitted parameter component, in the parameter's own units, giving J
(N pixel-channels x D). ``H = J^T J / N`` is the mean squared CIELAB change per unit squared.
Moving component i by d while the others compensate optimally changes the renders by an RMS
of ``|d| / sqrt((H^-1)_ii)`` CIELAB units, so the change that stays below :data:`VISIBLE`
(one CIELAB unit RMS, about a just-noticeable difference) is::

    tolerance_i = VISIBLE * sqrt((H^-1)_ii)

A parameter whose tolerance exceeds :data:`UNDETERMINED_SHARE` of its range is *not
determined by these photos*; the component it trades against most is the one with the
largest ``|correlation|`` in ``H^-1``. CIELAB differences (ΔE 1976) stand in for ΔE2000,
which is not differentiable at zero difference; they agree to first order in lightness and
differ by a factor of at most ~2-3 in saturated chroma.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .color import linear_to_lab, smooth_floor
from .params import PARAMETERS, ParameterSpace

__all__ = ["VISIBLE", "UNDETERMINED_SHARE", "STEP_SHARE", "NOT_ANALYSED", "analyse", "findings"]

#: RMS CIELAB change that counts as visible
VISIBLE = 1.0
#: a tolerance above this share of the parameter's range: not determined by these photos
UNDETERMINED_SHARE = 0.1
#: forward-difference step, as a share of the parameter's range
STEP_SHARE = 0.01
#: parameters the raster renderer does not render as the path tracer does (subsurface is a
#: diffuse share there, transmission is not rendered): left out of the analysis (the path
#: refinement's scale search measures the subsurface scale's, :meth:`pbrfit.fit_run.FitRun.subsurface_scale_search`)
NOT_ANALYSED = ("subsurface_weight", "subsurface_radius", "subsurface_scale", "transmission_weight")


def _components(names: list[str]) -> list[tuple[str, int]]:
    return [(n, k) for n in names for k in range(PARAMETERS[n].size)]


def _label(name: str, k: int) -> str:
    return name if PARAMETERS[name].size == 1 else f"{name}[{k}]"


def analyse(objective, values: dict, names: list[str], bounds: dict | None = None,
            check: Callable[[], None] | None = None, maps: dict | None = None) -> dict:
    """The tolerance of each fitted parameter at ``values``.

    Args:
        objective: the fit's raster :class:`pbrfit.objective.Objective` (renderer, train
            views, their loss pixels and whites).
        values: the fitted material (canonical names).
        names: the fitted parameters in use (layers switched off left out); those in
            :data:`NOT_ANALYSED` are skipped.
        bounds: the fit's bounds overrides.
        check: called before each render (raises to cancel).
        maps: {parameter: (H, W, C) tensor} texture maps rendered with every trial (their
            parameters are not analysed).

    Returns:
        ``{name: {"tolerance": t, "range": r, "determined": bool, "trades_with": other or
        None, "correlation": c}}``, the tolerance in the parameter's own units (the largest
        over a colour's components), ``inf`` where the renders do not depend on it.
    """
    names = [n for n in names if n not in NOT_ANALYSED and n not in (maps or {})]
    comps = _components(names)
    if not comps:
        return {}
    space = ParameterSpace(values, names, bounds or {})

    def lab(vals: dict) -> torch.Tensor:
        s = ParameterSpace(vals, [])
        m = dict(s.material(s.initial_vector()), **(maps or {}))
        if check is not None:
            check()
        renders = objective.renders(m)  # the views on the objective's threads
        with torch.no_grad():
            return torch.cat([linear_to_lab(smooth_floor((pred / objective.whites[vi]).double())).reshape(-1).cpu()
                              for vi, pred in zip(objective.view_ids, renders)])

    base = lab(values)
    columns = []
    for name, k in comps:
        lo, hi = space.bounds_of(name)
        v = np.array(values[name], dtype=np.float64).reshape(-1)
        h = STEP_SHARE * (hi - lo)
        if v[k] + h > hi:  # step away from the nearer bound
            h = -h
        v[k] += h
        moved = dict(values, **{name: v.tolist() if PARAMETERS[name].size > 1 else float(v[0])})
        columns.append((lab(moved) - base) / h)
    jac = torch.stack(columns, 1)  # (N, D) CIELAB per unit
    n = jac.shape[0]
    hess = (jac.T @ jac / max(n, 1)).numpy()
    scale = np.sqrt(np.clip(np.diag(hess), 1e-300, None))
    # correlation form: well conditioned whatever the units; a component the renders do not
    # depend on has a zero row and an infinite tolerance
    flat = np.diag(hess) <= 1e-18 * max(float(np.max(np.diag(hess))), 1e-300)
    corr = hess / np.outer(scale, scale)
    corr[flat, :] = 0.0
    corr[:, flat] = 0.0
    corr[flat, flat] = 1.0
    inv = np.linalg.pinv(corr, rcond=1e-12, hermitian=True)
    var = np.diag(inv) / (scale * scale)
    tol = VISIBLE * np.sqrt(np.clip(var, 0.0, None))
    tol[flat] = math.inf
    dvar = np.sqrt(np.clip(np.diag(inv), 1e-300, None))
    post_corr = inv / np.outer(dvar, dvar)  # correlation of the estimates: < 0 when they trade off
    np.fill_diagonal(post_corr, 0.0)

    out: dict[str, dict] = {}
    for i, (name, _) in enumerate(comps):
        lo, hi = space.bounds_of(name)
        j = int(np.argmax(np.abs(post_corr[i]))) if len(comps) > 1 else i
        entry = {"tolerance": float(tol[i]), "range": hi - lo,
                 "trades_with": _label(*comps[j]) if j != i and abs(post_corr[i, j]) > 0.5 else None,
                 "correlation": float(post_corr[i, j]) if j != i else 0.0}
        if name not in out or entry["tolerance"] > out[name]["tolerance"]:
            out[name] = entry
    for entry in out.values():
        entry["determined"] = bool(entry["tolerance"] <= UNDETERMINED_SHARE * entry["range"])
    return out


def findings(result: dict, held: dict | None = None) -> list[dict]:
    """Notes (``{about, severity, message}``) for the parameters these photos do not determine.

    ``held``: ``{name: value}`` of parameters the structure search moved to their simplest
    value and held there (:attr:`pbrfit.fit_run.FitRun.simplified`): their note says so, as
    the fit has already done what it would otherwise advise."""
    notes, held = [], held or {}
    for name, e in result.items():
        if e["determined"]:
            continue
        if e.get("method") == "path search":  # FitRun.subsurface_scale_search
            notes.append({"about": name, "severity": "warning",
                          "message": "not determined by these photos: half or twice its value, with the base colour "
                                     "re-solved, renders as well within the path tracer's noise; treat its value "
                                     "with care, or add views of thin parts and shadow edges, or set it and freeze it "
                                     "(--freeze)"})
            continue
        tol = "any value in its range" if not math.isfinite(e["tolerance"]) else f"±{e['tolerance']:.2g}"
        trade = (f", trading against {e['trades_with']} (correlation {e['correlation']:+.2f})"
                 if e.get("trades_with") else "")
        unclear = (f"not determined by these photos: {tol} changes the train renders by less than {VISIBLE:g} ΔE "
                   f"on average{trade}")
        if name in held:
            advice = (f"held at its simplest value, {held[name]:g}, as no other paid for itself; add views at "
                      "grazing angles or under another lighting to have it fitted")
        else:
            advice = ("treat its value with care, or add views at grazing angles or under another lighting, or "
                      "freeze it (--freeze)")
        notes.append({"about": name, "severity": "warning", "message": f"{unclear}; {advice}"})
    return notes
