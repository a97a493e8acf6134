"""The material bound to a mesh on a stage, read as canonical (Blender Principled) values.

Read from the material bound to the mesh (``ComputeBoundMaterial``), preferring the most
complete network: an OpenPBR MaterialX shader (``ND_open_pbr_surface_surfaceshader`` on
``outputs:mtlx:surface``), then OmniPBR / OmniPBR_ClearCoat (MDL, ``outputs:mdl:surface``),
then UsdPreviewSurface (``outputs:surface``). Only inputs with an authored, finite value
and no connection are used, plus, for OpenPBR, the ``rotate3d`` amount of the graph feeding
``geometry_tangent`` (the anisotropic rotation); everything else stays at Blender's
default, and the result is clamped to the fit's bounds. Which reading applies:

1. pbrfit wrote the material (write-back, ``write_usd_material``): the exact canonical
   values it stored beside the shaders (:func:`pbrfit.export.usd_material.stored_material`),
   as long as the shader still holds exactly what pbrfit's mapping gives for them;
   otherwise someone edited it since, and it is read as in 3.
2. Blender's exporter wrote the shader (a layer holding it has Blender's ``doc``):
   :mod:`pbrfit.material_mapping`'s inverse with Blender's conventions (OpenPBR
   anisotropy ``0.7 x Anisotropic`` with the roughness unchanged, the tangent turned by
   ``-(360 x rotation + 90)`` degrees; no coat IOR on the preview surface).
3. Anyone else: the same inverse with each format's own meaning, which is pbrfit's.

The mapping (names, units: OpenPBR ``specular_weight`` is twice Specular IOR Level, its thin
film is in micrometres, UsdPreviewSurface's ``specular`` is Blender's extension carrying
the level) is :mod:`pbrfit.material_mapping`'s, the one pbrfit writes with.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pxr import Gf, Usd, UsdShade

from .export.usd_material import stored_material
from .material_mapping import from_omnipbr, from_openpbr, from_usd_preview_surface, map_material
from .params import PARAMETERS, normalize_material

__all__ = ["read_bound_material"]

_OPENPBR_ID = "ND_open_pbr_surface_surfaceshader"
_OMNIPBR = ("OmniPBR", "OmniPBR_ClearCoat")


def _inputs(shader: UsdShade.Shader, time) -> dict:
    """Authored, unconnected, finite input values of ``shader`` by base name."""
    out = {}
    for inp in shader.GetInputs():
        if inp.HasConnectedSource():
            continue
        attr = inp.GetAttr()
        if not attr.HasAuthoredValue():
            continue
        v = attr.Get(time)
        if v is None:
            continue
        if isinstance(v, (Gf.Vec3f, Gf.Vec3d, Gf.Vec4f, Gf.Vec2f)):
            v = [float(x) for x in v]
        if isinstance(v, (bool, int, float, list)) and not all(math.isfinite(x) for x in np.ravel(v)):
            continue
        out[inp.GetBaseName()] = v
    return out


def _tangent_rotation(shader: UsdShade.Shader, time) -> float | None:
    """The ``amount`` (degrees) of the ``rotate3d`` node whose output, through any
    ``normalize`` nodes, is the shader's ``geometry_tangent``; None when there is none.

    Both pbrfit and Blender's exporter write the tangent as normalize(rotate3d(world tangent,
    amount, world normal)); what the amount means is the writer's convention
    (:data:`pbrfit.material_mapping.ANISOTROPY_CONVENTIONS`).
    """
    port = shader.GetInput("geometry_tangent")
    for _ in range(8):  # a short chain; also ends a cycle
        sources = port.GetValueProducingAttributes(shaderOutputsOnly=True) if port else []
        if len(sources) != 1:
            return None
        node = UsdShade.Shader(sources[0].GetPrim())
        node_id = node.GetIdAttr().Get()
        if node_id == "ND_rotate3d_vector3":
            amount = node.GetInput("amount")
            value = amount.Get(time) if amount and not amount.HasConnectedSource() else None
            return None if value is None else float(value)
        if node_id != "ND_normalize_vector3":
            return None
        port = node.GetInput("in")
    return None


def _written_by_blender(prim: Usd.Prim) -> bool:
    """Whether Blender's USD exporter wrote the prim: a layer holding one of its specs has
    Blender's ``doc`` ("Blender v5.0.1", written on every layer it exports)."""
    return any(spec.layer.documentation.startswith("Blender v") for spec in prim.GetPrimStack())


def _clamp_to_bounds(values: dict) -> dict:
    out = {}
    for name, v in values.items():
        spec = PARAMETERS[name]
        if isinstance(v, list):
            out[name] = [min(max(x, spec.lower), spec.upper) for x in v]
        else:
            out[name] = min(max(v, spec.lower), spec.upper)
    return out


def _surface_shader(material: UsdShade.Material, context: str) -> UsdShade.Shader | None:
    output = material.GetSurfaceOutput(context)
    if not output:
        return None
    for attr in output.GetValueProducingAttributes():
        prim = attr.GetPrim()
        if prim.IsA(UsdShade.Shader):
            return UsdShade.Shader(prim)
    return None


def _most_complete_shader(material: UsdShade.Material) -> tuple[str, UsdShade.Shader] | None:
    """(kind, shader): OpenPBR, else OmniPBR / OmniPBR_ClearCoat, else UsdPreviewSurface."""
    shader = _surface_shader(material, "mtlx")
    if shader and shader.GetIdAttr().Get() == _OPENPBR_ID:
        return "OpenPBR", shader
    shader = _surface_shader(material, "mdl")
    if shader:
        sub = shader.GetSourceAssetSubIdentifier("mdl") or ""
        asset = shader.GetSourceAsset("mdl")
        asset_name = Path(asset.path).stem if asset else ""
        if sub in _OMNIPBR or asset_name in _OMNIPBR:
            return sub or asset_name, shader
    shader = _surface_shader(material, UsdShade.Tokens.universalRenderContext)
    if shader and shader.GetIdAttr().Get() == "UsdPreviewSurface":
        return "UsdPreviewSurface", shader
    return None


def read_bound_material(mesh_prim: Usd.Prim, time) -> tuple[dict, str]:
    """(canonical values, "shader path (kind)") of the material bound to the mesh;
    ({}, "") when none is bound or none of its shaders can be read."""
    material, _ = UsdShade.MaterialBindingAPI(mesh_prim).ComputeBoundMaterial()
    found = _most_complete_shader(material) if material else None
    if found is None:
        return {}, ""
    kind, shader = found
    inputs = _inputs(shader, time)
    rotation = _tangent_rotation(shader, time) if kind == "OpenPBR" else None
    stored = stored_material(material)
    target = "open_pbr_surface" if kind == "OpenPBR" else kind
    if stored is not None and map_material(stored, target).agrees_with(inputs, rotation):
        values = stored  # pbrfit wrote these shaders and nobody changed them since
    else:
        writer = "blender" if _written_by_blender(shader.GetPrim()) else "pbrfit"
        if kind == "OpenPBR":
            values = from_openpbr(inputs, rotation, writer=writer)
        elif kind == "UsdPreviewSurface":
            values = from_usd_preview_surface(inputs, writer=writer)
        else:
            values = from_omnipbr(inputs)
    return (normalize_material(_clamp_to_bounds(values), source=f"material {material.GetPath()}"),
            f"{shader.GetPath()} ({kind})")
