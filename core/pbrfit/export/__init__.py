"""Material exporters: MaterialX (OpenPBR + Standard Surface) and USD (OmniPBR MDL,
UsdPreviewSurface fallback, OpenPBR MaterialX network).

Input everywhere is a material under pbrfit's canonical names with Blender 5.0 Principled
BSDF semantics (see :mod:`pbrfit.params`). Every exporter returns the list of what its
targets drop or approximate, one line each; :mod:`pbrfit.material_mapping` holds the value
conversions (both directions) and is the one place to change them.
"""

from .materialx import materialx_document, write_materialx
from .usd_material import author_material, write_usd_material

__all__ = [
    "materialx_document",
    "write_materialx",
    "author_material",
    "write_usd_material",
]
