"""The pbrfit panel, drawn in Material properties and in the 3D view sidebar ("pbrfit" tab).

Both panels draw the same thing (:func:`draw_pbrfit`): the dependency error if the engine
cannot be imported; otherwise parameters (preset and per-parameter toggles), budget, the
validation views, Fit / Cancel, a progress bar with the live loss and ΔE2000, the status
or error line, Restore previous, and the last fit's heatmaps and figures.
"""

from __future__ import annotations

import bpy

from .deps import dependency_message
from .properties import map_names, selected_maps
from .sockets import SOCKETS

__all__ = ["CLASSES", "draw_pbrfit", "PBRFIT_UL_validation_views", "PBRFIT_PT_material",
           "PBRFIT_PT_sidebar", "register", "unregister"]


class PBRFIT_UL_validation_views(bpy.types.UIList):
    """One row per validation view: camera, photo, HDRI."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.prop(item, "camera", text="", emboss=False, icon="CAMERA_DATA")
        row.prop(item, "image", text="", emboss=False, icon="IMAGE_DATA")
        row.prop(item, "hdri", text="", emboss=False, icon="WORLD")


def _image_preview(layout, image, scale: float = 5.0) -> None:
    if image is None:
        return
    preview = image.preview_ensure() if hasattr(image, "preview_ensure") else image.preview
    if preview is not None:
        layout.template_icon(icon_value=preview.icon_id, scale=scale)


def draw_pbrfit(layout, context) -> None:
    """Draw the panel body into ``layout``."""
    message = dependency_message()
    if message:
        box = layout.box()
        box.alert = True
        for i, part in enumerate(message.split(": ", 1)):
            box.label(text=part, icon="ERROR" if i == 0 else "NONE")
        return
    settings = context.scene.pbrfit
    obj = context.active_object
    layout.label(text=f"Target: {obj.name}" if obj else "Target: select an object", icon="OBJECT_DATA")

    col = layout.column(heading="Parameters")
    col.prop(settings, "preset")
    if settings.preset == "CUSTOM":
        grid = col.grid_flow(columns=2, align=True)
        for name in SOCKETS:
            grid.prop(settings, f"fit_{name}")
    col = layout.column(align=True)
    col.prop(settings, "backend")
    col.prop(settings, "iterations")
    col.prop(settings, "time_budget")
    col.prop(settings, "copy_material")
    col.prop(settings, "output_dir")

    names = map_names()
    if names:
        box = layout.box()
        box.label(text="Texture maps (on the active UV map)")
        grid = box.grid_flow(columns=2, align=True)
        for name in names:
            grid.prop(settings, f"map_{name}")
        if selected_maps(settings):
            box.prop(settings, "texture_resolution")
            box.prop(settings, "texture_storage")
            if settings.texture_storage == "FOLDER":
                box.prop(settings, "texture_folder")

    box = layout.box()
    box.label(text="Validation views (other HDRIs)")
    row = box.row()
    row.template_list("PBRFIT_UL_validation_views", "", settings, "validation_views", settings,
                      "validation_index", rows=2)
    ops = row.column(align=True)
    ops.operator("pbrfit.validation_add", text="", icon="ADD")
    ops.operator("pbrfit.validation_remove", text="", icon="REMOVE")

    row = layout.row(align=True)
    row.enabled = not settings.running
    row.operator("pbrfit.fit", icon="PLAY")
    row = layout.row(align=True)
    row.operator("pbrfit.cancel", icon="CANCEL")
    row.operator("pbrfit.restore_previous", icon="LOOP_BACK")
    if settings.running:
        text = settings.progress_text
        if hasattr(layout, "progress"):
            layout.progress(factor=settings.progress, type="BAR", text=text)
        else:
            layout.prop(settings, "progress", text=text, slider=True)
    if settings.error:
        box = layout.box()
        box.alert = True
        box.label(text=settings.error, icon="ERROR")
    elif settings.status:
        layout.label(text=settings.status, icon="INFO")

    _draw_findings(layout, settings)
    if len(settings.result_images):
        box = layout.box()
        box.label(text="Last fit: ΔE2000 per view (0 blue … 10+ red)")
        for item in settings.result_images:
            if item.kind != "heatmap":
                continue
            row = box.row()
            row.label(text=f"{item.view} ({item.split}): mean ΔE2000 {item.de2000:.2f}")
            _image_preview(box, item.image)
        box.label(text="Figures: reference | fit | ΔE2000 (open in the Image Editor)")
        for item in settings.result_images:
            if item.kind == "figure":
                box.label(text=item.image.name if item.image else item.view, icon="IMAGE_DATA")


_SEVERITY_ICON = {"error": "ERROR", "warning": "ERROR", "note": "INFO"}


def _draw_findings(layout, settings) -> None:
    """The last fit's plausibility findings, what its write-back changed besides the values,
    and what each export format drops."""
    found = [f for f in settings.findings if f.kind == "finding"]
    if found:
        box = layout.box()
        box.label(text="Check these (also in material.json and the report)")
        for f in found:
            row = box.row()
            row.alert = f.severity == "error"
            row.label(text=f"{f.subject}: {f.message}" if f.subject else f.message,
                      icon=_SEVERITY_ICON.get(f.severity, "INFO"))
    for kind, title, icon in (("written", "Also changed in the material", "NODETREE"),
                              ("export", "What the exported formats drop or approximate", "EXPORT")):
        items = [f for f in settings.findings if f.kind == kind]
        if items:
            box = layout.box()
            box.label(text=title)
            for f in items:
                box.label(text=f"{f.subject}: {f.message}", icon=icon)


class PBRFIT_PT_material(bpy.types.Panel):
    bl_label = "pbrfit: Fit to Photos"
    bl_idname = "PBRFIT_PT_material"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "material"

    def draw(self, context):
        draw_pbrfit(self.layout, context)


class PBRFIT_PT_sidebar(bpy.types.Panel):
    bl_label = "Fit Material to Photos"
    bl_idname = "PBRFIT_PT_sidebar"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "pbrfit"

    def draw(self, context):
        draw_pbrfit(self.layout, context)


CLASSES = (PBRFIT_UL_validation_views, PBRFIT_PT_material, PBRFIT_PT_sidebar)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
