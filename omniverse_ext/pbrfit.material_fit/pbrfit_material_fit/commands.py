"""Undoable Kit commands around the controller's write-back (omni.kit.commands).

``omni.kit.commands.execute("PbrfitWriteBackMaterial", stage=..., target_path=...,
material={...})`` authors the material and binding into ``<root>.pbrfit.usda`` (see
:mod:`pbrfit.writeback_usd`); Kit's Undo (Ctrl+Z) calls :meth:`undo`, which removes them
and the sublayer entry again.
"""

import omni.kit.commands
import omni.usd

from . import controller

__all__ = ["PbrfitWriteBackMaterialCommand"]


class PbrfitWriteBackMaterialCommand(omni.kit.commands.Command):
    """Write a fitted material back onto the stage; undo restores the edit layer.

    Args:
        target_path: the Mesh (or an ancestor holding one) to bind to.
        material: canonical Blender values (a fit's ``result.material``).
        stage: the stage; None for the current USD context's stage.
        edit_layer, material_path, save: as :func:`pbrfit.writeback_usd.write_back`.
    """

    def __init__(self, target_path: str, material: dict, stage=None, edit_layer=None, material_path=None,
                 save: bool = True):
        self._stage = stage or omni.usd.get_context().get_stage()
        self._target_path = target_path
        self._material = dict(material)
        self._kwargs = {"edit_layer": edit_layer, "material_path": material_path, "save": save}
        self._record = None

    def do(self):
        self._record = controller.write_back_material(self._stage, self._target_path, self._material,
                                                      **self._kwargs)
        return self._record

    def undo(self):
        if self._record is not None:
            controller.undo_write_back(self._stage, self._record)
            self._record = None
