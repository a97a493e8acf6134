"""Canonical Blender 5.0 Principled BSDF values -> the inputs of each export target.

The input is a material under pbrfit's canonical names (see :mod:`pbrfit.params`), meaning
exactly what the Blender 5.0 Principled BSDF sockets mean: linear Rec.709 colours, perceptual
roughness (GGX alpha = r**2), ``anisotropic_rotation`` in turns, ``thin_film_thickness`` in
nanometres, ``subsurface_radius`` x ``subsurface_scale`` = mean free path in scene units.

Targets (names as their node definitions spell them):

* ``open_pbr_surface``   MaterialX OpenPBR (``ND_open_pbr_surface_surfaceshader``);
* ``standard_surface``   MaterialX Autodesk Standard Surface;
* ``UsdPreviewSurface``  USD's preview material;
* ``OmniPBR``            NVIDIA ``OmniPBR.mdl`` (Omniverse RTX);
* ``OmniPBR_ClearCoat``  NVIDIA ``OmniPBR_ClearCoat.mdl``.

Each ``to_*`` function returns a :class:`TargetMapping`: the target's input values (plain
Python: ``float``, ``bool``, ``int`` or a 3-tuple for a colour) and the :class:`Loss` list of
canonical parameters that the target drops or only approximates *for this material* (a
parameter that has no effect in Blender, e.g. sheen tint at sheen weight 0, is not reported).

Conversions that are exact (checked against Cycles' ``svm/closure.h`` and the MaterialX
1.39 node graphs):

* Specular IOR Level: Cycles scales the dielectric F0 by ``2 * level`` and re-derives an IOR
  from it (``eta = ior_from_F0(F0(ior) * 2 * level)``, see :func:`blender_specular_eta`); it
  does not touch metals. MaterialX's OpenPBR feeds ``specular_weight`` into the metal lobe's
  weight as well, so ``specular_weight = 2 * level`` (what Blender's own MaterialX exporter
  writes) would darken or brighten metals. We write ``specular_weight = 1`` and put Blender's
  adjusted IOR into ``specular_ior`` / ``specular_IOR`` / ``ior``: exact for opaque dielectrics
  and metals.
* Anisotropy: Cycles uses ``alpha_x = r**2 / s``, ``alpha_y = r**2 * s`` with
  ``s = sqrt(1 - 0.9 * anisotropic)``. MaterialX ``roughness_anisotropy`` (standard_surface)
  is the same with ``s = sqrt(1 - A)``, so ``A = 0.9 * anisotropic``. OpenPBR's
  ``open_pbr_anisotropy`` gives ``alpha_x = r_o**2 * sqrt(2 / (1 + (1 - A)**2))`` and
  ``alpha_y = (1 - A) * alpha_x``; matching both alphas needs ``A = 0.9 * anisotropic`` and
  ``r_o = r * ((1 + (1 - A)**2) / (2 * (1 - A)))**0.25`` (Blender's exporter instead writes
  ``0.7 * anisotropic`` with the roughness unchanged, "approximately").
* Anisotropic rotation: Cycles rotates the tangent right-handedly about N by
  ``2 pi * rotation``. MaterialX ``rotate3d`` computes ``v cos + cross(v, axis) sin + ...``,
  i.e. a rotation by ``-amount``; so OpenPBR gets a tangent graph with
  ``amount = -360 * rotation`` degrees (:attr:`TargetMapping.tangent_rotation`) and
  standard_surface ``specular_rotation = (-rotation) mod 1``. (Blender's exporter uses
  ``-(360 * rotation + 90)``, a visual fit.)
* Thin film: OpenPBR ``thin_film_thickness`` is in micrometres (``nm / 1000``) with
  ``thin_film_weight = 1`` when the thickness is > 0; standard_surface takes nanometres.
* Coat: OpenPBR's ``coat_darkening`` models internal reflection in the coat, which Cycles
  does not, so it is written as 0.
* Subsurface: Blender's mean free path is ``radius * scale`` per channel; it is written as a
  normalized colour (max component 1) times a scalar, which keeps the product exact.

OmniPBR's reflectance (OmniPBR.mdl: ``df::custom_curve_layer(normal_reflectivity: 0.08,
grazing_reflectivity: 1, weight: specular_level, ...)``, metals through
``df::directional_factor(base_color, base_color)``) is matched at normal incidence:
``specular_level = F0 / 0.08``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..params import PARAMETER_NAMES, normalize_material

__all__ = [
    "TARGETS",
    "Loss",
    "TargetMapping",
    "f0_from_ior",
    "ior_from_f0",
    "blender_specular_eta",
    "openpbr_roughness_scale",
    "omnipbr_target",
    "to_openpbr",
    "to_standard_surface",
    "to_usd_preview_surface",
    "to_omnipbr",
    "map_material",
    "from_openpbr",
    "from_standard_surface",
    "from_usd_preview_surface",
    "from_omnipbr",
]

TARGETS: tuple[str, ...] = (
    "open_pbr_surface", "standard_surface", "UsdPreviewSurface", "OmniPBR", "OmniPBR_ClearCoat",
)

#: Blender's Cycles scales anisotropy by this before forming the roughness aspect ratio.
_CYCLES_ANISO_SCALE = 0.9
#: OmniPBR's dielectric layer reflects 0.08 * specular_level at normal incidence.
_OMNIPBR_F0_AT_LEVEL_1 = 0.08
#: Largest F0 this module turns back into an IOR (MaterialX's OpenPBR graph clamps likewise).
_F0_MAX = 0.99999
_EPS = 1e-6

Color = tuple[float, float, float]


@dataclass(frozen=True)
class Loss:
    """A canonical parameter a target drops or approximates.

    Attributes:
        target: the target's name (one of :data:`TARGETS`).
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
            ``rotate3d`` (then normalized); see the module docstring for the sign.
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


# --- Fresnel helpers ---------------------------------------------------------------------


def f0_from_ior(ior: float) -> float:
    """Normal-incidence Fresnel reflectance of a dielectric with relative IOR ``ior``."""
    r = (ior - 1.0) / (ior + 1.0)
    return r * r


def ior_from_f0(f0: float) -> float:
    """The IOR (>= 1) whose normal-incidence reflectance is ``f0`` (clamped below 1)."""
    s = math.sqrt(min(max(f0, 0.0), _F0_MAX))
    return (1.0 + s) / (1.0 - s)


def blender_specular_eta(ior: float, specular_ior_level: float) -> float:
    """The IOR Cycles' Principled BSDF uses for its dielectric specular lobe.

    Cycles (``svm/closure.h``, "Apply IOR adjustment"): when the level is not 0.5,
    ``f0 = F0(ior) * 2 * level`` and ``eta = ior_from_F0(f0)`` (inverted for ior < 1).
    The refraction lobe keeps the unadjusted ``ior``.
    """
    level = max(float(specular_ior_level), 0.0)
    if level == 0.5:
        return float(ior)
    eta = ior_from_f0(f0_from_ior(ior) * 2.0 * level)
    return 1.0 / eta if ior < 1.0 else eta


def openpbr_roughness_scale(openpbr_anisotropy: float) -> float:
    """Factor on the perceptual roughness that makes OpenPBR's anisotropic GGX alphas equal
    Cycles' for ``specular_roughness_anisotropy = openpbr_anisotropy`` (= 0.9 x Blender's)."""
    q = 1.0 - min(max(openpbr_anisotropy, 0.0), 1.0 - _EPS)
    return ((1.0 + q * q) / (2.0 * q)) ** 0.25


# --- helpers -----------------------------------------------------------------------------


def _color(v) -> Color:
    return (float(v[0]), float(v[1]), float(v[2]))


def _is_white(c) -> bool:
    return all(abs(x - 1.0) <= _EPS for x in c)


def _normalized_radius(radius, scale) -> tuple[Color, float]:
    """(radius / max, scale * max): the same per-channel mean free path, colour in [0, 1]."""
    m = max(float(x) for x in radius)
    if m <= 0.0:
        return (1.0, 1.0, 1.0), 0.0
    return (radius[0] / m, radius[1] / m, radius[2] / m), float(scale) * m


def _turns(rotation: float) -> float:
    """Rotation in [0, 1) turns."""
    return float(rotation) % 1.0


class _Losses:
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


class _Facts:
    """Which parts of Blender's Principled BSDF a material actually uses."""

    def __init__(self, m: dict):
        self.m = m
        self.dielectric = m["metallic"] < 1.0
        self.opaque_dielectric = self.dielectric and m["transmission_weight"] < 1.0
        self.aniso = m["anisotropic"] > 0.0
        self.rotated = self.aniso and _turns(m["anisotropic_rotation"]) != 0.0
        self.coat = m["coat_weight"] > 0.0
        self.sheen = m["sheen_weight"] > 0.0
        self.subsurface = self.opaque_dielectric and m["subsurface_weight"] > 0.0
        self.transmission = self.dielectric and m["transmission_weight"] > 0.0
        self.thin_film = m["thin_film_thickness"] > 0.0
        self.tinted_dielectric = self.dielectric and not _is_white(m["specular_tint"])
        self.tinted_metal = m["metallic"] > 0.0 and not _is_white(m["specular_tint"])
        self.eta = blender_specular_eta(m["ior"], m["specular_ior_level"])
        self.level_adjusted = m["specular_ior_level"] != 0.5
        self.f0_clipped = f0_from_ior(m["ior"]) * 2.0 * max(m["specular_ior_level"], 0.0) > _F0_MAX

    def drop_sheen(self, L: _Losses, why: str) -> None:
        if self.sheen:
            for p in ("sheen_weight", "sheen_roughness", "sheen_tint"):
                L.drop(p, why)

    def drop_subsurface(self, L: _Losses, why: str) -> None:
        if self.subsurface:
            for p in ("subsurface_weight", "subsurface_radius", "subsurface_scale"):
                L.drop(p, why)

    def drop_thin_film(self, L: _Losses, why: str) -> None:
        if self.thin_film:
            for p in ("thin_film_thickness", "thin_film_ior"):
                L.drop(p, why)

    def drop_anisotropy(self, L: _Losses, why: str) -> None:
        if self.aniso:
            L.drop("anisotropic", why)
        if self.rotated:
            L.drop("anisotropic_rotation", why)

    def common_specular_notes(self, L: _Losses, target: str) -> None:
        if self.f0_clipped:
            L.approx("specular_ior_level", "F0(ior) * 2 * level >= 1; clamped to a finite IOR")
        elif self.transmission and self.level_adjusted:
            L.approx("specular_ior_level",
                     f"{target} refracts with the level-adjusted IOR; Blender refracts with the raw ior")


_TANGENT_NOTE = ("same GGX alphas as Cycles, but the default tangent differs (Blender: radial "
                 "around object Z; MaterialX: UV tangent)")
_TINT_NOTE = "{t} tints the whole dielectric reflection; Blender tints F0 only (white at grazing)"
_COAT_TINT_NOTE = ("{t} attenuates by coat colour at every angle; Blender by "
                   "coat_tint ** (1 / cos(refracted angle))")
_TRANSMISSION_NOTE = ("Blender tints each refraction by sqrt(base_color); written as "
                      "transmission_color = base_color (depth 0), as Blender's exporter does")


# --- targets -----------------------------------------------------------------------------


def to_openpbr(material: Mapping[str, object]) -> TargetMapping:
    """Inputs of ``open_pbr_surface`` (MaterialX 1.39 OpenPBR) for a Blender material."""
    m = normalize_material(material)
    f = _Facts(m)
    L = _Losses("open_pbr_surface")
    aniso = _CYCLES_ANISO_SCALE * m["anisotropic"] if f.aniso else 0.0
    rough = m["roughness"] * openpbr_roughness_scale(aniso) if f.aniso else m["roughness"]
    if rough > 1.0:
        L.approx("roughness", f"anisotropic roughness needs specular_roughness {rough:.3f} > 1; clipped")
        rough = 1.0
    radius, scale = _normalized_radius(m["subsurface_radius"], m["subsurface_scale"])
    thickness = m["thin_film_thickness"]
    inputs = {
        "base_weight": 1.0,
        "base_color": _color(m["base_color"]),
        "base_diffuse_roughness": 0.0,
        "base_metalness": m["metallic"],
        "specular_weight": 1.0,
        "specular_color": _color(m["specular_tint"]),
        "specular_roughness": rough,
        "specular_ior": f.eta,
        "specular_roughness_anisotropy": aniso,
        "transmission_weight": m["transmission_weight"],
        "transmission_color": _color(m["base_color"]),
        "transmission_depth": 0.0,
        "subsurface_weight": m["subsurface_weight"],
        "subsurface_color": _color(m["base_color"]),
        "subsurface_radius": scale,
        "subsurface_radius_scale": radius,
        "subsurface_scatter_anisotropy": 0.0,
        "fuzz_weight": m["sheen_weight"],
        "fuzz_color": _color(m["sheen_tint"]),
        "fuzz_roughness": m["sheen_roughness"],
        "coat_weight": m["coat_weight"],
        "coat_color": _color(m["coat_tint"]),
        "coat_roughness": m["coat_roughness"],
        "coat_roughness_anisotropy": 0.0,
        "coat_ior": m["coat_ior"],
        "coat_darkening": 0.0,
        "thin_film_weight": 1.0 if thickness > 0.0 else 0.0,
        "thin_film_thickness": thickness / 1000.0,
        "thin_film_ior": m["thin_film_ior"],
    }
    rotation = -360.0 * _turns(m["anisotropic_rotation"]) if f.rotated else None
    f.common_specular_notes(L, "OpenPBR")
    if f.tinted_dielectric:
        L.approx("specular_tint", _TINT_NOTE.format(t="OpenPBR"))
    if f.aniso:
        L.approx("anisotropic", _TANGENT_NOTE)
    if f.transmission:
        L.approx("transmission_weight", _TRANSMISSION_NOTE)
    if f.coat:
        L.approx("coat_weight", "OpenPBR roughens the base specular under a coat and takes its "
                 "Fresnel relative to coat_ior; Cycles does neither")
        if not _is_white(m["coat_tint"]):
            L.approx("coat_tint", _COAT_TINT_NOTE.format(t="OpenPBR (MaterialX)"))
    return TargetMapping("open_pbr_surface", inputs, L.sorted(), rotation)


def to_standard_surface(material: Mapping[str, object]) -> TargetMapping:
    """Inputs of MaterialX ``standard_surface`` for a Blender material."""
    m = normalize_material(material)
    f = _Facts(m)
    L = _Losses("standard_surface")
    radius, scale = _normalized_radius(m["subsurface_radius"], m["subsurface_scale"])
    inputs = {
        "base": 1.0,
        "base_color": _color(m["base_color"]),
        "diffuse_roughness": 0.0,
        "metalness": m["metallic"],
        "specular": 1.0,
        "specular_color": _color(m["specular_tint"]),
        "specular_roughness": m["roughness"],
        "specular_IOR": f.eta,
        "specular_anisotropy": _CYCLES_ANISO_SCALE * m["anisotropic"] if f.aniso else 0.0,
        "specular_rotation": (-_turns(m["anisotropic_rotation"])) % 1.0 if f.aniso else 0.0,
        "transmission": m["transmission_weight"],
        "transmission_color": _color(m["base_color"]),
        "transmission_depth": 0.0,
        "subsurface": m["subsurface_weight"],
        "subsurface_color": _color(m["base_color"]),
        "subsurface_radius": radius,
        "subsurface_scale": scale,
        "subsurface_anisotropy": 0.0,
        "sheen": m["sheen_weight"],
        "sheen_color": _color(m["sheen_tint"]),
        "sheen_roughness": m["sheen_roughness"],
        "coat": m["coat_weight"],
        "coat_color": _color(m["coat_tint"]),
        "coat_roughness": m["coat_roughness"],
        "coat_IOR": m["coat_ior"],
        "coat_affect_color": 0.0,
        "coat_affect_roughness": 0.0,
        "thin_film_thickness": m["thin_film_thickness"],
        "thin_film_IOR": m["thin_film_ior"],
    }
    f.common_specular_notes(L, "standard_surface")
    if f.tinted_dielectric:
        L.approx("specular_tint", _TINT_NOTE.format(t="standard_surface"))
    if f.tinted_metal:
        L.approx("metallic", "metal edge tint via artistic_ior (Gulbrandsen); Blender uses F82 tint")
    if f.aniso:
        L.approx("anisotropic", _TANGENT_NOTE)
    if f.transmission:
        L.approx("transmission_weight", _TRANSMISSION_NOTE)
    if f.sheen:
        L.approx("sheen_weight", "Conty-Kulla sheen under the coat; Blender: Zeltner microfiber "
                 "sheen on top of the coat")
    if f.coat and not _is_white(m["coat_tint"]):
        L.approx("coat_tint", _COAT_TINT_NOTE.format(t="standard_surface"))
    return TargetMapping("standard_surface", inputs, L.sorted())


def to_usd_preview_surface(material: Mapping[str, object]) -> TargetMapping:
    """Inputs of ``UsdPreviewSurface`` for a Blender material.

    Metallic workflow, with ``ior`` = Blender's level-adjusted IOR (the preview surface takes
    its dielectric F0 from ``ior``). A tinted non-metal switches to the specular workflow
    with ``specularColor = F0 * specular_tint`` (F90 = 1), which is Blender's dielectric tint.
    """
    m = normalize_material(material)
    f = _Facts(m)
    L = _Losses("UsdPreviewSurface")
    inputs: dict[str, object] = {
        "diffuseColor": _color(m["base_color"]),
        "roughness": m["roughness"],
        "ior": f.eta,
        "clearcoat": m["coat_weight"],
        "clearcoatRoughness": m["coat_roughness"],
        "opacity": 1.0,
    }
    if f.tinted_dielectric and m["metallic"] == 0.0:
        f0 = f0_from_ior(f.eta)
        inputs["useSpecularWorkflow"] = 1
        inputs["specularColor"] = tuple(f0 * c for c in _color(m["specular_tint"]))
        inputs["metallic"] = 0.0
    else:
        inputs["useSpecularWorkflow"] = 0
        inputs["metallic"] = m["metallic"]
        if f.tinted_dielectric or f.tinted_metal:
            L.drop("specular_tint", "the metallic workflow has no specular tint")
    if f.f0_clipped:
        L.approx("specular_ior_level", "F0(ior) * 2 * level >= 1; clamped to a finite IOR")
    f.drop_anisotropy(L, "UsdPreviewSurface is isotropic")
    if f.coat:
        if abs(m["coat_ior"] - f.eta) > 1e-3:
            L.approx("coat_ior", "UsdPreviewSurface takes the clearcoat F0 from the single ior input")
        if not _is_white(m["coat_tint"]):
            L.drop("coat_tint", "UsdPreviewSurface's clearcoat is untinted")
    f.drop_sheen(L, "UsdPreviewSurface has no sheen lobe")
    f.drop_subsurface(L, "UsdPreviewSurface has no subsurface scattering")
    if f.transmission:
        L.drop("transmission_weight", "UsdPreviewSurface opacity is coverage, not refraction")
    f.drop_thin_film(L, "UsdPreviewSurface has no thin film")
    return TargetMapping("UsdPreviewSurface", inputs, L.sorted())


def omnipbr_target(material: Mapping[str, object]) -> str:
    """``"OmniPBR_ClearCoat"`` when the material has a coat (coat_weight > 0), else ``"OmniPBR"``."""
    return "OmniPBR_ClearCoat" if normalize_material(material)["coat_weight"] > 0.0 else "OmniPBR"


def to_omnipbr(material: Mapping[str, object], *, clearcoat: bool | None = None) -> TargetMapping:
    """Inputs of ``OmniPBR.mdl`` (or ``OmniPBR_ClearCoat.mdl``) for a Blender material.

    Args:
        clearcoat: use OmniPBR_ClearCoat; None picks it when coat_weight > 0.
    """
    m = normalize_material(material)
    f = _Facts(m)
    if clearcoat is None:
        clearcoat = f.coat
    target = "OmniPBR_ClearCoat" if clearcoat else "OmniPBR"
    L = _Losses(target)
    level = f0_from_ior(f.eta) / _OMNIPBR_F0_AT_LEVEL_1
    inputs: dict[str, object] = {
        "diffuse_color_constant": _color(m["base_color"]),
        "reflection_roughness_constant": m["roughness"],
        "metallic_constant": m["metallic"],
        "specular_level": min(level, 1.0),
    }
    if f.dielectric:
        if level > 1.0:
            L.approx("specular_ior_level", f"needs F0 {f0_from_ior(f.eta):.4f} > 0.08; specular_level clipped at 1")
        else:
            L.approx("specular_ior_level", "F0 matched (0.08 * specular_level); OmniPBR's grazing "
                     "reflectance is specular_level, not 1")
    if m["metallic"] > 0.0:
        L.approx("metallic", "OmniPBR metals reflect base_color at every angle (no Fresnel rise to white)")
    if f.tinted_dielectric or f.tinted_metal:
        L.drop("specular_tint", "OmniPBR has no specular tint")
    f.drop_anisotropy(L, "OmniPBR is isotropic")
    if clearcoat:
        inputs.update({
            "enable_clearcoat": True,
            "clearcoat_weight": m["coat_weight"],
            "clearcoat_reflection_roughness": m["coat_roughness"],
            "clearcoat_ior": m["coat_ior"],
            "clearcoat_tint": _color(m["coat_tint"]),
            "clearcoat_transparency": 1.0,
        })
        if f.coat and not _is_white(m["coat_tint"]):
            L.approx("coat_tint", "clearcoat_tint colours the coat; Blender's coat_tint is a "
                     "view-dependent absorption of the layers below")
    elif f.coat:
        for p in ("coat_weight", "coat_roughness", "coat_ior", "coat_tint"):
            L.drop(p, "OmniPBR.mdl has no coat (OmniPBR_ClearCoat.mdl has)")
    f.drop_sheen(L, "OmniPBR has no sheen lobe")
    f.drop_subsurface(L, "OmniPBR has no subsurface scattering")
    if f.transmission:
        L.drop("transmission_weight", "OmniPBR is opaque (OmniGlass would be needed)")
    f.drop_thin_film(L, "OmniPBR has no thin film")
    return TargetMapping(target, inputs, L.sorted())


_MAPPERS: dict[str, Callable[[Mapping[str, object]], TargetMapping]] = {
    "open_pbr_surface": to_openpbr,
    "standard_surface": to_standard_surface,
    "UsdPreviewSurface": to_usd_preview_surface,
    "OmniPBR": lambda m: to_omnipbr(m, clearcoat=False),
    "OmniPBR_ClearCoat": lambda m: to_omnipbr(m, clearcoat=True),
}


def map_material(material: Mapping[str, object], target: str) -> TargetMapping:
    """The inputs and losses of ``target`` (one of :data:`TARGETS`) for ``material``."""
    try:
        mapper = _MAPPERS[target]
    except KeyError:
        raise ValueError(f"unknown export target {target!r}; known: {', '.join(TARGETS)}") from None
    return mapper(material)


# --- inverse mappings (target inputs -> canonical) ---------------------------------------
#
# Each returns a full canonical material (defaults filled). Where Blender has two knobs for
# one target quantity the result is one Blender-equivalent choice: the dielectric F0 comes
# back as ``ior`` with ``specular_ior_level`` 0.5 (or the level that reproduces the F0 at
# IOR 1.5 for OmniPBR), the mean free path as ``radius * scale`` with a normalized radius.


def _get(inputs: Mapping[str, object], name: str, default):
    v = inputs.get(name, default)
    return _color(v) if isinstance(default, tuple) else v


def from_openpbr(inputs: Mapping[str, object], tangent_rotation: float | None = None) -> dict:
    """Canonical material from ``open_pbr_surface`` inputs (missing inputs: OpenPBR defaults)."""
    g = lambda n, d: _get(inputs, n, d)  # noqa: E731
    aniso = float(g("specular_roughness_anisotropy", 0.0))
    rough = float(g("specular_roughness", 0.3))
    if aniso > 0.0:
        rough /= openpbr_roughness_scale(aniso)
    thickness_um = float(g("thin_film_thickness", 0.5))
    out = {
        "base_color": g("base_color", (0.8, 0.8, 0.8)),
        "metallic": g("base_metalness", 0.0),
        "roughness": rough,
        "ior": g("specular_ior", 1.5),
        "specular_ior_level": 0.5 * float(g("specular_weight", 1.0)),
        "specular_tint": g("specular_color", (1.0, 1.0, 1.0)),
        "anisotropic": aniso / _CYCLES_ANISO_SCALE,
        "anisotropic_rotation": (-tangent_rotation / 360.0) % 1.0 if tangent_rotation else 0.0,
        "coat_weight": g("coat_weight", 0.0),
        "coat_roughness": g("coat_roughness", 0.0),
        "coat_ior": g("coat_ior", 1.6),
        "coat_tint": g("coat_color", (1.0, 1.0, 1.0)),
        "sheen_weight": g("fuzz_weight", 0.0),
        "sheen_roughness": g("fuzz_roughness", 0.5),
        "sheen_tint": g("fuzz_color", (1.0, 1.0, 1.0)),
        "subsurface_weight": g("subsurface_weight", 0.0),
        "subsurface_radius": g("subsurface_radius_scale", (1.0, 0.5, 0.25)),
        "subsurface_scale": g("subsurface_radius", 1.0),
        "transmission_weight": g("transmission_weight", 0.0),
        "thin_film_thickness": 1000.0 * thickness_um if float(g("thin_film_weight", 0.0)) > 0.0 else 0.0,
        "thin_film_ior": g("thin_film_ior", 1.4),
    }
    return normalize_material(out, source="open_pbr_surface inputs")


def from_standard_surface(inputs: Mapping[str, object]) -> dict:
    """Canonical material from ``standard_surface`` inputs (missing: its v1.0.1 defaults)."""
    g = lambda n, d: _get(inputs, n, d)  # noqa: E731
    out = {
        "base_color": tuple(float(g("base", 1.0)) * c for c in g("base_color", (0.8, 0.8, 0.8))),
        "metallic": g("metalness", 0.0),
        "roughness": g("specular_roughness", 0.2),
        "ior": g("specular_IOR", 1.5),
        "specular_ior_level": 0.5,
        "specular_tint": g("specular_color", (1.0, 1.0, 1.0)),
        "anisotropic": float(g("specular_anisotropy", 0.0)) / _CYCLES_ANISO_SCALE,
        "anisotropic_rotation": (-float(g("specular_rotation", 0.0))) % 1.0,
        "coat_weight": g("coat", 0.0),
        "coat_roughness": g("coat_roughness", 0.1),
        "coat_ior": g("coat_IOR", 1.5),
        "coat_tint": g("coat_color", (1.0, 1.0, 1.0)),
        "sheen_weight": g("sheen", 0.0),
        "sheen_roughness": g("sheen_roughness", 0.3),
        "sheen_tint": g("sheen_color", (1.0, 1.0, 1.0)),
        "subsurface_weight": g("subsurface", 0.0),
        "subsurface_radius": g("subsurface_radius", (1.0, 1.0, 1.0)),
        "subsurface_scale": g("subsurface_scale", 1.0),
        "transmission_weight": g("transmission", 0.0),
        "thin_film_thickness": g("thin_film_thickness", 0.0),
        "thin_film_ior": g("thin_film_IOR", 1.5),
    }
    return normalize_material(out, source="standard_surface inputs")


def from_usd_preview_surface(inputs: Mapping[str, object]) -> dict:
    """Canonical material from ``UsdPreviewSurface`` inputs (missing: its defaults)."""
    g = lambda n, d: _get(inputs, n, d)  # noqa: E731
    ior = float(g("ior", 1.5))
    out = {
        "base_color": g("diffuseColor", (0.18, 0.18, 0.18)),
        "roughness": g("roughness", 0.5),
        "ior": ior,
        "specular_ior_level": 0.5,
        "coat_weight": g("clearcoat", 0.0),
        "coat_roughness": g("clearcoatRoughness", 0.01),
        "coat_ior": ior,
    }
    if int(g("useSpecularWorkflow", 0)):
        f0 = f0_from_ior(ior)
        spec = g("specularColor", (0.0, 0.0, 0.0))
        out["metallic"] = 0.0
        out["specular_tint"] = tuple(c / f0 for c in spec) if f0 > 0 else (1.0, 1.0, 1.0)
    else:
        out["metallic"] = g("metallic", 0.0)
    return normalize_material(out, source="UsdPreviewSurface inputs")


def from_omnipbr(inputs: Mapping[str, object]) -> dict:
    """Canonical material from ``OmniPBR`` / ``OmniPBR_ClearCoat`` inputs (missing: OmniPBR
    defaults). The dielectric F0 ``0.08 * specular_level`` comes back at IOR 1.5, where it is
    ``specular_ior_level = specular_level``."""
    g = lambda n, d: _get(inputs, n, d)  # noqa: E731
    out = {
        "base_color": g("diffuse_color_constant", (0.2, 0.2, 0.2)),
        "roughness": g("reflection_roughness_constant", 0.5),
        "metallic": g("metallic_constant", 0.0),
        "ior": 1.5,
        "specular_ior_level": float(g("specular_level", 0.5)) * _OMNIPBR_F0_AT_LEVEL_1 / (2.0 * f0_from_ior(1.5)),
    }
    if bool(g("enable_clearcoat", False)):
        out.update({
            "coat_weight": g("clearcoat_weight", 1.0),
            "coat_roughness": g("clearcoat_reflection_roughness", 0.0),
            "coat_ior": g("clearcoat_ior", 1.56),
            "coat_tint": g("clearcoat_tint", (1.0, 1.0, 1.0)),
        })
    else:
        out["coat_weight"] = 0.0
    return normalize_material(out, source="OmniPBR inputs")
