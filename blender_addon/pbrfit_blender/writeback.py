"""Writing fitted values into the object's Principled BSDF, and putting the old ones back.

Values are canonical pbrfit values (:mod:`pbrfit.params`) set on the Principled BSDF
inputs named in :data:`pbrfit_blender.sockets.SOCKETS` (Blender 5.0 names); colours get
alpha 1 where the socket is RGBA. Linked inputs are left alone (a texture wins).

Before a write the current values are stored as JSON in the material's custom property
``pbrfit_previous`` (``{canonical name: value}``), so :func:`restore_previous` can put
them back; the write is then pushed as one undo step (``bpy.ops.ed.undo_push``), so
Ctrl+Z undoes it too in a UI session.

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
from .sockets import SOCKETS

__all__ = ["PREVIOUS_KEY", "material_users", "shared_with", "apply_material", "restore_previous", "set_principled"]

#: custom property (on the material) holding the values before the last write, as JSON
PREVIOUS_KEY = "pbrfit_previous"


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


def apply_material(obj, values: dict, *, copy_if_shared: bool = False,
                   message: str = "pbrfit: apply fitted material"):
    """Write canonical ``values`` into ``obj``'s active material as one undo step.

    Args:
        obj: the target object.
        values: canonical values (missing names are left as they are).
        copy_if_shared: give the object its own copy when other objects use the material.
        message: the undo step's name.

    Returns:
        The material written (a new copy when one was made).

    Raises:
        InputError: no Principled BSDF, or a shared material without ``copy_if_shared``.
    """
    normalize_material(values, source="fitted material")  # checks names/sizes/finiteness
    mat, node = _target_material(obj, copy_if_shared)
    mat[PREVIOUS_KEY] = json.dumps(read_principled(node))
    set_principled(node, values)
    mat.update_tag()
    _undo_push(message)
    return mat


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
    mat[PREVIOUS_KEY] = json.dumps(read_principled(node))
    set_principled(node, previous)
    mat.update_tag()
    _undo_push(message)
    return mat
