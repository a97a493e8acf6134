"""The material's optional layers: which parameters switch one on, which only matter while
it is on, and pruning the layers a fit does not need (Occam's razor).

A layer is "off" when its switch is at its lower bound (zero by default). With many
parameters free, a fit can explain noise or unmodelled transport with a little anisotropy
or sheen, or reach a look by the wrong structure (a rough base under a false coat for a
glossy plastic); :func:`prune_layers` switches each fitted layer off in turn, re-fits what the
layer may have been compensating for, and keeps it off when the train loss rises by less than
:data:`PRUNE_TOLERANCE`: each layer must buy a clear improvement.
"""

from __future__ import annotations

from typing import Callable

from .params import ParameterSpace

__all__ = ["LAYER_SWITCHES", "LAYER_OF", "LAYER_GAIN", "PRUNE_TOLERANCE", "parameters_in_use", "prune_layers"]

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

LossOf = Callable[[ParameterSpace, object], float]


def parameters_in_use(space: ParameterSpace, values: dict) -> list[str]:
    """Fitted parameters except layers switched off (at their lower bound) and the
    parameters that only matter while such a layer is on."""

    def off(layer):
        return layer is not None and values[layer] <= space.bounds_of(layer)[0]

    return [n for n in space.fit if not off(n if n in LAYER_SWITCHES else None) and not off(LAYER_OF.get(n))]


def prune_layers(space: ParameterSpace, values: dict, loss_of: LossOf,
                 refit: Callable[[dict], dict] | None = None) -> tuple[dict, list[str]]:
    """Switch off the fitted layers that do not pay for themselves.

    Args:
        space: the fit's parameter space (which parameters were fitted, their bounds).
        values: the material, canonical names.
        loss_of: ``loss_of(space, u)``, the train loss of a material (a fixed space and its
            initial vector), or a tuple of such criteria: a layer is then dropped when *any*
            of them rises by less than the tolerance (it must pay for itself on every one).
        refit: ``refit(values) -> values``: re-fits the parameters still in use once a layer
            is off (what the layer was compensating for); without it they stay as they are.

    Returns:
        (the values with the unneeded layers off, the switches turned off).
    """
    def loss(vals: dict) -> tuple[float, ...]:
        s = ParameterSpace(vals, [])
        out = loss_of(s, s.initial_vector())
        return tuple(float(v) for v in out) if isinstance(out, (tuple, list)) else (float(out),)

    values = dict(values)
    pruned = []
    current = loss(values)
    for n in LAYER_SWITCHES:
        if n not in space.fit or values[n] <= space.bounds_of(n)[0]:
            continue
        plain = dict(values, **{n: space.bounds_of(n)[0]})
        # the layer switched off with the rest re-fitted, else as it is: a re-fit's grid searches
        # can land worse than where the rest already was (a 0.02 coat on gold survived that way)
        for trial in ([refit(plain)] if refit is not None else []) + [plain]:
            trial_loss = loss(trial)
            if any(t <= c * (1 + PRUNE_TOLERANCE) for t, c in zip(trial_loss, current)):
                values, current = trial, tuple(min(c, t) for c, t in zip(current, trial_loss))
                pruned.append(n)
                break
    return values, pruned
