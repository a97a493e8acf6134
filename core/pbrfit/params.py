"""The material's parameters: canonical names, defaults, bounds and reparameterization.

Canonical names are Blender 5.0 Principled BSDF input sockets in snake_case. Values mean
exactly what they mean in Blender:

* colours (``base_color``, ``specular_tint``, ``coat_tint``, ``sheen_tint``) are linear
  Rec.709 RGB in [0, 1];
* ``roughness``/``coat_roughness``/``sheen_roughness`` are *perceptual*: GGX alpha = r**2;
* ``anisotropic_rotation`` is a fraction of a full turn (Blender's convention, 1.0 = 360 deg);
* ``subsurface_radius`` is per-channel mean free path multipliers, ``subsurface_scale`` is in
  scene units;
* ``thin_film_thickness`` is in nanometres.

The optimizer never sees these values directly: every parameter lives in an unconstrained
variable ``u`` that is mapped into its bounds by a smooth transform (a sigmoid "box",
``alpha`` for roughnesses so that alpha = r**2 is what varies smoothly, or a log-box for
positive scales). Bounds double as manufacturability ranges and are configurable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

import torch

from .errors import InputError

__all__ = [
    "ParameterSpec",
    "PARAMETERS",
    "PARAMETER_NAMES",
    "STAGES",
    "PRESETS",
    "DEFAULT_FIT",
    "default_material",
    "normalize_material",
    "check_material_ranges",
    "ParameterSpace",
    "to_unconstrained",
    "from_unconstrained",
]


@dataclass(frozen=True)
class ParameterSpec:
    """One Principled input.

    Attributes:
        name: canonical snake_case name.
        size: 1 for scalars, 3 for RGB colours and the subsurface radius.
        default: Blender 5.0's default value.
        lower, upper: the fit's bounds (inclusive), in the parameter's own units.
        transform: ``"box"`` (sigmoid into [lower, upper]), ``"alpha"`` (sigmoid on
            r**2, for perceptual roughness) or ``"logbox"`` (sigmoid on log value).
        stage: 1 colour, 2 gloss (roughness, anisotropy, specular), 3 layers (coat, sheen,
            thin film, subsurface). The staged schedule frees stages in this order.
        plausible: a (lower, upper) range outside which the result is flagged as
            physically implausible, or None.
        unit: human-readable unit for reports.
    """

    name: str
    size: int
    default: tuple[float, ...]
    lower: float
    upper: float
    transform: str = "box"
    stage: int = 1
    plausible: tuple[float, float] | None = None
    unit: str = ""


def _p(name, default, lower, upper, transform="box", stage=1, plausible=None, unit=""):
    default = tuple(float(v) for v in (default if isinstance(default, (tuple, list)) else (default,)))
    return ParameterSpec(name, len(default), default, lower, upper, transform, stage, plausible, unit)


PARAMETERS: dict[str, ParameterSpec] = {
    s.name: s
    for s in [
        _p("base_color", (0.8, 0.8, 0.8), 0.0, 1.0, stage=1, unit="linear RGB"),
        _p("metallic", 0.0, 0.0, 1.0, stage=1),
        _p("roughness", 0.5, 0.0, 1.0, "alpha", stage=2),
        _p("ior", 1.5, 1.01, 3.0, stage=2, plausible=(1.2, 2.5)),
        _p("specular_ior_level", 0.5, 0.0, 1.0, stage=2),
        _p("specular_tint", (1.0, 1.0, 1.0), 0.0, 1.0, stage=2, unit="linear RGB"),
        _p("anisotropic", 0.0, 0.0, 1.0, stage=2),
        _p("anisotropic_rotation", 0.0, 0.0, 1.0, stage=2, unit="turns"),
        _p("coat_weight", 0.0, 0.0, 1.0, stage=3),
        _p("coat_roughness", 0.03, 0.0, 1.0, "alpha", stage=3),
        _p("coat_ior", 1.5, 1.01, 3.0, stage=3, plausible=(1.3, 2.0)),
        _p("coat_tint", (1.0, 1.0, 1.0), 0.0, 1.0, stage=3, unit="linear RGB"),
        _p("sheen_weight", 0.0, 0.0, 1.0, stage=3),
        _p("sheen_roughness", 0.5, 0.0, 1.0, stage=3),
        _p("sheen_tint", (1.0, 1.0, 1.0), 0.0, 1.0, stage=3, unit="linear RGB"),
        _p("subsurface_weight", 0.0, 0.0, 1.0, stage=3),
        _p("subsurface_radius", (1.0, 0.2, 0.1), 1e-3, 10.0, "logbox", stage=3),
        _p("subsurface_scale", 0.05, 1e-4, 10.0, "logbox", stage=3, unit="scene units"),
        _p("transmission_weight", 0.0, 0.0, 1.0, stage=3),
        _p("thin_film_thickness", 0.0, 0.0, 1500.0, stage=3, unit="nm"),
        _p("thin_film_ior", 1.33, 1.01, 3.0, stage=3, plausible=(1.2, 2.6)),
    ]
}

PARAMETER_NAMES: tuple[str, ...] = tuple(PARAMETERS)

STAGES: dict[int, str] = {1: "colour", 2: "gloss", 3: "layers"}

#: Parameters fitted when the user names none: what a photo under fixed geometry can
#: tell apart. ``ior`` is left out because with reflection only it is redundant with
#: ``specular_ior_level``; ``transmission_weight`` needs the path backend. Subsurface is
#: decided by the path refinement's trial (:meth:`pbrfit.fit_run.FitRun.choose_subsurface`;
#: the raster backend cannot see it), its radius left at Blender's default (the scale sets
#: how far light travels; the radius only its colour, which the base colour trades with).
DEFAULT_FIT: tuple[str, ...] = (
    "base_color", "metallic", "roughness", "specular_ior_level", "anisotropic",
    "anisotropic_rotation", "coat_weight", "coat_roughness", "sheen_weight",
    "sheen_roughness", "sheen_tint", "thin_film_thickness", "subsurface_weight", "subsurface_scale",
)

#: Named parameter sets for common finishes (``[fit] preset = "..."`` in a job file).
PRESETS: dict[str, tuple[str, ...]] = {
    "plastic": ("base_color", "roughness", "specular_ior_level"),
    "metal": ("base_color", "metallic", "roughness", "specular_tint"),
    "brushed_metal": ("base_color", "metallic", "roughness", "specular_tint", "anisotropic",
                      "anisotropic_rotation"),
    "coated_paint": ("base_color", "metallic", "roughness", "coat_weight", "coat_roughness"),
    "fabric": ("base_color", "roughness", "sheen_weight", "sheen_roughness", "sheen_tint"),
    "thin_film": ("base_color", "roughness", "specular_ior_level", "thin_film_thickness"),
    "subsurface": ("base_color", "roughness", "subsurface_weight", "subsurface_scale"),
    "all": DEFAULT_FIT,
}


def default_material() -> dict[str, float | list[float]]:
    """Blender 5.0's Principled BSDF defaults under canonical names."""
    return {n: (list(s.default) if s.size > 1 else s.default[0]) for n, s in PARAMETERS.items()}


def normalize_material(values: Mapping[str, object], *, source: str = "material") -> dict:
    """Fill missing parameters with defaults and check names, sizes and finiteness.

    Raises:
        InputError: an unknown name, a wrong size, or a non-finite value.
    """
    out = default_material()
    for name, value in values.items():
        if name not in PARAMETERS:
            raise InputError(f"{source}: unknown parameter '{name}'; known: {', '.join(PARAMETER_NAMES)}")
        spec = PARAMETERS[name]
        vals = list(value) if isinstance(value, (list, tuple)) else [value]
        if spec.size == 3 and len(vals) == 1:
            vals = vals * 3
        if len(vals) != spec.size:
            raise InputError(f"{source}: '{name}' needs {spec.size} value(s), got {len(vals)}")
        try:
            vals = [float(v) for v in vals]
        except (TypeError, ValueError):
            raise InputError(f"{source}: '{name}' must be numeric, got {value!r}") from None
        if not all(math.isfinite(v) for v in vals):
            raise InputError(f"{source}: '{name}' is not finite ({value!r})")
        out[name] = vals if spec.size > 1 else vals[0]
    return out


def check_material_ranges(material: Mapping[str, object], *, source: str = "material") -> None:
    """Raise InputError when a value lies outside its parameter's range
    (:attr:`ParameterSpec.lower`, :attr:`ParameterSpec.upper`: what pbrfit renders, fits and
    exports), naming the parameter, the value and the range."""
    for name, value in material.items():
        spec = PARAMETERS[name]
        vals = list(value) if isinstance(value, (list, tuple)) else [value]
        bad = [float(v) for v in vals if not spec.lower <= float(v) <= spec.upper]
        if bad:
            unit = f" {spec.unit}" if spec.unit and spec.size == 1 else ""
            raise InputError(f"{source}: {name} = {_fmt(value)}{unit} is outside its range [{spec.lower:g}, "
                             f"{spec.upper:g}]; give a value in that range")


def _fmt(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{float(v):g}" for v in value) + "]"
    return f"{float(value):g}"


# --- transforms between the bounded value and the unconstrained variable -----------------

_EDGE = 1e-3  # fitted parameters start at least this far (normalized) from their bounds


def _to_unit(spec: ParameterSpec, lower: float, upper: float, v: torch.Tensor) -> torch.Tensor:
    if spec.transform == "alpha":
        lo, hi, v = lower**2, upper**2, v**2
    elif spec.transform == "logbox":
        lo, hi, v = math.log(lower), math.log(upper), torch.log(v.clamp_min(lower))
    else:
        lo, hi = lower, upper
    return (v - lo) / max(hi - lo, 1e-12)


def _from_unit(spec: ParameterSpec, lower: float, upper: float, t: torch.Tensor) -> torch.Tensor:
    if spec.transform == "alpha":
        alpha = lower**2 + (upper**2 - lower**2) * t
        # sqrt has an infinite slope at 0; t never reaches 0 through a sigmoid, and the
        # clamp keeps the backward pass finite at float precision.
        return alpha.clamp_min(1e-12).sqrt()
    if spec.transform == "logbox":
        return torch.exp(math.log(lower) + (math.log(upper) - math.log(lower)) * t)
    return lower + (upper - lower) * t


def to_unconstrained(name: str, value: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """The optimizer's variable for ``value`` (any shape) of parameter ``name`` within
    ``bounds``: the logit of the transformed value, kept :data:`_EDGE` inside the bounds.
    The inverse of :func:`from_unconstrained`; shared by scalars and texture maps."""
    spec = PARAMETERS[name]
    lo, hi = bounds
    t = _to_unit(spec, lo, hi, torch.as_tensor(value).clamp(lo, hi)).clamp(_EDGE, 1 - _EDGE)
    return torch.log(t) - torch.log1p(-t)


def from_unconstrained(name: str, u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """The value of parameter ``name`` for the optimizer's variable ``u`` (any shape)."""
    lo, hi = bounds
    return _from_unit(PARAMETERS[name], lo, hi, torch.sigmoid(u))


@dataclass
class ParameterSpace:
    """Maps a flat unconstrained vector to a full material. Vectors and materials are CPU
    tensors (a renderer moves the material to its device, :mod:`pbrfit.scene_renderer`).

    Args:
        initial: the starting material (canonical names; missing ones take defaults).
        fit: names of the parameters to optimize; the rest are frozen at ``initial``.
        bounds: optional ``{name: (lower, upper)}`` overrides of the default bounds.
    """

    initial: Mapping[str, object]
    fit: Iterable[str]
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self):
        self.initial = normalize_material(self.initial, source="initial material")
        fit = list(dict.fromkeys(self.fit))
        for n in fit:
            if n not in PARAMETERS:
                raise InputError(f"unknown parameter to fit '{n}'; known: {', '.join(PARAMETER_NAMES)}")
        self.fit = [n for n in PARAMETER_NAMES if n in fit]  # canonical order
        self._bounds = {}
        for n, s in PARAMETERS.items():
            lo, hi = self.bounds.get(n, (s.lower, s.upper))
            lo, hi = float(lo), float(hi)
            if not (s.lower <= lo < hi <= s.upper):
                raise InputError(
                    f"bounds for '{n}' must satisfy {s.lower} <= lower < upper <= {s.upper}, got ({lo}, {hi})")
            self._bounds[n] = (lo, hi)
        self.slices: dict[str, slice] = {}
        i = 0
        for n in self.fit:
            self.slices[n] = slice(i, i + PARAMETERS[n].size)
            i += PARAMETERS[n].size
        self.dim = i

    def bounds_of(self, name: str) -> tuple[float, float]:
        return self._bounds[name]

    def initial_vector(self, values: Mapping[str, object] | None = None) -> torch.Tensor:
        """Unconstrained vector for ``values`` (default: the initial material), float64.

        Values on or outside a bound are pulled inside so the sigmoid's slope is not zero.
        """
        values = normalize_material(values, source="material") if values is not None else self.initial
        parts = []
        for n in self.fit:
            spec = PARAMETERS[n]
            lo, hi = self._bounds[n]
            v = torch.as_tensor(values[n], dtype=torch.float64, device="cpu").reshape(spec.size)
            t = _to_unit(spec, lo, hi, v.clamp(lo, hi)).clamp(_EDGE, 1 - _EDGE)
            parts.append(torch.log(t) - torch.log1p(-t))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device="cpu")

    def material(self, u: torch.Tensor, dtype=torch.float32) -> dict[str, torch.Tensor]:
        """All parameters as tensors (shape (1,) or (3,)); fitted ones carry gradients."""
        out = {}
        for n, spec in PARAMETERS.items():
            if n in self.slices:
                lo, hi = self._bounds[n]
                out[n] = _from_unit(spec, lo, hi, torch.sigmoid(u[self.slices[n]])).to(dtype)
            else:
                out[n] = torch.as_tensor(self.initial[n], dtype=dtype, device=u.device).reshape(spec.size)
        return out

    def values(self, u: torch.Tensor) -> dict[str, float | list[float]]:
        """Plain Python values under canonical names (for JSON and exporters)."""
        with torch.no_grad():
            u = u.detach().to(torch.float64)
            m = self.material(u, dtype=torch.float64)
            # a sigmoid only approaches its bounds; report values within the start margin
            # of a bound as the bound itself (metallic 0, no coat, no film)
            for n, sl in self.slices.items():
                t = torch.sigmoid(u[sl])
                lo, hi = self._bounds[n]
                edge = torch.where(t <= 2 * _EDGE, lo, torch.where(t >= 1 - 2 * _EDGE, hi, torch.nan))
                if torch.isfinite(edge).any() and PARAMETERS[n].transform != "logbox":
                    m[n] = torch.where(torch.isfinite(edge), edge, m[n])
        return {n: (m[n].tolist() if PARAMETERS[n].size > 1 else float(m[n][0])) for n in PARAMETER_NAMES}

    def restricted(self, names: Iterable[str], values: Mapping[str, object]) -> ParameterSpace:
        """A space over ``names`` (a subset of :attr:`fit`) starting from ``values``."""
        return replace(self, initial=dict(values), fit=[n for n in self.fit if n in set(names)])
