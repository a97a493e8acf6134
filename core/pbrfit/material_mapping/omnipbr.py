"""Blender's Principled BSDF <-> NVIDIA ``OmniPBR.mdl`` / ``OmniPBR_ClearCoat.mdl`` (Omniverse RTX).

OmniPBR's reflectance (OmniPBR.mdl: ``df::custom_curve_layer(normal_reflectivity: 0.08,
grazing_reflectivity: 1, weight: specular_level, ...)``, metals through
``df::directional_factor(base_color, base_color)``) is matched at normal incidence:
``specular_level = F0 / 0.08`` with F0 from Blender's level-adjusted IOR. Read back, that
F0 is put at IOR 1.5, where it is ``specular_ior_level = specular_level``. The coat needs
``OmniPBR_ClearCoat.mdl``; anisotropy, sheen, subsurface, transmission, thin film and
specular tint cannot be carried.
"""

from __future__ import annotations

from typing import Mapping

from ..params import normalize_material
from .common import InputTable, LossList, MaterialFacts, TargetMapping, is_white, read_carried, write_inputs
from .fresnel import f0_from_ior

__all__ = ["omnipbr_target", "to_omnipbr", "from_omnipbr"]

#: OmniPBR's dielectric layer reflects 0.08 * specular_level at normal incidence.
_F0_AT_LEVEL_1 = 0.08
#: The IOR a read-back dielectric F0 is expressed at (Blender's default).
_READ_IOR = 1.5

_INPUTS: InputTable = (
    ("diffuse_color_constant", "base_color"),
    ("reflection_roughness_constant", "roughness"),
    ("metallic_constant", "metallic"),
    ("specular_level", None),
)
#: Written, and read, only with ``enable_clearcoat``.
_CLEARCOAT_INPUTS: InputTable = (
    ("enable_clearcoat", None),
    ("clearcoat_weight", "coat_weight"),
    ("clearcoat_reflection_roughness", "coat_roughness"),
    ("clearcoat_ior", "coat_ior"),
    ("clearcoat_tint", "coat_tint"),
    ("clearcoat_transparency", None),
)


def omnipbr_target(material: Mapping[str, object]) -> str:
    """``"OmniPBR_ClearCoat"`` when the material has a coat (coat_weight > 0), else ``"OmniPBR"``."""
    return "OmniPBR_ClearCoat" if normalize_material(material)["coat_weight"] > 0.0 else "OmniPBR"


def to_omnipbr(material: Mapping[str, object], *, clearcoat: bool | None = None) -> TargetMapping:
    """Inputs of ``OmniPBR.mdl`` (or ``OmniPBR_ClearCoat.mdl``) for a Blender material.

    Args:
        clearcoat: use OmniPBR_ClearCoat; None picks it when coat_weight > 0.
    """
    m = normalize_material(material)
    f = MaterialFacts(m)
    if clearcoat is None:
        clearcoat = f.coat
    target = "OmniPBR_ClearCoat" if clearcoat else "OmniPBR"
    L = LossList(target)
    level = f0_from_ior(f.eta) / _F0_AT_LEVEL_1
    inputs = write_inputs(_INPUTS, m, {"specular_level": min(level, 1.0)})
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
        inputs.update(write_inputs(_CLEARCOAT_INPUTS, m, {"enable_clearcoat": True, "clearcoat_transparency": 1.0}))
        if f.coat and not is_white(m["coat_tint"]):
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


def from_omnipbr(inputs: Mapping[str, object]) -> dict:
    """The Blender material that ``OmniPBR`` / ``OmniPBR_ClearCoat`` inputs stand for (only
    inputs present are read; every parameter they do not determine takes Blender's default;
    ``clearcoat_weight`` defaults to 1 when the coat is enabled, as in OmniPBR_ClearCoat)."""
    out = read_carried(_INPUTS, inputs)
    if "specular_level" in inputs:
        out["ior"] = _READ_IOR
        out["specular_ior_level"] = float(inputs["specular_level"]) * _F0_AT_LEVEL_1 / (2.0 * f0_from_ior(_READ_IOR))
    if bool(inputs.get("enable_clearcoat", False)):
        out.update(read_carried(_CLEARCOAT_INPUTS, inputs))
        out.setdefault("coat_weight", 1.0)
    return normalize_material(out, source="OmniPBR inputs")
