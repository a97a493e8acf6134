"""Blender's Principled BSDF <-> MaterialX Autodesk Standard Surface (``standard_surface``).

Conversions: ``specular = 1`` with Blender's level-adjusted IOR as ``specular_IOR`` (as for
OpenPBR, :mod:`pbrfit.material_mapping.openpbr`); ``specular_anisotropy = 0.9 *
anisotropic`` (MaterialX's ``roughness_anisotropy`` is Cycles' aspect ratio with
``s = sqrt(1 - A)``); ``specular_rotation = (-rotation) mod 1`` (turns, the sense of
``rotate3d``); thin film thickness in nanometres; the mean free path as a normalized
``subsurface_radius`` times ``subsurface_scale``; ``coat_affect_*`` 0 (Cycles has neither).
Read back, ``base_color`` is ``base * base_color`` and the level is 0.5.
"""

from __future__ import annotations

from typing import Mapping

from ..params import normalize_material
from .common import (
    COAT_TINT_NOTE,
    CYCLES_ANISOTROPY_SCALE,
    InputTable,
    LossList,
    MaterialFacts,
    TargetMapping,
    color,
    is_white,
    normalized_radius,
    read_carried,
    turns,
    write_inputs,
)

__all__ = ["to_standard_surface", "from_standard_surface"]

_INPUTS: InputTable = (
    ("base", None),
    ("base_color", "base_color"),
    ("diffuse_roughness", None),
    ("metalness", "metallic"),
    ("specular", None),
    ("specular_color", "specular_tint"),
    ("specular_roughness", "roughness"),
    ("specular_IOR", None),
    ("specular_anisotropy", None),
    ("specular_rotation", None),
    ("transmission", "transmission_weight"),
    ("transmission_color", "base_color"),
    ("transmission_depth", None),
    ("subsurface", "subsurface_weight"),
    ("subsurface_color", "base_color"),
    ("subsurface_radius", None),
    ("subsurface_scale", None),
    ("subsurface_anisotropy", None),
    ("sheen", "sheen_weight"),
    ("sheen_color", "sheen_tint"),
    ("sheen_roughness", "sheen_roughness"),
    ("coat", "coat_weight"),
    ("coat_color", "coat_tint"),
    ("coat_roughness", "coat_roughness"),
    ("coat_IOR", "coat_ior"),
    ("coat_affect_color", None),
    ("coat_affect_roughness", None),
    ("thin_film_thickness", "thin_film_thickness"),
    ("thin_film_IOR", "thin_film_ior"),
)


def to_standard_surface(material: Mapping[str, object]) -> TargetMapping:
    """Inputs of MaterialX ``standard_surface`` for a Blender material."""
    m = normalize_material(material)
    f = MaterialFacts(m)
    L = LossList("standard_surface")
    radius, scale = normalized_radius(m["subsurface_radius"], m["subsurface_scale"])
    inputs = write_inputs(_INPUTS, m, {
        "base": 1.0,
        "diffuse_roughness": 0.0,
        "specular": 1.0,
        "specular_IOR": f.eta,
        "specular_anisotropy": CYCLES_ANISOTROPY_SCALE * m["anisotropic"] if f.aniso else 0.0,
        "specular_rotation": (-turns(m["anisotropic_rotation"])) % 1.0 if f.aniso else 0.0,
        "transmission_depth": 0.0,
        "subsurface_radius": radius,
        "subsurface_scale": scale,
        "subsurface_anisotropy": 0.0,
        "coat_affect_color": 0.0,
        "coat_affect_roughness": 0.0,
    })
    f.materialx_notes(L, "standard_surface")
    if f.tinted_metal:
        L.approx("metallic", "metal edge tint via artistic_ior (Gulbrandsen); Blender uses F82 tint")
    if f.sheen:
        L.approx("sheen_weight", "Conty-Kulla sheen under the coat; Blender: Zeltner microfiber "
                 "sheen on top of the coat")
    if f.coat and not is_white(m["coat_tint"]):
        L.approx("coat_tint", COAT_TINT_NOTE.format(t="standard_surface"))
    return TargetMapping("standard_surface", inputs, L.sorted())


def from_standard_surface(inputs: Mapping[str, object]) -> dict:
    """The Blender material that ``standard_surface`` inputs stand for (only inputs present
    are read; every parameter they do not determine takes Blender's default)."""
    out = read_carried(_INPUTS, inputs)
    if "base_color" in out:
        weight = float(inputs.get("base", 1.0))
        out["base_color"] = tuple(weight * c for c in out["base_color"])
    if "specular_IOR" in inputs:
        out["ior"] = float(inputs["specular_IOR"])
    if "specular_anisotropy" in inputs:
        out["anisotropic"] = float(inputs["specular_anisotropy"]) / CYCLES_ANISOTROPY_SCALE
    if "specular_rotation" in inputs:
        out["anisotropic_rotation"] = turns(-float(inputs["specular_rotation"]))
    if "subsurface_radius" in inputs:
        out["subsurface_radius"] = color(inputs["subsurface_radius"])
    if "subsurface_scale" in inputs:
        out["subsurface_scale"] = float(inputs["subsurface_scale"])
    return normalize_material(out, source="standard_surface inputs")
