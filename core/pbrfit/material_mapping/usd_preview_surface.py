"""Blender's Principled BSDF <-> USD's ``UsdPreviewSurface``.

pbrfit writes the metallic workflow with ``ior`` = Blender's level-adjusted IOR (the preview
surface takes its dielectric F0, and its clearcoat's, from ``ior``). A tinted non-metal
switches to the specular workflow with ``specularColor = F0 * specular_tint`` (F90 = 1),
which is Blender's dielectric tint. Anisotropy, sheen, subsurface, transmission and thin
film cannot be carried.

Writers, read back: ``"pbrfit"`` (also the preview surface's own meaning) reads the
clearcoat's IOR from ``ior``; ``"blender"`` (Blender 5.0's exporter) writes Blender's raw
``ior`` and carries no coat IOR, so the coat IOR keeps Blender's default. Either way an
input named ``specular``, which only Blender's exporter writes (it is not a
UsdPreviewSurface input), is Blender's Specular IOR Level.
"""

from __future__ import annotations

from typing import Mapping

from ..params import normalize_material
from .common import (
    InputTable,
    LossList,
    MaterialFacts,
    TargetMapping,
    check_writer,
    color,
    is_white,
    read_carried,
    write_inputs,
)
from .fresnel import f0_from_ior

__all__ = ["to_usd_preview_surface", "from_usd_preview_surface"]

_INPUTS: InputTable = (
    ("diffuseColor", "base_color"),
    ("roughness", "roughness"),
    ("ior", None),
    ("clearcoat", "coat_weight"),
    ("clearcoatRoughness", "coat_roughness"),
    ("opacity", None),
)


def to_usd_preview_surface(material: Mapping[str, object]) -> TargetMapping:
    """Inputs of ``UsdPreviewSurface`` for a Blender material (see the module docstring)."""
    m = normalize_material(material)
    f = MaterialFacts(m)
    L = LossList("UsdPreviewSurface")
    inputs = write_inputs(_INPUTS, m, {"ior": f.eta, "opacity": 1.0})
    if f.tinted_dielectric and m["metallic"] == 0.0:
        f0 = f0_from_ior(f.eta)
        inputs["useSpecularWorkflow"] = 1
        inputs["specularColor"] = tuple(f0 * c for c in color(m["specular_tint"]))
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
        if not is_white(m["coat_tint"]):
            L.drop("coat_tint", "UsdPreviewSurface's clearcoat is untinted")
    f.drop_sheen(L, "UsdPreviewSurface has no sheen lobe")
    f.drop_subsurface(L, "UsdPreviewSurface has no subsurface scattering")
    if f.transmission:
        L.drop("transmission_weight", "UsdPreviewSurface opacity is coverage, not refraction")
    f.drop_thin_film(L, "UsdPreviewSurface has no thin film")
    return TargetMapping("UsdPreviewSurface", inputs, L.sorted())


def from_usd_preview_surface(inputs: Mapping[str, object], *, writer: str = "pbrfit") -> dict:
    """The Blender material that ``UsdPreviewSurface`` inputs stand for.

    Args:
        inputs: input name -> value; only inputs present are read, every parameter they do
            not determine takes Blender's default.
        writer: ``"pbrfit"`` or ``"blender"`` (see the module docstring).

    Returns:
        A full canonical material; the dielectric F0 comes back as ``ior`` (with the level
        from ``specular`` when present, else 0.5).
    """
    check_writer(writer)
    out = read_carried(_INPUTS, inputs)
    ior = float(inputs.get("ior", 1.5))
    if "ior" in inputs:
        out["ior"] = ior
        if writer == "pbrfit":
            out["coat_ior"] = ior
    if "specular" in inputs:
        out["specular_ior_level"] = float(inputs["specular"])
    if int(inputs.get("useSpecularWorkflow", 0)):
        out["metallic"] = 0.0
        f0 = f0_from_ior(ior)
        if "specularColor" in inputs:
            out["specular_tint"] = tuple(c / f0 for c in color(inputs["specularColor"])) if f0 > 0 \
                else (1.0, 1.0, 1.0)
    elif "metallic" in inputs:
        out["metallic"] = float(inputs["metallic"])
    return normalize_material(out, source="UsdPreviewSurface inputs")

