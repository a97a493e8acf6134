"""The add-on's settings and state on the Scene (``scene.pbrfit``).

Parameter toggles are one BoolProperty per canonical name (``fit_base_color``, ...), built
from :data:`pbrfit_blender.sockets.SOCKETS`. Presets come from :data:`pbrfit.params.PRESETS`
when the engine imports (it needs torch); without it only "Custom" is offered and the panel
shows the dependency message instead of the fit controls.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .sockets import SOCKETS

__all__ = ["CLASSES", "PBRFIT_ValidationView", "PBRFIT_Finding", "PBRFIT_ResultImage", "PBRFIT_Settings", "presets",
           "selected_parameters", "selected_maps", "map_names", "register", "unregister"]


def presets() -> dict[str, tuple[str, ...]]:
    """pbrfit's named parameter sets, or {} when the engine cannot be imported."""
    try:
        from pbrfit.params import PRESETS
    except Exception:
        return {}
    return dict(PRESETS)


def _preset_items(self, context):
    items = [(k, k.replace("_", " ").title(), f"Fit {', '.join(v)}") for k, v in presets().items()]
    return items + [("CUSTOM", "Custom", "Fit the parameters ticked below")]


_ITEMS_CACHE: list = []


def _preset_items_cached(self, context):
    # Blender needs the item strings to stay alive while the enum is shown.
    _ITEMS_CACHE[:] = _preset_items(self, context)
    return _ITEMS_CACHE


def _preset_update(self, context):
    chosen = presets().get(self.preset)
    if chosen is None:
        return
    for name in SOCKETS:
        setattr(self, f"fit_{name}", name in chosen)


def _backend_items() -> list[tuple[str, str, str]]:
    """The engine's renderers (:data:`pbrfit.options.BACKENDS`); without the engine only
    "auto" (the panel then shows the dependency message instead of the controls)."""
    try:
        from pbrfit.options import BACKENDS
    except Exception:
        BACKENDS = {"auto": ""}
    return [(name, name.title(), what) for name, what in BACKENDS.items()]


def map_names() -> tuple[str, ...]:
    """Parameters the engine can fit as texture maps (:data:`pbrfit.textures.TEXTURE_MAPS`),
    or () when the engine cannot be imported."""
    try:
        from pbrfit.textures import TEXTURE_MAPS
    except Exception:
        return ()
    return tuple(TEXTURE_MAPS)


def _poll_camera(self, obj):
    return obj.type == "CAMERA"


class PBRFIT_ValidationView(bpy.types.PropertyGroup):
    """A photograph taken under other lighting, used to validate (not to fit)."""

    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=_poll_camera)
    image: PointerProperty(name="Photo", type=bpy.types.Image, description="The photograph from this camera")
    hdri: PointerProperty(name="HDRI", type=bpy.types.Image,
                          description="Equirectangular HDRI the photo was lit by (the World's orientation "
                                      "and strength are applied)")


class PBRFIT_Finding(bpy.types.PropertyGroup):
    """Something the last fit wants the user to check: a plausibility finding, a note about
    the run, or what an export format drops of the material."""

    kind: StringProperty(name="Kind", description="finding, export or written")
    severity: StringProperty(name="Severity", description="error, warning or note")
    subject: StringProperty(name="About", description="the parameter, or the export format")
    message: StringProperty(name="Message")


class PBRFIT_ResultImage(bpy.types.PropertyGroup):
    """An image the last fit produced (ΔE2000 heatmap or a reference/fit/heatmap figure)."""

    view: StringProperty(name="View")
    split: StringProperty(name="Split")
    kind: StringProperty(name="Kind")
    de2000: FloatProperty(name="ΔE2000")
    image: PointerProperty(type=bpy.types.Image)


def _settings_annotations() -> dict:
    ann = {
        "preset": EnumProperty(name="Preset", items=_preset_items_cached, update=_preset_update,
                               description="Which parameters to fit"),
        "iterations": IntProperty(name="Iterations", default=60, min=1, soft_max=500,
                                  description="Optimizer iterations in all"),
        "backend": EnumProperty(name="Renderer", default="auto", items=_backend_items(),
                                description="How the fit renders the part"),
        "time_budget": FloatProperty(name="Time budget", default=0.0, min=0.0, unit="TIME_ABSOLUTE",
                                     description="Stop after this many seconds (0: no limit)"),
        "copy_material": BoolProperty(name="Make a copy", default=False,
                                      description="If other objects share the material, give this object "
                                                  "its own copy instead of changing theirs"),
        "output_dir": StringProperty(name="Report folder", subtype="DIR_PATH", default="",
                                     description="Write material.json and report.html here (empty: don't)"),
        "validation_views": CollectionProperty(type=PBRFIT_ValidationView),
        "validation_index": IntProperty(default=0),
        "result_images": CollectionProperty(type=PBRFIT_ResultImage),
        "findings": CollectionProperty(type=PBRFIT_Finding),
        # live state, written by the modal operator on the main thread
        "running": BoolProperty(default=False, options={"SKIP_SAVE"}),
        "progress": FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR", options={"SKIP_SAVE"}),
        "progress_text": StringProperty(default="", options={"SKIP_SAVE"},
                                        description="Where the fit is (pbrfit.progress.describe)"),
        "status": StringProperty(default=""),
        "error": StringProperty(default=""),
    }
    for name in SOCKETS:
        ann[f"fit_{name}"] = BoolProperty(name=name.replace("_", " ").title(),
                                          default=name in ("base_color", "roughness"))
    for name in map_names():
        ann[f"map_{name}"] = BoolProperty(name=name.replace("_", " ").title(), default=False,
                                          description=f"Fit {name} as a texture map on the active UV map")
    ann["texture_resolution"] = EnumProperty(
        name="Map size", default="512",
        items=[(str(n), f"{n} px", f"{n} x {n} texels") for n in (256, 512, 1024, 2048)],
        description="Texels per side of the fitted maps")
    ann["texture_storage"] = EnumProperty(
        name="Store maps", default="PACK",
        items=[("PACK", "Pack into .blend", "Keep the map images inside the .blend file"),
               ("FOLDER", "Save in folder", "Save the map images as OpenEXR files in the folder below")],
        description="Where the fitted map images live")
    ann["texture_folder"] = StringProperty(name="Map folder", subtype="DIR_PATH", default="//pbrfit_textures/",
                                           description="Folder for the map images (// = beside the .blend)")
    return ann


PBRFIT_Settings = type("PBRFIT_Settings", (bpy.types.PropertyGroup,),
                       {"__annotations__": _settings_annotations(),
                        "__doc__": "pbrfit settings and live fit state for this scene"})


def selected_maps(settings) -> list[str]:
    """Parameters ticked to be fitted as texture maps."""
    return [n for n in map_names() if getattr(settings, f"map_{n}", False)]


def selected_parameters(settings) -> list[str]:
    """Canonical names ticked (the preset's when a preset is chosen)."""
    chosen = presets().get(settings.preset)
    if chosen is not None:
        return list(chosen)
    return [n for n in SOCKETS if getattr(settings, f"fit_{n}")]


CLASSES = (PBRFIT_ValidationView, PBRFIT_Finding, PBRFIT_ResultImage, PBRFIT_Settings)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.pbrfit = PointerProperty(type=PBRFIT_Settings)


def unregister():
    del bpy.types.Scene.pbrfit
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
