"""Blender's Principled BSDF <-> MaterialX 1.39 OpenPBR (``ND_open_pbr_surface_surfaceshader``).

Conversions (checked against Cycles' ``svm/closure.h`` and the MaterialX 1.39 node graphs):

* Specular IOR Level: Cycles scales the dielectric F0 by ``2 * level`` and re-derives an IOR
  (:func:`pbrfit.material_mapping.effective_ior`); it does not touch metals. OpenPBR feeds
  ``specular_weight`` into the metal lobe's weight as well, so ``specular_weight = 2 *
  level`` (what Blender's exporter writes) would darken or brighten metals. pbrfit writes
  ``specular_weight = 1`` and Blender's adjusted IOR as ``specular_ior``: exact for opaque
  dielectrics and metals. Read back, ``specular_ior_level = specular_weight / 2`` and
  ``ior = specular_ior``, which is exact for both writers.
* Anisotropy: Cycles uses ``alpha_x = r**2 / s``, ``alpha_y = r**2 * s`` with
  ``s = sqrt(1 - 0.9 * anisotropic)``; OpenPBR's ``open_pbr_anisotropy`` gives
  ``alpha_x = r_o**2 * sqrt(2 / (1 + (1 - A)**2))`` and ``alpha_y = (1 - A) * alpha_x``.
  Matching both alphas needs ``A = 0.9 * anisotropic`` and ``r_o = r *``
  :func:`openpbr_roughness_scale` ``(A)``.
* Anisotropic rotation: Cycles rotates the tangent right-handedly about N by ``2 pi *
  rotation``. MaterialX ``rotate3d`` computes ``v cos + cross(v, axis) sin + ...``, a rotation
  by ``-amount``; so ``geometry_tangent`` is a graph normalize(rotate3d(world tangent,
  amount, world normal)) with ``amount = -360 * rotation`` degrees
  (:attr:`TargetMapping.tangent_rotation`), and no graph when the rotation is 0.
* Thin film: ``thin_film_thickness`` is in micrometres (``nm / 1000``), with
  ``thin_film_weight = 1`` when the thickness is > 0 (read back: 0 nm when the weight is 0).
* Coat: ``coat_darkening`` models internal reflection in the coat, which Cycles does not,
  so it is written as 0.
* Subsurface: Blender's mean free path ``radius * scale`` per channel is written as a
  normalized colour (``subsurface_radius_scale``, max component 1) times a scalar
  (``subsurface_radius``), which keeps the product exact.

Writers (:data:`ANISOTROPY_CONVENTIONS`): the two differ only in anisotropy. ``"pbrfit"`` is
the above, exact, and is also what OpenPBR's own definition means, so it is the reading for
any writer but Blender. ``"blender"`` is Blender 5.0.1's exporter: ``specular_roughness_anisotropy
= 0.7 * anisotropic`` with the roughness unchanged ("approximately"), and a tangent graph with
``amount = -(360 * rotation + 90)`` (a visual fit; it writes the graph at rotation 0 too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..params import normalize_material
from .common import (
    COAT_TINT_NOTE,
    CYCLES_ANISOTROPY_SCALE,
    InputTable,
    LossList,
    MaterialFacts,
    TargetMapping,
    check_writer,
    color,
    is_white,
    normalized_radius,
    read_carried,
    turns,
    write_inputs,
)

__all__ = ["AnisotropyConvention", "ANISOTROPY_CONVENTIONS", "openpbr_roughness_scale", "to_openpbr",
           "from_openpbr"]

_EPS = 1e-6


@dataclass(frozen=True)
class AnisotropyConvention:
    """How a writer put Blender's Anisotropic and Anisotropic Rotation into OpenPBR.

    Attributes:
        scale: ``specular_roughness_anisotropy = scale * anisotropic``.
        scales_roughness: ``specular_roughness = roughness * openpbr_roughness_scale(A)``
            (else the roughness is written unchanged).
        rotation_offset: the tangent graph's ``rotate3d`` amount is ``-(360 * rotation +
            rotation_offset)`` degrees.
    """

    scale: float
    scales_roughness: bool
    rotation_offset: float


#: Writer name -> its anisotropy convention (see the module docstring).
ANISOTROPY_CONVENTIONS: dict[str, AnisotropyConvention] = {
    "pbrfit": AnisotropyConvention(CYCLES_ANISOTROPY_SCALE, True, 0.0),
    "blender": AnisotropyConvention(0.7, False, 90.0),
}
_PBRFIT = ANISOTROPY_CONVENTIONS["pbrfit"]

_INPUTS: InputTable = (
    ("base_weight", None),
    ("base_color", "base_color"),
    ("base_diffuse_roughness", None),
    ("base_metalness", "metallic"),
    ("specular_weight", None),
    ("specular_color", "specular_tint"),
    ("specular_roughness", None),
    ("specular_ior", None),
    ("specular_roughness_anisotropy", None),
    ("transmission_weight", "transmission_weight"),
    ("transmission_color", "base_color"),
    ("transmission_depth", None),
    ("subsurface_weight", "subsurface_weight"),
    ("subsurface_color", "base_color"),
    ("subsurface_radius", None),
    ("subsurface_radius_scale", None),
    ("subsurface_scatter_anisotropy", None),
    ("fuzz_weight", "sheen_weight"),
    ("fuzz_color", "sheen_tint"),
    ("fuzz_roughness", "sheen_roughness"),
    ("coat_weight", "coat_weight"),
    ("coat_color", "coat_tint"),
    ("coat_roughness", "coat_roughness"),
    ("coat_roughness_anisotropy", None),
    ("coat_ior", "coat_ior"),
    ("coat_darkening", None),
    ("thin_film_weight", None),
    ("thin_film_thickness", None),
    ("thin_film_ior", "thin_film_ior"),
)


def openpbr_roughness_scale(openpbr_anisotropy: float) -> float:
    """Factor on the perceptual roughness that makes OpenPBR's anisotropic GGX alphas equal
    Cycles' for ``specular_roughness_anisotropy = openpbr_anisotropy`` (= 0.9 x Blender's)."""
    q = 1.0 - min(max(openpbr_anisotropy, 0.0), 1.0 - _EPS)
    return ((1.0 + q * q) / (2.0 * q)) ** 0.25


def to_openpbr(material: Mapping[str, object]) -> TargetMapping:
    """Inputs of ``open_pbr_surface`` (MaterialX 1.39 OpenPBR) for a Blender material."""
    m = normalize_material(material)
    f = MaterialFacts(m)
    L = LossList("open_pbr_surface")
    aniso = _PBRFIT.scale * m["anisotropic"] if f.aniso else 0.0
    rough = m["roughness"] * openpbr_roughness_scale(aniso) if f.aniso else m["roughness"]
    if rough > 1.0:
        L.approx("roughness", f"anisotropic roughness needs specular_roughness {rough:.3f} > 1; clipped")
        rough = 1.0
    radius, scale = normalized_radius(m["subsurface_radius"], m["subsurface_scale"])
    thickness = m["thin_film_thickness"]
    inputs = write_inputs(_INPUTS, m, {
        "base_weight": 1.0,
        "base_diffuse_roughness": 0.0,
        "specular_weight": 1.0,
        "specular_roughness": rough,
        "specular_ior": f.eta,
        "specular_roughness_anisotropy": aniso,
        "transmission_depth": 0.0,
        "subsurface_radius": scale,
        "subsurface_radius_scale": radius,
        "subsurface_scatter_anisotropy": 0.0,
        "coat_roughness_anisotropy": 0.0,
        "coat_darkening": 0.0,
        "thin_film_weight": 1.0 if thickness > 0.0 else 0.0,
        "thin_film_thickness": thickness / 1000.0,
    })
    rotation = -(360.0 * turns(m["anisotropic_rotation"]) + _PBRFIT.rotation_offset) if f.rotated else None
    f.materialx_notes(L, "OpenPBR")
    if f.coat:
        L.approx("coat_weight", "OpenPBR roughens the base specular under a coat and takes its "
                 "Fresnel relative to coat_ior; Cycles does neither")
        if not is_white(m["coat_tint"]):
            L.approx("coat_tint", COAT_TINT_NOTE.format(t="OpenPBR (MaterialX)"))
    return TargetMapping("open_pbr_surface", inputs, L.sorted(), rotation)


def from_openpbr(inputs: Mapping[str, object], tangent_rotation: float | None = None, *,
                 writer: str = "pbrfit") -> dict:
    """The Blender material that ``open_pbr_surface`` inputs stand for.

    Args:
        inputs: input name -> value; only inputs present are read, every parameter they do
            not determine takes Blender's default.
        tangent_rotation: the ``rotate3d`` amount (degrees) of the ``geometry_tangent``
            graph, or None when there is none (rotation 0).
        writer: whose conventions the inputs follow (:data:`ANISOTROPY_CONVENTIONS`):
            ``"pbrfit"`` (also OpenPBR's own meaning) or ``"blender"``.

    Returns:
        A full canonical material. The dielectric F0 comes back as ``ior`` and
        ``specular_ior_level = specular_weight / 2``; the mean free path as ``radius * scale``.
    """
    check_writer(writer)
    convention = ANISOTROPY_CONVENTIONS[writer]
    out = read_carried(_INPUTS, inputs)
    if "base_color" in out:
        weight = float(inputs.get("base_weight", 1.0))
        out["base_color"] = tuple(weight * c for c in out["base_color"])
    if "specular_weight" in inputs:
        out["specular_ior_level"] = 0.5 * float(inputs["specular_weight"])
    if "specular_ior" in inputs:
        out["ior"] = float(inputs["specular_ior"])
    aniso = float(inputs.get("specular_roughness_anisotropy", 0.0))
    if "specular_roughness_anisotropy" in inputs:
        out["anisotropic"] = aniso / convention.scale
    if "specular_roughness" in inputs:
        rough = float(inputs["specular_roughness"])
        out["roughness"] = rough / openpbr_roughness_scale(aniso) if convention.scales_roughness and aniso > 0.0 \
            else rough
    if tangent_rotation is not None:
        out["anisotropic_rotation"] = turns(-(float(tangent_rotation) + convention.rotation_offset) / 360.0)
    if "subsurface_radius" in inputs:
        out["subsurface_scale"] = float(inputs["subsurface_radius"])
    if "subsurface_radius_scale" in inputs:
        out["subsurface_radius"] = color(inputs["subsurface_radius_scale"])
    if "thin_film_thickness" in inputs:
        on = float(inputs.get("thin_film_weight", 0.0)) > 0.0
        out["thin_film_thickness"] = 1000.0 * float(inputs["thin_film_thickness"]) if on else 0.0
    return normalize_material(out, source="open_pbr_surface inputs")
