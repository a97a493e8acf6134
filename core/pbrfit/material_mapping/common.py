"""What every target's mapping shares: the result type, the loss notes, the facts about a
Blender material that decide them, and the input tables both directions are built from.

An *input table* lists a target's inputs in the order they are written, each with the
canonical parameter it carries unchanged, or None where the value is converted or fixed
(the target's module computes those, in both directions, next to its table). Writing fills
the table from the material; reading takes each carried parameter from the first input
listed for it (later ones are copies, e.g. OpenPBR's ``transmission_color = base_color``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..params import PARAMETER_NAMES, PARAMETERS
from .fresnel import F0_MAX, effective_ior, f0_from_ior

__all__ = [
    "WRITERS",
    "CYCLES_ANISOTROPY_SCALE",
    "Loss",
    "TargetMapping",
    "check_writer",
    "InputTable",
    "write_inputs",
    "read_carried",
    "color",
    "is_white",
    "normalized_radius",
    "turns",
    "LossList",
    "MaterialFacts",
]

#: Whose conventions a target's inputs follow, for reading them back: ``"pbrfit"`` (pbrfit's
#: own mapping, which is also each target's documented meaning: the reading for any writer
#: but Blender) or ``"blender"`` (Blender 5.0's USD exporter).
WRITERS: tuple[str, ...] = ("pbrfit", "blender")

#: Cycles forms the GGX roughness aspect ratio from ``sqrt(1 - 0.9 * anisotropic)``.
CYCLES_ANISOTROPY_SCALE = 0.9
_EPS = 1e-6

Color = tuple[float, float, float]
#: (target input name, canonical parameter carried unchanged or None), in writing order.
InputTable = tuple[tuple[str, "str | None"], ...]


@dataclass(frozen=True)
class Loss:
    """A canonical parameter a target drops or approximates.

    Attributes:
        target: the target's name (one of :data:`pbrfit.material_mapping.TARGETS`).
        param: the canonical parameter.
        kind: ``"dropped"`` (not expressible at all) or ``"approximated"`` (written, but the
            target's model differs from Blender's in the way ``reason`` says).
        reason: one line.
    """

    target: str
    param: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.target}: {self.param} {self.kind}: {self.reason}"


@dataclass
class TargetMapping:
    """One target's inputs for a material.

    Attributes:
        target: the target's name.
        inputs: input name -> value (``float``, ``bool``, ``int``, or a 3-tuple colour in
            linear Rec.709).
        losses: what the target drops or approximates, in canonical parameter order.
        tangent_rotation: OpenPBR only: when not None, ``geometry_tangent`` must be the world
            tangent rotated by this many degrees about the world normal with MaterialX's
            ``rotate3d`` (then normalized); see :mod:`pbrfit.material_mapping.openpbr`.
    """

    target: str
    inputs: dict[str, object]
    losses: list[Loss] = field(default_factory=list)
    tangent_rotation: float | None = None

    @property
    def dropped(self) -> list[str]:
        """Canonical names the target cannot carry for this material."""
        return [l.param for l in self.losses if l.kind == "dropped"]

    @property
    def approximated(self) -> list[str]:
        """Canonical names the target carries only approximately for this material."""
        return [l.param for l in self.losses if l.kind == "approximated"]

    def messages(self) -> list[str]:
        """One line per loss, ``"target: param kind: reason"``."""
        return [str(l) for l in self.losses]

    def agrees_with(self, inputs: Mapping[str, object], tangent_rotation: float | None = None, *,
                    rel_tol: float = 1e-6, abs_tol: float = 1e-6) -> bool:
        """Whether ``inputs`` (and the tangent rotation in degrees) are exactly these, up to
        the precision they were stored with (USD keeps 32-bit floats): the same input names
        and every value within ``rel_tol`` / ``abs_tol``."""
        if set(inputs) != set(self.inputs):
            return False
        if (tangent_rotation is None) != (self.tangent_rotation is None):
            return False
        pairs = [(self.inputs[n], inputs[n]) for n in self.inputs]
        if tangent_rotation is not None:
            pairs.append((self.tangent_rotation, tangent_rotation))
        for expected, found in pairs:
            a, b = _numbers(expected), _numbers(found)
            if a is None or b is None or len(a) != len(b):
                return False
            if any(abs(x - y) > max(rel_tol * max(abs(x), abs(y)), abs_tol) for x, y in zip(a, b)):
                return False
        return True


def _numbers(value) -> list[float] | None:
    """A scalar or vector value as a list of floats, or None when it is not numeric."""
    try:
        return [float(v) for v in value] if hasattr(value, "__len__") else [float(value)]
    except (TypeError, ValueError):
        return None


def check_writer(writer: str) -> None:
    """Raises ValueError unless ``writer`` is one of :data:`WRITERS`."""
    if writer not in WRITERS:
        raise ValueError(f"unknown writer {writer!r}; known: {', '.join(WRITERS)}")


# --- input tables ------------------------------------------------------------------------


def color(v) -> Color:
    """The first three components as floats (a colour read as a 4-vector keeps its RGB)."""
    return (float(v[0]), float(v[1]), float(v[2]))


def write_inputs(table: InputTable, material: Mapping[str, object], converted: Mapping[str, object]) -> dict:
    """A target's inputs in table order: carried parameters from the (normalized) material,
    the others from ``converted``."""
    out = {}
    for name, param in table:
        if param is None:
            out[name] = converted[name]
        else:
            out[name] = color(material[param]) if PARAMETERS[param].size == 3 else material[param]
    return out


def read_carried(table: InputTable, inputs: Mapping[str, object]) -> dict:
    """The carried parameters present in ``inputs``: each from the first input listed for it."""
    out: dict[str, object] = {}
    for name, param in table:
        if param is not None and param not in out and name in inputs:
            value = inputs[name]
            out[param] = color(value) if PARAMETERS[param].size == 3 else float(value)
    return out


# --- shared conversions ------------------------------------------------------------------


def is_white(c) -> bool:
    return all(abs(x - 1.0) <= _EPS for x in c)


def normalized_radius(radius, scale) -> tuple[Color, float]:
    """(radius / max, scale * max): the same per-channel mean free path, colour in [0, 1]."""
    m = max(float(x) for x in radius)
    if m <= 0.0:
        return (1.0, 1.0, 1.0), 0.0
    return (radius[0] / m, radius[1] / m, radius[2] / m), float(scale) * m


def turns(rotation: float) -> float:
    """Rotation in [0, 1) turns."""
    return float(rotation) % 1.0


# --- losses ------------------------------------------------------------------------------


class LossList:
    """The losses of one target, collected in any order and returned in canonical order."""

    def __init__(self, target: str):
        self.target = target
        self.items: list[Loss] = []

    def drop(self, param: str, reason: str) -> None:
        self.items.append(Loss(self.target, param, "dropped", reason))

    def approx(self, param: str, reason: str) -> None:
        self.items.append(Loss(self.target, param, "approximated", reason))

    def sorted(self) -> list[Loss]:
        order = {n: i for i, n in enumerate(PARAMETER_NAMES)}
        return sorted(self.items, key=lambda l: order.get(l.param, len(order)))


class MaterialFacts:
    """Which parts of Blender's Principled BSDF a (normalized) material actually uses."""

    def __init__(self, m: dict):
        self.m = m
        self.dielectric = m["metallic"] < 1.0
        self.opaque_dielectric = self.dielectric and m["transmission_weight"] < 1.0
        self.aniso = m["anisotropic"] > 0.0
        self.rotated = self.aniso and turns(m["anisotropic_rotation"]) != 0.0
        self.coat = m["coat_weight"] > 0.0
        self.sheen = m["sheen_weight"] > 0.0
        self.subsurface = self.opaque_dielectric and m["subsurface_weight"] > 0.0
        self.transmission = self.dielectric and m["transmission_weight"] > 0.0
        self.thin_film = m["thin_film_thickness"] > 0.0
        self.tinted_dielectric = self.dielectric and not is_white(m["specular_tint"])
        self.tinted_metal = m["metallic"] > 0.0 and not is_white(m["specular_tint"])
        self.eta = effective_ior(m["ior"], m["specular_ior_level"])
        self.level_adjusted = m["specular_ior_level"] != 0.5
        self.f0_clipped = f0_from_ior(m["ior"]) * 2.0 * max(m["specular_ior_level"], 0.0) > F0_MAX

    def drop_sheen(self, L: LossList, why: str) -> None:
        if self.sheen:
            for p in ("sheen_weight", "sheen_roughness", "sheen_tint"):
                L.drop(p, why)

    def drop_subsurface(self, L: LossList, why: str) -> None:
        if self.subsurface:
            for p in ("subsurface_weight", "subsurface_radius", "subsurface_scale"):
                L.drop(p, why)

    def drop_thin_film(self, L: LossList, why: str) -> None:
        if self.thin_film:
            for p in ("thin_film_thickness", "thin_film_ior"):
                L.drop(p, why)

    def drop_anisotropy(self, L: LossList, why: str) -> None:
        if self.aniso:
            L.drop("anisotropic", why)
        if self.rotated:
            L.drop("anisotropic_rotation", why)

    def common_specular_notes(self, L: LossList, target: str) -> None:
        if self.f0_clipped:
            L.approx("specular_ior_level", "F0(ior) * 2 * level >= 1; clamped to a finite IOR")
        elif self.transmission and self.level_adjusted:
            L.approx("specular_ior_level",
                     f"{target} refracts with the level-adjusted IOR; Blender refracts with the raw ior")

    def materialx_notes(self, L: LossList, target: str) -> None:
        """What both MaterialX models (OpenPBR, standard_surface) approximate alike."""
        self.common_specular_notes(L, target)
        if self.tinted_dielectric:
            L.approx("specular_tint", _TINT_NOTE.format(t=target))
        if self.aniso:
            L.approx("anisotropic", _TANGENT_NOTE)
        if self.transmission:
            L.approx("transmission_weight", _TRANSMISSION_NOTE)


_TANGENT_NOTE = ("same GGX alphas as Cycles, but the default tangent differs (Blender: radial "
                "around object Z; MaterialX: UV tangent)")
_TINT_NOTE = "{t} tints the whole dielectric reflection; Blender tints F0 only (white at grazing)"
COAT_TINT_NOTE = ("{t} attenuates by coat colour at every angle; Blender by "
                  "coat_tint ** (1 / cos(refracted angle))")
_TRANSMISSION_NOTE = ("Blender tints each refraction by sqrt(base_color); written as "
                     "transmission_color = base_color (depth 0), as Blender's exporter does")
