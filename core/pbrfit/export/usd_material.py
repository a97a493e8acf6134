"""Author a material as a USD ``UsdShade.Material`` for Omniverse and other USD renderers.

The material carries three surface networks, one per render context:

* ``outputs:mdl:surface`` -> an ``OmniPBR.mdl`` shader (``OmniPBR_ClearCoat.mdl`` when the
  material has a coat), ``info:implementationSource = "sourceAsset"``, sub-identifier
  ``OmniPBR`` / ``OmniPBR_ClearCoat`` (Omniverse RTX);
* ``outputs:surface`` (universal) -> a ``UsdPreviewSurface`` fallback;
* ``outputs:mtlx:surface`` -> an OpenPBR MaterialX network (``info:id =
  "ND_open_pbr_surface_surfaceshader"``, plus a tangent-rotation graph when the material
  is anisotropic with a rotation), when ``openpbr=True``.

Values come from :mod:`pbrfit.material_mapping`: colours are linear Rec.709 ``color3f``,
roughness is perceptual, OpenPBR thin film thickness is in micrometres. What each lossy
target drops or approximates is written on the Material prim (``customData["pbrfit"]
["losses"]``, per target) and, by :func:`write_usd_material`, in the layer's documentation
and ``customLayerData["pbrfit"]``. The exact Blender values are kept in the
Material's ``customData["pbrfit"]["principled"]`` so a reader can recover them losslessly
(:func:`stored_material`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from pxr import Gf, Sdf, Usd, UsdGeom, UsdShade, Vt

from ..atomic import atomic_path
from ..errors import InputError
from ..material_mapping import TargetMapping, to_omnipbr, to_openpbr, to_usd_preview_surface
from ..material_mapping.textures import NORMAL_INPUTS, OMNIPBR_TEXTURE_INPUTS, TEXTURE_INPUTS, unwired_lines
from ..params import PARAMETERS, normalize_material

__all__ = ["SHADER_NAMES", "AUTHORED_SHADERS", "author_material", "stored_material", "write_usd_material"]

#: Names of the shader prims authored under the Material.
SHADER_NAMES = {
    "mdl": "OmniPBR",
    "preview": "PreviewSurface",
    "openpbr": "OpenPBR",
}
#: Prims of the OpenPBR tangent-rotation graph, named ``OpenPBR_<suffix>``.
_TANGENT_GRAPH = ("tangent", "normal", "tangent_rotate", "tangent_normalize")
_MAP_NAMES = ("base_color", "roughness", "metallic", "specular_ior_level", "coat_weight", "coat_roughness", "normal")
#: every shader prim :func:`author_material` may author under a Material (anything else
#: there is the user's): the three networks, the OpenPBR tangent graph, the maps' readers
AUTHORED_SHADERS = frozenset(
    list(SHADER_NAMES.values()) + [f"{SHADER_NAMES['openpbr']}_{s}" for s in _TANGENT_GRAPH]
    + [f"{SHADER_NAMES[k]}_{n}_map" for k in ("preview", "openpbr") for n in _MAP_NAMES]
    + [f"{SHADER_NAMES['preview']}_uv", f"{SHADER_NAMES['openpbr']}_normal_decode"])
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SUFFIXES = (".usda", ".usd", ".usdc")
_HEADER = ("pbrfit export of a Blender 5.0 Principled BSDF material: OmniPBR (MDL), "
           "UsdPreviewSurface fallback and OpenPBR (MaterialX). Colours are linear Rec.709, "
           "roughness perceptual.")


def _sdf_value(value) -> tuple[Sdf.ValueTypeName, object]:
    if isinstance(value, bool):
        return Sdf.ValueTypeNames.Bool, value
    if isinstance(value, int):
        return Sdf.ValueTypeNames.Int, value
    if isinstance(value, tuple):
        return Sdf.ValueTypeNames.Color3f, Gf.Vec3f(*(float(v) for v in value))
    return Sdf.ValueTypeNames.Float, float(value)


def _set_inputs(shader: UsdShade.Shader, mapping: TargetMapping) -> None:
    for key, value in mapping.inputs.items():
        type_name, v = _sdf_value(value)
        shader.CreateInput(key, type_name).Set(v)


def _remove_authored(stage: Usd.Stage, material_path: Sdf.Path) -> None:
    """Remove shader prims a previous call authored (in the current edit target)."""
    for n in AUTHORED_SHADERS:
        child = material_path.AppendChild(n)
        if stage.GetPrimAtPath(child):
            stage.RemovePrim(child)


def _wire_preview_maps(stage, mat: UsdShade.Material, shader: UsdShade.Shader, textures: Mapping) -> None:
    """UsdUVTexture (+ one UsdPrimvarReader_float2 of the map's UV primvar) per map into
    the UsdPreviewSurface's input; texels are linear, so ``sourceColorSpace = raw``."""
    reader = None
    for name, entry in textures.items():
        key = NORMAL_INPUTS["UsdPreviewSurface"] if name == "normal" else TEXTURE_INPUTS["UsdPreviewSurface"].get(name)
        if key is None:
            continue
        if reader is None:
            reader = UsdShade.Shader.Define(stage, mat.GetPath().AppendChild(f"{SHADER_NAMES['preview']}_uv"))
            reader.CreateIdAttr("UsdPrimvarReader_float2")
            reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set(entry["uv"])
            st = reader.CreateOutput("result", Sdf.ValueTypeNames.Float2)
        tex = UsdShade.Shader.Define(stage, mat.GetPath().AppendChild(f"{SHADER_NAMES['preview']}_{name}_map"))
        tex.CreateIdAttr("UsdUVTexture")
        tex.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(Sdf.AssetPath(entry["file"]))
        tex.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(st)
        tex.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("raw")
        for wrap in ("wrapS", "wrapT"):
            tex.CreateInput(wrap, Sdf.ValueTypeNames.Token).Set("repeat")
        if name == "normal":  # encoded (n + 1) / 2: UsdUVTexture decodes with scale 2, bias -1
            tex.CreateInput("scale", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(2, 2, 2, 1))
            tex.CreateInput("bias", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(-1, -1, -1, 0))
            out = tex.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
            shader.CreateInput(key, Sdf.ValueTypeNames.Normal3f).ConnectToSource(out)
        elif entry["channels"] == 3:
            out = tex.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
            shader.CreateInput(key, Sdf.ValueTypeNames.Color3f).ConnectToSource(out)
        else:
            out = tex.CreateOutput("r", Sdf.ValueTypeNames.Float)
            shader.CreateInput(key, Sdf.ValueTypeNames.Float).ConnectToSource(out)


def _wire_openpbr_maps(stage, mat: UsdShade.Material, shader: UsdShade.Shader, textures: Mapping) -> None:
    """MaterialX ``image`` nodes (UV set 0, periodic) into the OpenPBR shader's inputs."""
    for name, entry in textures.items():
        if name == "normal":
            image = _mtlx_node(stage, mat, "normal_map", "ND_image_vector3")
            image.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(Sdf.AssetPath(entry["file"]))
            vec3 = Sdf.ValueTypeNames.Float3
            decode = _mtlx_node(stage, mat, "normal_decode", "ND_normalmap_float")
            decode.CreateInput("in", vec3).ConnectToSource(image.CreateOutput("out", vec3))
            key = NORMAL_INPUTS["open_pbr_surface"]
            shader.CreateInput(key, vec3).ConnectToSource(decode.CreateOutput("out", vec3))
            continue
        key = TEXTURE_INPUTS["open_pbr_surface"].get(name)
        if key is None:
            continue
        color = entry["channels"] == 3
        node = _mtlx_node(stage, mat, f"{name}_map", "ND_image_color3" if color else "ND_image_float")
        file = node.CreateInput("file", Sdf.ValueTypeNames.Asset)
        file.Set(Sdf.AssetPath(entry["file"]))
        if color:
            file.GetAttr().SetColorSpace(entry["colorspace"])
        kind = Sdf.ValueTypeNames.Color3f if color else Sdf.ValueTypeNames.Float
        shader.CreateInput(key, kind).ConnectToSource(node.CreateOutput("out", kind))


def _wire_omnipbr_maps(shader: UsdShade.Shader, textures: Mapping) -> None:
    """OmniPBR's texture inputs (asset paths; linear, so colour space ``raw``) and their
    influences."""
    for name, entry in textures.items():
        if name not in OMNIPBR_TEXTURE_INPUTS:
            continue
        key, influence = OMNIPBR_TEXTURE_INPUTS[name]
        attr = shader.CreateInput(key, Sdf.ValueTypeNames.Asset)
        attr.Set(Sdf.AssetPath(entry["file"]))
        attr.GetAttr().SetColorSpace("raw")
        if influence is not None:
            shader.CreateInput(influence, Sdf.ValueTypeNames.Float).Set(1.0)


def _author_mdl(stage, mat: UsdShade.Material, mapping: TargetMapping) -> None:
    shader = UsdShade.Shader.Define(stage, mat.GetPath().AppendChild(SHADER_NAMES["mdl"]))
    shader.CreateImplementationSourceAttr(UsdShade.Tokens.sourceAsset)
    shader.SetSourceAsset(Sdf.AssetPath(f"{mapping.target}.mdl"), "mdl")
    shader.SetSourceAssetSubIdentifier(mapping.target, "mdl")
    _set_inputs(shader, mapping)
    out = shader.CreateOutput("out", Sdf.ValueTypeNames.Token)
    mat.CreateSurfaceOutput("mdl").ConnectToSource(out)


def _author_preview(stage, mat: UsdShade.Material, mapping: TargetMapping) -> None:
    shader = UsdShade.Shader.Define(stage, mat.GetPath().AppendChild(SHADER_NAMES["preview"]))
    shader.CreateIdAttr("UsdPreviewSurface")
    _set_inputs(shader, mapping)
    out = shader.CreateOutput("surface", Sdf.ValueTypeNames.Token)
    mat.CreateSurfaceOutput().ConnectToSource(out)


def _mtlx_node(stage, mat: UsdShade.Material, suffix: str, node_id: str) -> UsdShade.Shader:
    shader = UsdShade.Shader.Define(stage, mat.GetPath().AppendChild(f"{SHADER_NAMES['openpbr']}_{suffix}"))
    shader.CreateIdAttr(node_id)
    return shader


def _author_openpbr(stage, mat: UsdShade.Material, mapping: TargetMapping) -> None:
    shader = UsdShade.Shader.Define(stage, mat.GetPath().AppendChild(SHADER_NAMES["openpbr"]))
    shader.CreateIdAttr("ND_open_pbr_surface_surfaceshader")
    _set_inputs(shader, mapping)
    out = shader.CreateOutput("out", Sdf.ValueTypeNames.Token)
    mat.CreateSurfaceOutput("mtlx").ConnectToSource(out)
    if mapping.tangent_rotation is None:
        return
    vec3 = Sdf.ValueTypeNames.Float3
    tangent = _mtlx_node(stage, mat, "tangent", "ND_tangent_vector3")
    tangent.CreateInput("space", Sdf.ValueTypeNames.String).Set("world")
    normal = _mtlx_node(stage, mat, "normal", "ND_normal_vector3")
    normal.CreateInput("space", Sdf.ValueTypeNames.String).Set("world")
    rotate = _mtlx_node(stage, mat, "tangent_rotate", "ND_rotate3d_vector3")
    rotate.CreateInput("in", vec3).ConnectToSource(tangent.CreateOutput("out", vec3))
    rotate.CreateInput("amount", Sdf.ValueTypeNames.Float).Set(float(mapping.tangent_rotation))
    rotate.CreateInput("axis", vec3).ConnectToSource(normal.CreateOutput("out", vec3))
    unit = _mtlx_node(stage, mat, "tangent_normalize", "ND_normalize_vector3")
    unit.CreateInput("in", vec3).ConnectToSource(rotate.CreateOutput("out", vec3))
    shader.CreateInput("geometry_tangent", vec3).ConnectToSource(unit.CreateOutput("out", vec3))


def _principled_dict(m: dict) -> dict:
    return {n: (Gf.Vec3d(*m[n]) if PARAMETERS[n].size == 3 else float(m[n])) for n in PARAMETERS}


def stored_material(material: UsdShade.Material) -> dict | None:
    """The canonical values :func:`author_material` stored on ``material`` (doubles, exact),
    or None when it has none readable (another writer's material, or customData dropped).

    They describe the shaders as pbrfit authored them; whether those were edited since is
    the reader's to check (:meth:`pbrfit.material_mapping.TargetMapping.agrees_with`).
    """
    data = material.GetPrim().GetCustomDataByKey("pbrfit")
    stored = data.get("principled") if isinstance(data, dict) else None
    if not isinstance(stored, dict):
        return None
    values = {n: (list(v) if hasattr(v, "__len__") else v) for n, v in stored.items()}
    try:
        return normalize_material(values, source=f"{material.GetPath()} customData pbrfit.principled")
    except InputError:
        return None


def author_material(stage: Usd.Stage, material_path: str, material: Mapping[str, object], *,
                    openpbr: bool = True, textures: Mapping[str, Mapping] | None = None
                    ) -> tuple[UsdShade.Material, list[str]]:
    """Define (or re-author) the Material at ``material_path`` on ``stage``'s edit target.

    Shader prims this function authored before under that Material (``OmniPBR``,
    ``PreviewSurface``, ``OpenPBR`` and the ``OpenPBR_*`` tangent graph) are replaced; other
    children are left alone. The Material's three surface outputs are (re)connected.

    Args:
        stage: any stage; edits go to its current edit target.
        material_path: absolute prim path of the Material.
        material: canonical Blender values (see :mod:`pbrfit.params`).
        openpbr: also author the OpenPBR MaterialX network on ``outputs:mtlx:surface``.
        textures: fitted maps (material.json's ``textures``; files relative to the layer
            the material is authored in), wired into every network that can take them
            (:mod:`pbrfit.material_mapping.textures`).

    Returns:
        The Material and the losses of every authored target, one line each,
        ``"target: param kind: reason"``.

    Raises:
        InputError: a bad path or bad material values.
    """
    if not Sdf.Path.IsValidPathString(str(material_path)):
        raise InputError(f"material path {material_path!r} is not a valid USD prim path; use e.g. /Looks/paint")
    path = Sdf.Path(str(material_path))
    if not (path.IsAbsolutePath() and path.IsPrimPath()) or path == Sdf.Path.absoluteRootPath:
        raise InputError(f"material path {material_path!r} must be an absolute prim path, e.g. /Looks/paint")
    existing = stage.GetPrimAtPath(path)
    if existing and not existing.IsA(UsdShade.Material) and existing.GetTypeName():
        raise InputError(f"{path}: is a {existing.GetTypeName()}, not a Material; choose another path")
    m = normalize_material(material, source=str(path))

    mdl = to_omnipbr(m)
    preview = to_usd_preview_surface(m)
    mappings = [mdl, preview] + ([to_openpbr(m)] if openpbr else [])

    mat = UsdShade.Material.Define(stage, path)
    _remove_authored(stage, path)
    textures = dict(textures or {})
    _author_mdl(stage, mat, mdl)
    _author_preview(stage, mat, preview)
    if textures:
        _wire_omnipbr_maps(UsdShade.Shader.Get(stage, path.AppendChild(SHADER_NAMES["mdl"])), textures)
        _wire_preview_maps(stage, mat, UsdShade.Shader.Get(stage, path.AppendChild(SHADER_NAMES["preview"])),
                           textures)
    if openpbr:
        _author_openpbr(stage, mat, mappings[2])
        if textures:
            _wire_openpbr_maps(stage, mat, UsdShade.Shader.Get(stage, path.AppendChild(SHADER_NAMES["openpbr"])),
                               textures)
    else:
        mtlx_out = mat.GetSurfaceOutput("mtlx")
        if mtlx_out:
            mtlx_out.ClearSources()

    lines = [line for mp in mappings for line in mp.messages() + unwired_lines(mp.target, textures)]
    prim = mat.GetPrim()
    prim.SetCustomDataByKey("pbrfit", {
        "principled": _principled_dict(m),
        "losses": {mp.target: Vt.StringArray(mp.messages() + unwired_lines(mp.target, textures)) for mp in mappings},
    })
    prim.SetDocumentation(
        f"pbrfit material (Blender 5.0 Principled BSDF). {len(lines)} parameter losses across "
        f"{', '.join(mp.target for mp in mappings)}; see customData pbrfit.losses.")
    return mat, lines


def write_usd_material(material: Mapping[str, object], path: str | os.PathLike, *,
                       name: str = "pbrfit_material", openpbr: bool = True,
                       textures: Mapping[str, Mapping] | None = None) -> list[str]:
    """Write ``material`` to a USD layer (atomically) as ``/pbrfit/<name>``.

    The layer's default prim is the ``/pbrfit`` Scope. The losses go into the layer's
    documentation and ``customLayerData["pbrfit"]["losses"]`` (per target) as well.

    Returns:
        The losses, one line each, ``"target: param kind: reason"``.

    Raises:
        InputError: bad material values, a bad name or extension, or the file cannot be
            written there.
    """
    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise InputError(f"{path}: a USD material file must end in {', '.join(_SUFFIXES)}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"material name {name!r} is not a valid identifier; use letters, digits and _")
    stage = Usd.Stage.CreateInMemory()
    scope = UsdGeom.Scope.Define(stage, "/pbrfit")
    stage.SetDefaultPrim(scope.GetPrim())
    mat, lines = author_material(stage, f"/pbrfit/{name}", material, openpbr=openpbr, textures=textures)

    layer = stage.GetRootLayer()
    per_target = mat.GetPrim().GetCustomDataByKey("pbrfit")["losses"]
    layer.documentation = _HEADER + " " + (
        "Dropped or approximated: " + "; ".join(lines) if lines else "Nothing dropped or approximated.")
    layer.customLayerData = {"pbrfit": {"material": f"/pbrfit/{name}", "losses": per_target}}
    with atomic_path(path, what="USD material file") as tmp:
        if not layer.Export(str(tmp)):
            raise RuntimeError(f"USD could not export the material layer to {tmp}")
    return lines
