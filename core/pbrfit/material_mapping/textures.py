"""Which input of each target takes a fitted texture map of a canonical parameter.

A map can be wired only where the target's input carries the parameter unchanged (its
scalar mapping writes the value as is); elsewhere the target gets the map's mean (the value
under ``parameters`` in material.json) and the export reports it. Where a target's input
exists only for textures (OmniPBR), the table names that input and the influence input
that switches it on.

Shared by the MaterialX and USD exporters and the Omniverse write-back: the one place this
knowledge lives (Blender's Principled BSDF takes every map on the parameter's own socket,
``pbrfit_blender.sockets.SOCKETS``).
"""

from __future__ import annotations

__all__ = ["TEXTURE_INPUTS", "OMNIPBR_TEXTURE_INPUTS", "NORMAL_INPUTS", "unwired_lines"]

#: {target: {canonical parameter: input name}} for targets whose inputs take a connection
TEXTURE_INPUTS: dict[str, dict[str, str]] = {
    "open_pbr_surface": {"base_color": "base_color", "roughness": "specular_roughness",
                         "metallic": "base_metalness", "coat_weight": "coat_weight",
                         "coat_roughness": "coat_roughness"},
    "standard_surface": {"base_color": "base_color", "roughness": "specular_roughness",
                         "metallic": "metalness", "coat_weight": "coat", "coat_roughness": "coat_roughness"},
    "UsdPreviewSurface": {"base_color": "diffuseColor", "roughness": "roughness", "metallic": "metallic",
                          "coat_weight": "clearcoat", "coat_roughness": "clearcoatRoughness"},
}

#: OmniPBR's texture inputs: {parameter: (asset input, influence input or None)}
OMNIPBR_TEXTURE_INPUTS: dict[str, tuple[str, str | None]] = {
    "base_color": ("diffuse_texture", None),
    "roughness": ("reflectionroughness_texture", "reflection_roughness_texture_influence"),
    "metallic": ("metallic_texture", "metallic_texture_influence"),
    "normal": ("normalmap_texture", None),
}

#: where a tangent-space normal map goes (through a ``normalmap`` node in MaterialX, a
#: scale 2 / bias -1 UsdUVTexture for UsdPreviewSurface)
NORMAL_INPUTS: dict[str, str] = {"open_pbr_surface": "geometry_normal", "standard_surface": "normal",
                                 "UsdPreviewSurface": "normal"}

def unwired_lines(target: str, maps) -> list[str]:
    """One line per map ``target`` cannot take, in the exporters' loss format."""
    table = (OMNIPBR_TEXTURE_INPUTS if target.startswith("OmniPBR")
             else {**TEXTURE_INPUTS.get(target, {}), **({"normal": NORMAL_INPUTS[target]} if target in NORMAL_INPUTS
                                                       else {})})
    return [f"{target}: {name} map: no texture input carries it unchanged; written as the map's mean"
            for name in maps if name not in table]
