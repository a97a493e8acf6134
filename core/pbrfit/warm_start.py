"""The staged schedule of the raster fit and the warm start of each newly freed parameter.

Stages (:func:`stage_plan`): parameters are freed by their stage in
:data:`pbrfit.params.PARAMETERS` (1 colour, 2 gloss: roughness/anisotropy/specular, 3
layers: coat/sheen/film/subsurface); each stage optimizes everything freed so far, with a
share of the iteration budget (25 %, 35 %, 40 %, renormalized over the stages present).

Warm start (:func:`warm_start`): base colour in closed form (the model is affine in it),
then a coordinate-wise 1-D grid search per scalar over its range: 5 points, or a fine grid
where the objective has many local minima (thin-film thickness is periodic in colour),
evenly spaced in the parameter's own unit (roughness in GGX alpha). The grid's end points
sit :data:`GRID_EDGE` inside the bounds: a parameter started on a bound starts where its
sigmoid is flat, and a gradient step cannot move it (a glossy plastic, roughness 0.15,
warm-started at roughness 0 stayed a mirror, depending on float-level noise in the
renders). The start value stays a candidate as it is. A parameter that only matters while its
layer is on (:data:`pbrfit.layers.LAYER_OF`: a coat's roughness) is not searched while that
layer is off.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .layers import LAYER_OF
from .params import PARAMETERS, STAGES, ParameterSpace

__all__ = ["FINE_GRID", "COARSE_GRID", "GRID_EDGE", "ROUGHNESS_GRID", "ROUGHNESS_LOW", "STAGE_SHARES",
           "stage_plan", "warm_start", "solve_base_color", "grid_values"]

#: grid points of the 1-D search for parameters whose objective has many local minima
FINE_GRID = {"thin_film_thickness": 31, "anisotropic_rotation": 9}
#: grid points for every other scalar
COARSE_GRID = 5
#: candidates of a roughness (evenly spaced in roughness, not in GGX alpha: see grid_values)
ROUGHNESS_GRID = 7
#: where the grid's end points sit inside the bounds, as a fraction of the (unit) range
GRID_EDGE = 0.02
#: where a roughness's lowest candidate sits, as a fraction of its range (see grid_values): where
#: the earlier grid, evenly spaced in GGX alpha, had it
ROUGHNESS_LOW = math.sqrt(GRID_EDGE)
#: each stage's share of the iteration budget
STAGE_SHARES = {1: 0.25, 2: 0.35, 3: 0.40}


def stage_plan(fit: list[str], staged: bool, iterations: int) -> list[tuple[str, list[str], int]]:
    """``[(stage name, parameters optimized, evaluations)]`` of the raster fit.

    Without ``staged`` one stage "all" gets every parameter and the whole budget; otherwise
    a stage is present when one of its parameters is fitted, and gets at least one
    evaluation.
    """
    if not staged:
        return [("all", list(fit), iterations)]
    stages = []
    for s in (1, 2, 3):
        names = [n for n in fit if PARAMETERS[n].stage <= s]
        if names and any(PARAMETERS[n].stage == s for n in fit):
            stages.append((STAGES[s], names, STAGE_SHARES[s]))
    total_share = sum(sh for _, _, sh in stages) or 1.0
    return [(name, names, max(1, round(iterations * sh / total_share))) for name, names, sh in stages]


#: the local model's second probe, as a share of the current base colour
LOCAL_PROBE = 0.9
#: the local colour solve's rounds at most (the first on the two probes, each further one a
#: render at the colour the round before solved for) and the step, in every channel, below
#: which it stops. On fixed paths a wax's red is far from affine in its colour: on Suzanne's
#: train views its radiance rose 2.2% from 0.88 to 0.90 and 0.4% from 0.92 to 0.98 (walks of
#: a near-1 albedo end at the 256-step cap, as in Cycles), so one step on the probes took the
#: red from 0.960 to 0.937 (truth 0.900) and four such steps to 0.907
LOCAL_ROUNDS, LOCAL_TOLERANCE = 6, 0.003
#: L-BFGS iterations of the local colour solve's ΔE2000 match (solve_base_color)
PERCEPTUAL_STEPS = 25


def solve_base_color(objective, values: dict, space: ParameterSpace, local: bool = False,
                     match: str = "de2000") -> list[float]:
    """Base colour matching the train pixels, in closed form.

    The raster renderer's Principled model is affine in ``base_color`` per channel whatever
    the other parameters (diffuse and subsurface scale with it, the metal Fresnel is affine
    in F0, specular, sheen and coat do not depend on it), so two renders, with base colour 0
    and 1, give each pixel's radiance as ``A * base_color + B``, and the colour minimizing the
    squared error is ``sum(A * (ref - B)) / sum(A * A)``.

    ``local``: for the path tracer, whose interreflections and subsurface walks are not affine
    in the colour, the two renders are at the current colour and :data:`LOCAL_PROBE` of it
    (on fixed paths, so both renders share their noise), further rounds render the colour
    solved for and solve again on each channel's line through its two points that bracket the
    references (up to :data:`LOCAL_ROUNDS`, until no channel moves :data:`LOCAL_TOLERANCE`),
    and ``match`` says which colour of each round's affine model:

    * ``"de2000"``: the least mean ΔE2000 against the references, as the path refinement's
      checks measure (:data:`PERCEPTUAL_STEPS` of L-BFGS from the ratio ``sum(ref - B) /
      sum(A)``). Sums are ruled by a few pixels: on Suzanne under forest the sun's glints, a
      hundredth of the pixels, carry a fifth of gold's radiance, and where they land on the
      check's paths decided the ratio: at the true gold it read red 2.4% dark, ΔE2000 within
      0.1% (brushed aluminium 2% -> 0.1%; least squares, whose ``sum(A * A)`` the paths'
      variance inflates, read 12%).
    * ``"ratio"``: that ratio itself, which the subsurface trial uses. (Each weight's colour
      solved for the trial's own criterion, the relative squared error, was tried: fair to
      every weight, it read the wax on a sphere only 1.2% better with full subsurface than
      without, below the layer gain, where the ratio's colours read 3.5%; so it was not kept.)

    Args:
        objective: an :class:`pbrfit.objective.Objective` (its renderer, views, references).
    """
    lo, hi = space.bounds_of("base_color")
    if local and match not in ("de2000", "ratio"):
        raise ValueError(f"match: expected 'de2000' or 'ratio', got {match!r}")
    if local:
        probes = [[max(float(c), 1e-3) for c in values["base_color"]]]
        probes.append([LOCAL_PROBE * c for c in probes[0]])
    else:
        probes = [[0.0] * 3, [1.0] * 3]
    current = torch.tensor([float(c) for c in values["base_color"]], dtype=torch.float64)

    def render(colour) -> dict:
        s = ParameterSpace(dict(values, base_color=[float(c) for c in colour]), [])
        with torch.no_grad():
            m = s.material(s.initial_vector())
        images = objective.renders(m)
        return {vi: im.double().cpu() / objective.whites[vi] for vi, im in zip(objective.view_ids, images)}

    def solve(models: list[tuple]) -> torch.Tensor:
        num = torch.zeros(3, dtype=torch.float64)
        den = torch.zeros(3, dtype=torch.float64)
        for a, b, ref in models:
            num += (ref - b if local else a * (ref - b)).sum(0)
            den += (a if local else a * a).sum(0)
        colour = torch.where(den > 1e-30, num / den.clamp_min(1e-30), current).clamp(lo, hi)
        if local and match == "de2000":
            colour = _perceptual_colour(models, colour, (lo, hi))
        return colour.clamp(lo, hi)

    views = objective.view_ids
    refs = {vi: objective.refs[vi].double().cpu() for vi in views}
    points = []  # (colour, renders, each channel's summed radiance minus the references')

    def add(colour: torch.Tensor) -> None:
        rendered = render(colour)
        points.append((colour, rendered, sum((rendered[vi] - refs[vi]).sum(0) for vi in views)))

    def models(pairs: list[tuple]) -> list[tuple]:
        """Per view ``(A, B, reference)``: each channel's line through its pair of points."""
        out = []
        for vi in views:
            a, b = torch.empty_like(refs[vi]), torch.empty_like(refs[vi])
            for k, (p, q) in enumerate(pairs):
                a[:, k] = (q[1][vi][:, k] - p[1][vi][:, k]) / (q[0][k] - p[0][k])
                b[:, k] = q[1][vi][:, k] - a[:, k] * q[0][k]
            out.append((a, b, refs[vi]))
        return out

    for c in probes:
        add(torch.tensor(c, dtype=torch.float64))
    colour = solve(models([(points[0], points[1])] * 3))
    if not local:
        return colour.tolist()
    # Further rounds while a channel still moves: each channel's radiance depends on its own
    # colour only, monotonically (fixed paths), so each channel's line goes through the two
    # points that bracket its references (regula falsi) once there are such, else through its
    # two latest; a bracket end kept twice is bisected instead (_Bracket)
    brackets = [_Bracket() for _ in range(3)]
    pairs = [(points[0], points[1])] * 3
    for _ in range(LOCAL_ROUNDS - 1):
        moving = [abs(float(colour[k] - points[-1][0][k])) >= LOCAL_TOLERANCE for k in range(3)]
        if not any(moving):
            break
        add(colour)
        bisect = {}
        for k in (k for k in range(3) if moving[k]):  # a settled channel keeps its line
            step = brackets[k].update(points, k)
            if step is not None:
                pairs[k], mid = step
                if mid is not None:
                    bisect[k] = mid
            elif abs(float(points[-1][0][k] - points[-2][0][k])) > 1e-9:
                pairs[k] = (points[-2], points[-1])
        colour = solve(models(pairs))
        for k, mid in bisect.items():
            colour[k] = mid
    return colour.tolist()


class _Bracket:
    """One channel's bracket in the local colour solve's further rounds: of the points rendered
    (``(colour, renders, each channel's summed radiance minus the references')``), the one of
    highest colour below the references and the one of lowest colour above them, and how many
    new points in a row each end has outlived. An end that outlives two is the regula falsi's
    slow side (Illinois): the bracket is bisected instead. A new point that lands outside the
    bracket (the ΔE2000 match's colour need not lie between the ends) replaces neither end, so
    both have outlived it."""

    def __init__(self):
        self.ends: tuple | None = None
        self.kept = [0, 0]

    def update(self, points: list[tuple], k: int) -> tuple[tuple, float | None] | None:
        """``((low end, high end), the midpoint's colour when bisecting else None)`` after the
        newest of ``points``, for channel ``k``; None while no two points bracket the references."""
        below = [p for p in points if p[2][k] < 0]
        above = [p for p in points if p[2][k] >= 0]
        if not (below and above):
            return None
        ends = (max(below, key=lambda p: p[0][k]), min(above, key=lambda p: p[0][k]))
        if self.ends is None:  # the bracket's first round: an end other than the newest point outlived it
            self.kept = [int(end is not points[-1]) for end in ends]
        else:
            self.kept = [kept + 1 if end is old else 0 for kept, end, old in zip(self.kept, ends, self.ends)]
        self.ends = ends
        if max(self.kept) < 2:
            return ends, None
        self.kept = [0, 0]
        return ends, 0.5 * float(ends[0][0][k] + ends[1][0][k])


def _perceptual_colour(models: list[tuple], start: torch.Tensor, bounds: tuple) -> torch.Tensor:
    """The colour, within ``bounds``, whose per-pixel affine models ``(A, B, reference)`` (one
    per view) have the least mean ΔE2000 against the references (each view's mean, averaged
    as the checks average them); from ``start``, :data:`PERCEPTUAL_STEPS` of L-BFGS on the
    colour in logit space (the bounds are never crossed). ``start`` when it does not improve."""
    from .losses import de2000

    lo, hi = (float(b) for b in bounds)
    span = hi - lo

    def mean_de(colour: torch.Tensor) -> torch.Tensor:
        return sum(de2000((a * colour + b).clamp_min(0.0), ref) for a, b, ref in models) / len(models)

    t = ((start - lo) / span).clamp(1e-4, 1 - 1e-4)
    z = torch.log(t / (1 - t)).requires_grad_(True)
    opt = torch.optim.LBFGS([z], lr=1.0, max_iter=PERCEPTUAL_STEPS, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = mean_de(lo + span * torch.sigmoid(z))
        value.backward()
        return value

    with torch.no_grad():
        before = float(mean_de(start))
    opt.step(closure)
    with torch.no_grad():
        colour = lo + span * torch.sigmoid(z)
        after = float(mean_de(colour))
    return colour.detach() if after < before else start


def grid_values(name: str, lo: float, hi: float) -> list[float]:
    """The 1-D search's candidates for parameter ``name`` within [lo, hi]: evenly spaced in
    its unit, end points :data:`GRID_EDGE` inside the bounds. Roughnesses get
    :data:`ROUGHNESS_GRID` points evenly spaced in roughness from :data:`ROUGHNESS_LOW` of the
    range: five evenly spaced in GGX alpha (0.14, 0.5, 0.71, 0.87, 0.99) left a plateau between
    0.14 and 0.5 where L-BFGS stalled (a roughness of 0.3 was fitted as 0.14), and a candidate
    nearer 0 lets the raster estimator's noise pick a mirror (a near-mirror's few samples read
    better than a 0.15 lobe on a small case); the optimizer can still go below."""
    roughness = PARAMETERS[name].transform == "alpha"
    t = np.linspace(0.0, 1.0, FINE_GRID.get(name, ROUGHNESS_GRID if roughness else COARSE_GRID))
    t[0], t[-1] = ROUGHNESS_LOW if roughness else GRID_EDGE, 1.0 - GRID_EDGE
    if roughness:
        t = np.linspace(t[0], t[-1], len(t))
    return [float(v) for v in lo + (hi - lo) * t]


def warm_start(space: ParameterSpace, values: dict, names: list[str],
               loss_of: Callable[[ParameterSpace, torch.Tensor], float], objective=None) -> dict:
    """Warm start for newly freed parameters ``names``: base colour in closed form (when
    ``objective`` is given), then a coordinate-wise 1-D grid search for each scalar.

    Args:
        space: the fit's parameter space (bounds).
        values: the current material; a copy is returned.
        loss_of: ``loss_of(space, u)``, the train loss of a material.
    """
    values = dict(values)
    if "base_color" in names and objective is not None:
        values["base_color"] = solve_base_color(objective, values, space)
    for n in names:
        spec = PARAMETERS[n]
        if spec.size != 1:
            continue
        layer = LAYER_OF.get(n)
        if layer is not None and values[layer] <= space.bounds_of(layer)[0]:
            # its layer is off (its own search, just before, kept it off): every candidate
            # renders the same, so the search would cost its renders for nothing, or pick a
            # value by float noise (an anisotropy's rotation with no anisotropy)
            continue
        best, best_v = math.inf, values[n]
        candidates = [values[n]] + grid_values(n, *space.bounds_of(n))
        for v in candidates:
            trial = dict(values)
            trial[n] = v
            s = ParameterSpace(trial, [])
            loss = float(loss_of(s, s.initial_vector()))
            if loss < best - 1e-9:
                best, best_v = loss, v
        values[n] = best_v
    return values
