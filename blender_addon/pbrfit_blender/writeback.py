"""Writing fitted values into the object's Principled BSDF, and putting the old ones back.

Values are canonical pbrfit values (:mod:`pbrfit.params`) set on the Principled BSDF
inputs named in :data:`pbrfit_blender.sockets.SOCKETS` (Blender 5.0 names); colours get
alpha 1 where the socket is RGBA. Linked inputs are left alone (a texture wins).

Fitted texture maps (:class:`pbrfit.texture_fit.MapResult`) become Image Texture nodes
(Linear interpolation, Repeat, fed by a UV Map node naming the mesh's UV map) linked into
their sockets: base colour as a float image in "Linear Rec.709", the others "Non-Color".
The images are packed into the .blend, or saved as OpenEXR files in a folder the caller
names (beside the .blend). A socket already linked to a node pbrfit did not make is never
rewired: :func:`check_maps_writable` refuses before the fit starts. Nodes pbrfit made are
named ``pbrfit map <parameter>`` (and ``pbrfit uv``) and replaced by the next write.

The node's Distribution is set to Multiscatter GGX, and its Subsurface Method to Random Walk
when the written material has subsurface, which is what pbrfit's renderers model
(:data:`pbrfit_blender.sockets.MODEL_SETTINGS`): the fitted values render as fitted only
under them. Each switch is reported (``notes``) and undone with the values.

Before a write the current values are stored as JSON in the material's custom property
``pbrfit_previous`` (``{"values": {canonical name: value}, "maps": {parameter: image
name}, "settings": {node setting: enum identifier}}``), so :func:`restore_previous` can put
them back (unlinking and removing the map nodes, or re-creating them); the write is then pushed as one undo step
(``bpy.ops.ed.undo_push``), so Ctrl+Z undoes it too in a UI session.

A material used by other objects is never changed behind the user's back: the caller
must pass ``copy_if_shared=True`` to give the object its own copy (assigned through an
object-linked slot), or the write raises :class:`pbrfit.errors.InputError`.
"""

from __future__ import annotations

import json

import bpy

from pbrfit.errors import InputError
from pbrfit.params import PARAMETERS, normalize_material

from .extract import find_principled, read_principled
from .sockets import MODEL_SETTING_LABELS, MODEL_SETTINGS, SOCKETS

__all__ = ["PREVIOUS_KEY", "material_users", "shared_with", "apply_material", "restore_previous", "set_principled",
           "check_maps_writable", "MAP_NODE", "UV_NODE"]

#: custom property (on the material) holding the values before the last write, as JSON
PREVIOUS_KEY = "pbrfit_previous"
#: names of the nodes pbrfit makes for maps (``MAP_NODE.format(parameter)``) and their UV input
MAP_NODE, UV_NODE = "pbrfit map {}", "pbrfit uv"


def material_users(material) -> list:
    """Objects that show ``material`` in one of their slots."""
    return [o for o in bpy.data.objects
            if any(slot.material == material for slot in getattr(o, "material_slots", []))]


def shared_with(obj) -> list[str]:
    """Names of the other objects using ``obj``'s active material (sorted)."""
    mat = obj.active_material
    return sorted(o.name for o in material_users(mat) if o is not obj) if mat is not None else []


def set_principled(node, values: dict) -> list[str]:
    """Set canonical ``values`` on a Principled BSDF node; returns the names skipped (linked)."""
    skipped = []
    for name, value in values.items():
        socket = node.inputs[SOCKETS[name]]
        if socket.is_linked:
            skipped.append(name)
            continue
        if PARAMETERS[name].size == 3:
            value = [float(v) for v in value] + ([1.0] if len(socket.default_value) == 4 else [])
        else:
            value = float(value)
        socket.default_value = value
    return skipped


#: the Principled BSDF input a tangent-space normal map feeds (through a Normal Map node)
NORMAL_SOCKET = "Normal"


def _socket(name: str) -> str:
    return NORMAL_SOCKET if name == "normal" else SOCKETS[name]


def _ours(node) -> bool:
    return node.name == UV_NODE or node.name.startswith(MAP_NODE.format(""))


def check_maps_writable(obj, maps) -> None:
    """Refuse (before a fit) maps whose Principled socket is linked to a node pbrfit did not
    make: the user's node graph is never rewired behind their back."""
    mat = obj.active_material
    node = find_principled(mat)
    if mat is None or node is None:
        return  # the extraction reports it
    for name in maps:
        socket = node.inputs[_socket(name)]
        for link in socket.links:
            if not _ours(link.from_node):
                raise InputError(f"material '{mat.name}': {_socket(name)} is linked to node '{link.from_node.name}'; "
                                 f"a fitted {name} map would replace that link: unlink it yourself, or do not fit "
                                 f"{name} as a map (your node graph is left as it is)")


def _map_image(obj, name: str, texels, folder):
    """A Blender image holding ``texels`` (H, W, C; row 0 at the top), packed or saved in
    ``folder`` as ``<object>_<parameter>.exr``."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from pbrfit.images import write_exr

    image_name = f"pbrfit {obj.name} {name}"
    old = bpy.data.images.get(image_name)
    if old is not None:
        bpy.data.images.remove(old)
    texels = np.asarray(texels, np.float32)
    pixels = texels[..., 0] if texels.shape[-1] == 1 else texels
    if folder is not None:
        Path(bpy.path.abspath(str(folder))).mkdir(parents=True, exist_ok=True)
        path = Path(bpy.path.abspath(str(folder))) / f"{bpy.path.clean_name(obj.name)}_{name}.exr"
        write_exr(path, pixels)
        img = bpy.data.images.load(str(path))
        try:
            img.filepath = bpy.path.relpath(str(path))
        except ValueError:  # an unsaved .blend, or another drive: keep the absolute path
            pass
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.exr"
            write_exr(path, pixels)
            img = bpy.data.images.load(str(path))
            img.pack()
            img.filepath = ""
    img.name = image_name
    img.colorspace_settings.name = "Linear Rec.709" if name == "base_color" else "Non-Color"
    return img


def _remove_map_nodes(mat) -> dict:
    """Remove the map nodes pbrfit made; returns {parameter: image name} of those removed."""
    removed = {}
    for node in list(mat.node_tree.nodes):
        if _ours(node):
            if getattr(node, "image", None) is not None:
                removed[node.name[len(MAP_NODE.format("")):]] = node.image.name
            mat.node_tree.nodes.remove(node)
    return removed


def _link_maps(mat, principled, images: dict, uv_name: str | None) -> None:
    """Image Texture nodes for ``images`` ({parameter: bpy image}) into their sockets."""
    tree = mat.node_tree
    if not images:
        return
    uv = tree.nodes.new("ShaderNodeUVMap")
    uv.name = uv.label = UV_NODE
    uv.uv_map = uv_name or ""
    uv.location = (principled.location.x - 700, principled.location.y)
    for i, (name, img) in enumerate(images.items()):
        tex = tree.nodes.new("ShaderNodeTexImage")
        tex.name = tex.label = MAP_NODE.format(name)
        tex.image = img
        tex.interpolation = "Linear"
        tex.extension = "REPEAT"
        tex.location = (principled.location.x - 400, principled.location.y - 300 * i)
        tree.links.new(uv.outputs["UV"], tex.inputs["Vector"])
        if name == "normal":  # tangent space on the same UV map (MikkTSpace), strength 1
            decode = tree.nodes.new("ShaderNodeNormalMap")
            decode.name = decode.label = MAP_NODE.format("normal") + " decode"
            decode.space = "TANGENT"
            decode.uv_map = uv_name or ""
            decode.location = (principled.location.x - 200, principled.location.y - 300 * i)
            tree.links.new(tex.outputs["Color"], decode.inputs["Color"])
            tree.links.new(decode.outputs["Normal"], principled.inputs[NORMAL_SOCKET])
        else:
            tree.links.new(tex.outputs["Color"], principled.inputs[SOCKETS[name]])


def _undo_push(message: str) -> None:
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:  # no undo stack (background mode, some contexts): nothing to push
        pass


def _target_material(obj, copy_if_shared: bool):
    mat = obj.active_material
    node = find_principled(mat)
    if mat is None or node is None:
        raise InputError(f"object '{obj.name}' has no material with a Principled BSDF; nothing to write")
    others = shared_with(obj)
    if others:
        if not copy_if_shared:
            others = ", ".join(others)
            raise InputError(f"material '{mat.name}' is also used by {others}; choose 'Make a copy' "
                             "(copy_material=True) to change only this object, or unlink it first")
        slot = obj.material_slots[obj.active_material_index]
        copy = mat.copy()
        copy.name = f"{mat.name}.pbrfit"
        slot.link = "OBJECT"
        slot.material = copy
        mat, node = copy, find_principled(copy)
    return mat, node


def _node_settings(node) -> dict[str, str]:
    return {k: getattr(node, k) for k in MODEL_SETTINGS}


def _set_model_settings(node, notes: list | None) -> None:
    """Switch ``node`` to the settings pbrfit models (the subsurface method only where the
    node has subsurface), appending a line per switch to ``notes``."""
    for setting, value in MODEL_SETTINGS.items():
        if setting == "subsurface_method" and node.inputs[SOCKETS["subsurface_weight"]].default_value <= 0 \
                and not node.inputs[SOCKETS["subsurface_weight"]].is_linked:
            continue
        old = getattr(node, setting)
        if old == value:
            continue
        setattr(node, setting, value)
        if notes is not None:
            label = MODEL_SETTING_LABELS.get
            notes.append(f"{label(setting, setting)} set from {label(old, old)} to {label(value, value)}, "
                         "what pbrfit fits; Restore Previous puts it back")


def apply_material(obj, values: dict, *, copy_if_shared: bool = False,
                   message: str = "pbrfit: apply fitted material", maps: dict | None = None,
                   texture_folder=None, notes: list | None = None):
    """Write canonical ``values`` (and fitted ``maps``) into ``obj``'s active material as
    one undo step.

    Args:
        obj: the target object.
        values: canonical values (missing names are left as they are).
        copy_if_shared: give the object its own copy when other objects use the material.
        message: the undo step's name.
        maps: {parameter: :class:`pbrfit.texture_fit.MapResult`} to link as image textures.
        texture_folder: save the maps' images there (``//`` = beside the .blend) instead of
            packing them into the .blend.
        notes: a list to which a line is appended for each node setting switched to what
            pbrfit models (Distribution, Subsurface Method).

    Returns:
        The material written (a new copy when one was made).

    Raises:
        InputError: no Principled BSDF, or a shared material without ``copy_if_shared``.
    """
    normalize_material(values, source="fitted material")  # checks names/sizes/finiteness
    maps = dict(maps or {})
    check_maps_writable(obj, maps)
    mat, node = _target_material(obj, copy_if_shared)
    previous_maps = _remove_map_nodes(mat)
    mat[PREVIOUS_KEY] = json.dumps({"values": read_principled(node), "maps": previous_maps,
                                    "uv": _uv_of(obj), "settings": _node_settings(node)})
    images = {n: _map_image(obj, n, m.texels, texture_folder) for n, m in maps.items()}
    set_principled(node, values)
    _set_model_settings(node, notes)
    _link_maps(mat, node, images, next((m.uv for m in maps.values()), None))
    mat.update_tag()
    _undo_push(message)
    return mat


def _uv_of(obj) -> str | None:
    layer = obj.data.uv_layers.active if getattr(obj.data, "uv_layers", None) is not None else None
    return layer.name if layer is not None else None


def restore_previous(obj, *, message: str = "pbrfit: restore previous material"):
    """Put back the values stored by the last :func:`apply_material` on ``obj``'s material.

    The current values are stored in their place, so a second restore redoes the fit.

    Raises:
        InputError: the material holds no stored values.
    """
    mat = obj.active_material
    node = find_principled(mat)
    if mat is None or node is None or PREVIOUS_KEY not in mat.keys():
        raise InputError(f"object '{obj.name}': its material holds no values from before a pbrfit write")
    previous = json.loads(mat[PREVIOUS_KEY])
    if "values" not in previous:  # written before maps existed: the values alone
        previous = {"values": previous, "maps": {}}
    removed = _remove_map_nodes(mat)
    mat[PREVIOUS_KEY] = json.dumps({"values": read_principled(node), "maps": removed, "uv": _uv_of(obj),
                                    "settings": _node_settings(node)})
    set_principled(node, previous["values"])
    for setting, value in previous.get("settings", {}).items():
        if setting in MODEL_SETTINGS and value in node.bl_rna.properties[setting].enum_items.keys():
            setattr(node, setting, value)  # (a hand-edited property's unknown value is skipped)
    images = {n: bpy.data.images[i] for n, i in previous.get("maps", {}).items() if i in bpy.data.images}
    _link_maps(mat, node, images, previous.get("uv"))
    mat.update_tag()
    _undo_push(message)
    return mat
