"""Canonical pbrfit parameter names -> Blender 5.0 Principled BSDF input socket names.

The one copy of this table in the project: the add-on writes materials through it and
``scripts/cycles_reference.py`` imports it from here. No bpy: importable anywhere.
"""

from __future__ import annotations

__all__ = ["SOCKETS", "MODEL_SETTINGS", "MODEL_SETTING_LABELS"]

#: Canonical pbrfit parameter name -> Blender 5.0 Principled BSDF input socket.
SOCKETS: dict[str, str] = {
    "base_color": "Base Color",
    "metallic": "Metallic",
    "roughness": "Roughness",
    "ior": "IOR",
    "specular_ior_level": "Specular IOR Level",
    "specular_tint": "Specular Tint",
    "anisotropic": "Anisotropic",
    "anisotropic_rotation": "Anisotropic Rotation",
    "coat_weight": "Coat Weight",
    "coat_roughness": "Coat Roughness",
    "coat_ior": "Coat IOR",
    "coat_tint": "Coat Tint",
    "sheen_weight": "Sheen Weight",
    "sheen_roughness": "Sheen Roughness",
    "sheen_tint": "Sheen Tint",
    "subsurface_weight": "Subsurface Weight",
    "subsurface_radius": "Subsurface Radius",
    "subsurface_scale": "Subsurface Scale",
    "transmission_weight": "Transmission Weight",
    "thin_film_thickness": "Thin Film Thickness",
    "thin_film_ior": "Thin Film IOR",
}

#: The Principled BSDF node settings pbrfit's renderers model (Blender 5.0 enum identifiers):
#: Cycles' Multiscatter GGX and its Random Walk subsurface (refracted entry through GGX alpha
#: roughness^2 at the Principled IOR). Fitted values only render as fitted under these; the
#: add-on's write-back switches a node to them (restored with the values) and says so.
MODEL_SETTINGS: dict[str, str] = {"distribution": "MULTI_GGX", "subsurface_method": "RANDOM_WALK"}
#: the UI names of those settings and of their values, for messages
MODEL_SETTING_LABELS: dict[str, str] = {
    "distribution": "Distribution", "subsurface_method": "Subsurface Method",
    "GGX": "GGX", "MULTI_GGX": "Multiscatter GGX", "BURLEY": "Christensen-Burley",
    "RANDOM_WALK": "Random Walk", "RANDOM_WALK_SKIN": "Random Walk (Skin)",
}
