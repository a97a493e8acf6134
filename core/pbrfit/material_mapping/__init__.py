"""Blender 5.0 Principled BSDF values <-> the inputs of each export target, both directions.

The one place that knows how pbrfit's canonical material (see :mod:`pbrfit.params`) is
expressed in other shading models: exporting (:mod:`pbrfit.export`), reading a stage's
bound material (:mod:`pbrfit.usd_stage`) and the tests all use it. Canonical values mean
exactly what Blender 5.0's Principled BSDF sockets mean: linear Rec.709 colours, perceptual
roughness (GGX alpha = r**2), ``anisotropic_rotation`` in turns, ``thin_film_thickness`` in
nanometres, ``subsurface_radius`` x ``subsurface_scale`` = mean free path in scene units.

Targets (names as their node definitions spell them), one module each, holding the table of
inputs that both directions are built from and the conversions, with their derivations:

* ``open_pbr_surface``   MaterialX OpenPBR (:mod:`.openpbr`);
* ``standard_surface``   MaterialX Autodesk Standard Surface (:mod:`.standard_surface`);
* ``UsdPreviewSurface``  USD's preview material (:mod:`.usd_preview_surface`);
* ``OmniPBR``            NVIDIA ``OmniPBR.mdl`` (Omniverse RTX) (:mod:`.omnipbr`);
* ``OmniPBR_ClearCoat``  NVIDIA ``OmniPBR_ClearCoat.mdl``.

Each ``to_*`` function returns a :class:`TargetMapping`: the target's input values (plain
Python: ``float``, ``bool``, ``int`` or a 3-tuple for a colour) and the :class:`Loss` list
of canonical parameters that the target drops or only approximates *for this material* (a
parameter that has no effect in Blender, e.g. sheen tint at sheen weight 0, is not
reported). Each ``from_*`` function reads inputs back into a full canonical material: only
the inputs present are read, the rest is Blender's default. Where Blender has two knobs for
one target quantity the result is one Blender-equivalent choice (the dielectric F0 as
``ior`` at a stated level, the mean free path as a normalized radius times a scale), so
``from_*(to_*(m))`` renders like ``m`` in Blender wherever the target carries ``m`` exactly.
A reader that has the exact values (pbrfit stores them beside what it writes) should
prefer them.

Readers take the *writer* whose conventions the inputs follow (:data:`WRITERS`), where
writers differ: pbrfit (and each format's own definition) or Blender 5.0's USD exporter,
which writes OpenPBR anisotropy with its own approximation.

Fresnel helpers (:mod:`.fresnel`): :func:`f0_from_ior`, :func:`ior_from_f0` and
:func:`effective_ior`, Cycles' IOR after Specular IOR Level.
"""

from __future__ import annotations

from typing import Callable, Mapping

from .common import WRITERS, Loss, TargetMapping
from .fresnel import effective_ior, f0_from_ior, ior_from_f0
from .omnipbr import from_omnipbr, omnipbr_target, to_omnipbr
from .openpbr import ANISOTROPY_CONVENTIONS, AnisotropyConvention, from_openpbr, openpbr_roughness_scale, to_openpbr
from .standard_surface import from_standard_surface, to_standard_surface
from .usd_preview_surface import from_usd_preview_surface, to_usd_preview_surface

__all__ = [
    "TARGETS",
    "EXPORT_TARGETS",
    "export_losses",
    "WRITERS",
    "Loss",
    "TargetMapping",
    "map_material",
    "f0_from_ior",
    "ior_from_f0",
    "effective_ior",
    "AnisotropyConvention",
    "ANISOTROPY_CONVENTIONS",
    "openpbr_roughness_scale",
    "omnipbr_target",
    "to_openpbr",
    "to_standard_surface",
    "to_usd_preview_surface",
    "to_omnipbr",
    "from_openpbr",
    "from_standard_surface",
    "from_usd_preview_surface",
    "from_omnipbr",
]

TARGETS: tuple[str, ...] = (
    "open_pbr_surface", "standard_surface", "UsdPreviewSurface", "OmniPBR", "OmniPBR_ClearCoat",
)

_MAPPERS: dict[str, Callable[[Mapping[str, object]], TargetMapping]] = {
    "open_pbr_surface": to_openpbr,
    "standard_surface": to_standard_surface,
    "UsdPreviewSurface": to_usd_preview_surface,
    "OmniPBR": lambda m: to_omnipbr(m, clearcoat=False),
    "OmniPBR_ClearCoat": lambda m: to_omnipbr(m, clearcoat=True),
}


#: the targets pbrfit writes a material to: MaterialX (OpenPBR, standard_surface) and USD
#: (OmniPBR or OmniPBR_ClearCoat, UsdPreviewSurface, the OpenPBR network)
EXPORT_TARGETS = ("open_pbr_surface", "standard_surface", "UsdPreviewSurface", "OmniPBR")


def export_losses(material: Mapping[str, object]) -> dict[str, list[str]]:
    """What each export target drops or approximates of ``material``: ``{target: lines}``
    (only targets that lose something). OmniPBR stands for the OmniPBR variant written
    (:func:`omnipbr_target`)."""
    out = {}
    for target in EXPORT_TARGETS:
        name = omnipbr_target(material) if target == "OmniPBR" else target
        lines = map_material(material, name).messages()
        if lines:
            out[name] = lines
    return out


def map_material(material: Mapping[str, object], target: str) -> TargetMapping:
    """The inputs and losses of ``target`` (one of :data:`TARGETS`) for ``material``."""
    try:
        mapper = _MAPPERS[target]
    except KeyError:
        raise ValueError(f"unknown export target {target!r}; known: {', '.join(TARGETS)}") from None
    return mapper(material)
