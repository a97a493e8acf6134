"""The material's optional layers: which parameters switch one on, which only matter while
it is on, and pruning the layers a fit does not need (Occam's razor).

A layer is "off" when its switch is at its lower bound (zero by default). With many
parameters free, a fit can explain noise or unmodelled transport with a little anisotropy
or sheen, or reach a look by the wrong structure (a rough base under a false coat for a
glossy plastic); :func:`prune_layers` switches each fitted layer off in turn, re-fits what the
layer may have been compensating for, and keeps it off when the train loss rises by less than
:data:`PRUNE_TOLERANCE` over the material as kept so far (the layers before it already
dropped): each layer must buy a clear improvement. A criterion given with its per-pixel terms
(:class:`Evidence`, the fit's noise-free structure error) must moreover improve by
:data:`LAYER_SIGNIFICANCE` standard errors of the paired differences: a few % on one set of
pixels is not evidence when the pixels drawn alone move it that much. Parameters with a simplest
value (:data:`SIMPLEST`: a part is metal or not; Blender's default specular level) are then
moved there under the same rule: where the photos do not tell a 0.98 metallic from 1, or a
specular level of 0.98 with roughness 0.72 from 0.5 with 0.6 (both seen on the benchmark), the
simpler explanation is the one reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .objective import paired_margin
from .params import ParameterSpace

__all__ = ["LAYER_SWITCHES", "LAYER_OF", "LAYER_GAIN", "PRUNE_TOLERANCE", "LAYER_SIGNIFICANCE", "SIMPLEST",
           "Evidence", "pays", "parameters_in_use", "prune_layers", "reported_margin"]

#: parameters that switch a whole layer or effect on; their lower bound means "not there"
LAYER_SWITCHES = ("anisotropic", "coat_weight", "sheen_weight", "thin_film_thickness", "subsurface_weight",
                  "transmission_weight")
#: parameters that only matter while their layer is on
LAYER_OF = {"anisotropic_rotation": "anisotropic", "coat_roughness": "coat_weight", "coat_ior": "coat_weight",
            "coat_tint": "coat_weight", "sheen_roughness": "sheen_weight", "sheen_tint": "sheen_weight",
            "thin_film_ior": "thin_film_thickness", "subsurface_radius": "subsurface_weight",
            "subsurface_scale": "subsurface_weight"}
#: the share of the train loss a layer must buy: one is dropped when removing it (and re-fitting)
#: raises the loss by less, and another structure (:mod:`pbrfit.hypotheses`) must lower it by more
LAYER_GAIN = 0.02
PRUNE_TOLERANCE = LAYER_GAIN
#: how many standard errors of the paired per-pixel differences (:class:`Evidence`) a layer must
#: buy besides its share. Measured on Suzanne with the path tracer's checks (1024 pixels): a false
#: 0.02 coat on the glossy plastic bought 4.1% of the error, 1.3 standard errors (the pixels drawn
#: alone move such a comparison by ~4%); the true layers, switched off at the truth and the rest
#: re-fitted, cost 6 (clear-coated paint's coat) to 10 (fabric's sheen) standard errors
LAYER_SIGNIFICANCE = 2.0
#: parameters with simplest values (the nearest is tried), pruned as layers are, after them
SIMPLEST = {"metallic": (0.0, 1.0), "specular_ior_level": (0.5,)}


@dataclass(frozen=True)
class Evidence:
    """A pruning criterion with what it is the mean of: ``value`` (lower is better) and
    ``terms``, its per-pixel (or per-block) terms, paired with another material's terms on the
    same renderer, pixels and samples (:func:`pbrfit.objective.unbiased_relative_errors`), so
    that their differences tell how sure a comparison is (:func:`pbrfit.objective.paired_margin`)."""

    value: float
    terms: torch.Tensor

    def __float__(self) -> float:
        return self.value


Criterion = float | Evidence
LossOf = Callable[[ParameterSpace, object], Criterion | tuple]


def _margin(r: Criterion, s: Criterion) -> float | None:
    """How many standard errors the richer material's criterion ``r`` is better than the simpler
    one's ``s`` (:func:`pbrfit.objective.paired_margin`); None unless both give their terms."""
    return paired_margin(s.terms, r.terms) if isinstance(r, Evidence) and isinstance(s, Evidence) else None


def reported_margin(richer: Criterion, simpler: Criterion) -> float | None:
    """:func:`_margin` as material.json records it: None without terms, or where it is infinite
    (every paired difference the same; JSON has no infinities)."""
    margin = _margin(richer, simpler)
    return margin if margin is not None and math.isfinite(margin) else None


def _test_record(name: str, value: float, refit: bool, richer: tuple, simpler: tuple, dropped: bool) -> dict:
    """One trial of :func:`prune_layers` for material.json: what ``name`` was moved to, whether the
    rest was re-fitted, each criterion's relative rise, the evidence's margin in standard
    errors (None without terms), and whether the trial switched it off."""
    margin = next((m for m in map(reported_margin, richer, simpler) if m is not None), None)
    return {"parameter": name, "to": value, "refit": refit,
            "rises": [float(s) / float(r) - 1.0 if float(r) else None for r, s in zip(richer, simpler)],
            "margin": margin, "dropped": dropped}


def pays(richer: tuple, simpler: tuple) -> bool:
    """Whether the richer material (a layer on, a parameter off its simplest value) buys a clear
    improvement over the simpler one on every criterion (criteria in the same order): the
    simpler one's must be higher by more than :data:`PRUNE_TOLERANCE` and, where both give
    their terms (:class:`Evidence`), by :data:`LAYER_SIGNIFICANCE` standard errors."""
    for r, s in zip(richer, simpler):
        if float(s) <= float(r) * (1 + PRUNE_TOLERANCE):
            return False
        margin = _margin(r, s)
        if margin is not None and margin < LAYER_SIGNIFICANCE:
            return False
    return True


def parameters_in_use(space: ParameterSpace, values: dict) -> list[str]:
    """Fitted parameters except layers switched off (at their lower bound) and the
    parameters that only matter while such a layer is on."""

    def off(layer):
        return layer is not None and values[layer] <= space.bounds_of(layer)[0]

    return [n for n in space.fit if not off(n if n in LAYER_SWITCHES else None) and not off(LAYER_OF.get(n))]


def prune_layers(space: ParameterSpace, values: dict, loss_of: LossOf,
                 refit: Callable[..., dict] | None = None, simplify: bool = True,
                 log: list | None = None) -> tuple[dict, list[str]]:
    """Switch off the fitted layers that do not pay for themselves, then move the parameters
    with a simplest value (:data:`SIMPLEST`) there where the rest does not pay for itself.

    Args:
        space: the fit's parameter space (which parameters were fitted, their bounds).
        values: the material, canonical names.
        loss_of: ``loss_of(space, u)``, the train loss of a material (a fixed space and its
            initial vector), or a tuple of such criteria, each a number or an
            :class:`Evidence`: a layer is dropped unless it :func:`pays` on every one.
        refit: ``refit(values, hold=()) -> values``: re-fits the parameters still in use
            once a layer is off (what the layer was compensating for), except those in
            ``hold``; without it they stay as they are.
        simplify: also try the parameters with a simplest value (:data:`SIMPLEST`); False
            tests only the layers.
        log: a list each trial's record is appended to (:func:`_test_record`).

    Returns:
        (the values with the unneeded layers off, the switches turned off and the parameters
        moved to their simplest value).
    """
    def loss(vals: dict) -> tuple[Criterion, ...]:
        s = ParameterSpace(vals, [])
        out = loss_of(s, s.initial_vector())
        return tuple(v if isinstance(v, Evidence) else float(v)
                     for v in (out if isinstance(out, (tuple, list)) else (out,)))

    values = dict(values)
    pruned = []
    current = loss(values)
    trials = [(n, space.bounds_of(n)[0]) for n in LAYER_SWITCHES]
    trials += [(n, None) for n in SIMPLEST] if simplify else []
    held: list[str] = []  # what is already simplified stays so while the rest is re-fitted
    for n, simplest in trials:
        if n not in space.fit:
            continue
        if simplest is None:  # the nearest simplest value within the bounds
            if n not in parameters_in_use(space, values):
                continue
            lo, hi = space.bounds_of(n)
            simplest = min((min(max(v, lo), hi) for v in SIMPLEST[n]), key=lambda v: abs(v - values[n]))
        elif values[n] <= simplest:
            continue
        if values[n] == simplest:
            held.append(n)  # already simplest: a re-fit for another trial must not move it
            continue
        plain = dict(values, **{n: simplest})
        # the rest re-fitted, else as it is: a re-fit's grid searches can land worse than where
        # the rest already was (a 0.02 coat on gold survived that way)
        trials_of_n = [(refit(plain, hold=(n, *held)), True)] if refit is not None else []
        for trial, refitted in trials_of_n + [(plain, False)]:
            trial_loss = loss(trial)
            dropped = not pays(current, trial_loss)
            if log is not None:
                log.append(_test_record(n, simplest, refitted, current, trial_loss, dropped))
            if dropped:
                # the next layer is judged against the material kept, not the best value each
                # criterion ever had: a coat dropped on one criterion while the train loss rose
                # 4% left that loss as the bar, which kept a false 1470 nm film on brushed
                # aluminium (switching it off cost 7% against the coat's loss, 0% against its own)
                values, current = trial, trial_loss
                pruned.append(n)
                held.append(n)
                break
    return values, pruned
