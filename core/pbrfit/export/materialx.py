"""Write a material as a MaterialX 1.39 document: an OpenPBR and a Standard Surface material.

The document holds two ``surfacematerial`` nodes, ``<name>_openpbr`` (driven by an
``open_pbr_surface`` shader) and ``<name>_standard_surface`` (a ``standard_surface`` shader),
with the values from :mod:`pbrfit.material_mapping`. Colours are linear Rec.709 (the document's
``colorspace`` is ``lin_rec709``); roughness is perceptual as in both shading models; the
OpenPBR thin film thickness is in micrometres, the Standard Surface one in nanometres.

What either model drops or approximates is written into the document: as an XML comment at
the top and as each material's ``doc`` string. The document is validated against the
standard data libraries shipped with the MaterialX Python package before it is written.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Mapping

import MaterialX as mx

from ..atomic import atomic_path
from ..errors import InputError
from ..material_mapping import TargetMapping, to_openpbr, to_standard_surface
from ..material_mapping.textures import NORMAL_INPUTS, TEXTURE_INPUTS, unwired_lines
from ..params import normalize_material

__all__ = ["standard_libraries", "materialx_document", "write_materialx", "material_names"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER = ("pbrfit export of a Blender 5.0 Principled BSDF material (linear Rec.709 colours, "
           "perceptual roughness).")


@functools.lru_cache(maxsize=1)
def standard_libraries() -> mx.Document:
    """The MaterialX standard data libraries (stdlib, pbrlib, bxdf, ...), loaded once."""
    lib = mx.createDocument()
    mx.loadLibraries(mx.getDefaultDataLibraryFolders(), mx.getDefaultDataSearchPath(), lib)
    if lib.getNodeDef("ND_open_pbr_surface_surfaceshader") is None:
        raise RuntimeError("the MaterialX data libraries have no open_pbr_surface node definition")
    return lib


def material_names(name: str) -> dict[str, str]:
    """Element names used for ``name``: the two materials and their shaders."""
    return {
        "openpbr": f"{name}_openpbr",
        "openpbr_shader": f"{name}_openpbr_shader",
        "standard_surface": f"{name}_standard_surface",
        "standard_surface_shader": f"{name}_standard_surface_shader",
    }


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"material name {name!r} is not a valid identifier; use letters, digits and _")


def _mx_value(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, tuple):
        return mx.Color3(*(float(v) for v in value))
    return float(value)


def _add_shader(doc: mx.Document, category: str, shader_name: str, mapping: TargetMapping) -> mx.Node:
    shader = doc.addNode(category, shader_name, "surfaceshader")
    for key, value in mapping.inputs.items():
        shader.setInputValue(key, _mx_value(value))
    return shader


def _add_tangent_rotation(doc: mx.Document, shader: mx.Node, prefix: str, degrees: float) -> None:
    """geometry_tangent = normalize(rotate3d(world tangent, degrees, world normal))."""
    tangent = doc.addNode("tangent", f"{prefix}_tangent", "vector3")
    tangent.setInputValue("space", "world")
    normal = doc.addNode("normal", f"{prefix}_normal", "vector3")
    normal.setInputValue("space", "world")
    rotate = doc.addNode("rotate3d", f"{prefix}_tangent_rotate", "vector3")
    rotate.setConnectedNode("in", tangent)
    rotate.setInputValue("amount", float(degrees))
    rotate.setConnectedNode("axis", normal)
    unit = doc.addNode("normalize", f"{prefix}_tangent_normalize", "vector3")
    unit.setConnectedNode("in", rotate)
    shader.setConnectedNode("geometry_tangent", unit)


def _wire_maps(doc: mx.Document, shader: mx.Node, target: str, textures: Mapping[str, Mapping]) -> None:
    """Connect ``target``'s inputs to ``<image>`` nodes reading the fitted maps (files
    relative to the document; UV set 0, periodic, linear filtering: MaterialX's defaults)."""
    for name, entry in (textures or {}).items():
        if name == "normal":  # tangent space, through MaterialX's normalmap node (UV set 0 tangents)
            image = doc.addNode("image", f"{shader.getName()}_normal_map", "vector3")
            image.setInputValue("file", entry["file"], "filename")
            decode = doc.addNode("normalmap", f"{shader.getName()}_normal_decode", "vector3")
            decode.setConnectedNode("in", image)
            key = NORMAL_INPUTS[target]
            shader.removeInput(key)
            shader.addInput(key, "vector3").setConnectedNode(decode)
            continue
        key = TEXTURE_INPUTS[target].get(name)
        if key is None:
            continue
        kind = "color3" if entry["channels"] == 3 else "float"
        image = doc.addNode("image", f"{shader.getName()}_{name}_map", kind)
        image.setInputValue("file", entry["file"], "filename")
        if kind == "color3":
            image.getInput("file").setColorSpace(entry["colorspace"])
        shader.removeInput(key)
        shader.addInput(key, kind).setConnectedNode(image)


def _losses_text(lines: list[str]) -> str:
    if not lines:
        return "Nothing dropped or approximated."
    return "Dropped or approximated: " + "; ".join(lines)


def materialx_document(material: Mapping[str, object], *, name: str = "pbrfit_material",
                       textures: Mapping[str, Mapping] | None = None) -> mx.Document:
    """A validated MaterialX document for ``material`` (canonical names, see
    :mod:`pbrfit.params`), referencing the standard data libraries. ``textures``: the fitted
    maps (material.json's ``textures``, :func:`pbrfit.outputs.texture_entries`), wired through
    ``<image>`` nodes where a shader input carries the parameter.

    Raises:
        InputError: bad parameter names/values or an invalid ``name``.
        RuntimeError: the document does not validate (a bug in the mapping).
    """
    _check_name(name)
    m = normalize_material(material)
    names = material_names(name)
    openpbr = to_openpbr(m)
    standard = to_standard_surface(m)

    doc = mx.createDocument()
    doc.setDataLibrary(standard_libraries())
    doc.setColorSpace("lin_rec709")
    lines = (openpbr.messages() + standard.messages() + unwired_lines("open_pbr_surface", textures or {})
             + unwired_lines("standard_surface", textures or {}))
    comment = doc.addChildOfCategory("comment", f"{name}_pbrfit_notes")
    comment.setDocString(" " + _HEADER + " " + _losses_text(lines) + " ")

    shader = _add_shader(doc, "open_pbr_surface", names["openpbr_shader"], openpbr)
    if openpbr.tangent_rotation is not None:
        _add_tangent_rotation(doc, shader, f"{name}_openpbr", openpbr.tangent_rotation)
    _wire_maps(doc, shader, "open_pbr_surface", textures)
    mat = doc.addMaterialNode(names["openpbr"], shader)
    mat.setDocString(_losses_text(openpbr.messages()))

    shader = _add_shader(doc, "standard_surface", names["standard_surface_shader"], standard)
    _wire_maps(doc, shader, "standard_surface", textures)
    mat = doc.addMaterialNode(names["standard_surface"], shader)
    mat.setDocString(_losses_text(standard.messages()))

    ok, message = doc.validate()
    if not ok:
        raise RuntimeError(f"MaterialX document for '{name}' does not validate: {message.strip()}")
    return doc


def write_materialx(material: Mapping[str, object], path: str | os.PathLike, *,
                    name: str = "pbrfit_material", textures: Mapping[str, Mapping] | None = None) -> list[str]:
    """Write ``material`` as a ``.mtlx`` file (atomically) and return the losses.

    Returns:
        One line per parameter that OpenPBR or Standard Surface drops or approximates,
        ``"target: param kind: reason"``.

    Raises:
        InputError: bad material values or name, or the file cannot be written there.
    """
    doc = materialx_document(material, name=name, textures=textures)
    text = mx.writeToXmlString(doc)
    with atomic_path(path, what="MaterialX file") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    m = normalize_material(material)
    return (to_openpbr(m).messages() + to_standard_surface(m).messages()
            + unwired_lines("open_pbr_surface", textures or {}) + unwired_lines("standard_surface", textures or {}))
