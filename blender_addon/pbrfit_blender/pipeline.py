"""A fit of one Blender object, from extraction to write-back (host code, main thread).

Shared by the operators (UI and headless) and ``scripts/blender_fit.py``:

* :func:`fit_options` turns the panel's settings into :class:`pbrfit.fit.FitOptions`;
* :func:`prepare` extracts the scene and checks every precondition early (before minutes of
  fitting): a shared material unless a copy was asked for, the output folder;
* :func:`finish` stages the outputs (with an output folder: the same material.json/report
  as the CLI), writes the result back (one undo step), publishes the outputs, and shows the
  result images, the plausibility findings and the export losses in the panel;
* :func:`fit_object` does all three synchronously (headless and scripts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import bpy
import numpy as np

from pbrfit.errors import InputError

from .extract import Extraction, extract_scene
from .writeback import apply_material, check_maps_writable, shared_with

__all__ = ["FitOutcome", "fit_options", "prepare", "finish", "fit_object", "map_list", "publish_images",
           "publish_findings", "write_outputs"]


@dataclass
class FitOutcome:
    """What :func:`fit_object` did.

    Attributes:
        result: the :class:`pbrfit.fit.FitResult`.
        extraction: the scene fitted and the cameras skipped.
        material: the Blender material written (a copy when one was made).
        document: material.json's content when an output folder was given, else None.
    """

    result: object
    extraction: Extraction
    material: object
    document: dict | None = None


#: how the panel names each option, for messages
PANEL_LABELS = {"parameters": "Parameters to fit", "preset": "Preset", "iterations": "Iterations",
                "time_budget": "Time budget", "backend": "Renderer"}


def fit_options(settings=None, **overrides):
    """FitOptions from the panel's settings (``scene.pbrfit``), overridden by keyword
    arguments under canonical option names (a job file's ``[fit]`` keys: ``iterations``,
    ``backend``, ``loss``, ...), resolved and checked by :func:`pbrfit.options.resolve`,
    the command line's and the job file's rules. ``None`` overrides are ignored.

    Raises:
        InputError: a bad value, named as the panel names it.
    """
    from pbrfit.options import resolve
    from pbrfit.textures import check_textures

    from .properties import selected_maps, selected_parameters

    values = {}
    textures = None
    if settings is not None:
        values = {"parameters": selected_parameters(settings), "iterations": settings.iterations,
                  "time_budget": settings.time_budget if settings.time_budget > 0 else None,
                  "backend": settings.backend}
        if selected_maps(settings):
            textures = check_textures({"maps": selected_maps(settings), "resolution": int(settings.texture_resolution)},
                                      "pbrfit panel: Texture maps")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "textures" in given:  # a job file's [textures] table (scripts, the operator's options)
        textures = check_textures(given.pop("textures"), "options: textures")
    if "preset" in given and "parameters" not in given:
        values.pop("parameters", None)  # a preset asked for replaces the panel's ticks
    values.update(given)
    if "parameters" in values and not values["parameters"]:
        raise InputError("no parameter is selected to fit; choose a preset or tick some parameters")
    return resolve(None, values, override_labels=lambda name: f"pbrfit panel: {PANEL_LABELS.get(name, name)}",
                   textures=textures)


def check_texture_folder(folder) -> None:
    """Refuse (before a fit) a map folder that cannot be made or written."""
    import os

    if not folder:
        return
    path = Path(bpy.path.abspath(str(folder)))
    if str(folder).startswith("//") and not bpy.data.filepath:
        raise InputError(f"Map folder {folder} is relative to the .blend, which is not saved yet; save the .blend "
                         "first, choose an absolute folder, or pack the maps")
    if path.exists() and not path.is_dir():
        raise InputError(f"Map folder {path} is a file; choose a folder")
    anchor = path
    while not anchor.exists():
        anchor = anchor.parent
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise InputError(f"Map folder {path} cannot be written (no permission in {anchor}); choose another folder "
                         "or pack the maps")


def prepare(context, obj, *, copy_if_shared: bool = False, out_dir=None, maps=(), texture_folder=None) -> Extraction:
    """Extract ``obj``'s scene; refuse a shared material unless ``copy_if_shared``, an
    output folder the CLI's ``--out`` policy refuses, and texture ``maps`` on a mesh without
    a UV map or into sockets the user's own nodes feed."""
    from pbrfit.outputs import check_output_folder

    if obj is None:
        raise InputError("no object selected; select the part whose material to fit")
    extraction = extract_scene(context, obj)
    if maps:
        if extraction.scene.mesh.uvs is None:
            raise InputError(f"object '{obj.name}' has no UV map, so texture maps cannot be fitted; add one "
                             "(UV > Smart UV Project) or untick the texture maps")
        check_maps_writable(obj, maps)
        check_texture_folder(texture_folder)
    others = shared_with(obj)
    if others and not copy_if_shared:
        raise InputError(f"material '{obj.active_material.name}' is also used by {', '.join(others)}; "
                         "choose 'Make a copy' to change only this object")
    if out_dir:
        check_output_folder(out_dir, option="output folder", inputs=_input_files(extraction))
    return extraction


def _input_files(extraction: Extraction) -> list[str]:
    files = [bpy.data.filepath, *(v.image_path for v in extraction.scene.views),
             *(v.environment.source for v in extraction.scene.views)]
    return sorted({p for p in files if p and Path(p).is_file()})


def _to_blender_image(name: str, srgb8: np.ndarray):
    h, w = srgb8.shape[:2]
    img = bpy.data.images.get(name)
    if img is not None and tuple(img.size) != (w, h):
        bpy.data.images.remove(img)
        img = None
    if img is None:
        img = bpy.data.images.new(name, w, h, alpha=True)
    rgba = np.ones((h, w, 4), np.float32)
    rgba[..., :3] = srgb8[::-1].astype(np.float32) / 255.0  # byte images hold sRGB; row 0 at the bottom
    img.pixels.foreach_set(rgba.ravel())
    img.update()
    try:
        img.pack()  # keep it in the .blend
    except RuntimeError:
        pass
    return img


def publish_images(context, result) -> list:
    """ΔE2000 heatmaps and reference | fit | heatmap figures of every view, as Blender images.

    Recorded in ``scene.pbrfit.result_images`` (kind "heatmap" or "figure").
    """
    settings = getattr(context.scene, "pbrfit", None)
    if settings is not None:
        settings.result_images.clear()
    images = []
    for v in result.views:
        fig = v.figure()  # the same figures as report.html (pbrfit.figures)
        de = float(v.metrics["de2000_mean"])
        for kind, pixels in (("heatmap", fig.heatmap), ("figure", fig.side_by_side())):
            img = _to_blender_image(f"pbrfit {kind} {v.name}", pixels)
            images.append(img)
            if settings is not None:
                item = settings.result_images.add()
                item.view, item.split, item.kind, item.de2000, item.image = v.name, v.split, kind, de, img
    return images


def write_outputs(out_dir, result, extraction: Extraction, options, *, publish: bool = True):
    """material.json, material.mtlx, material.usda and report.html, as the CLI writes them.

    Returns:
        (material.json's content, the :class:`pbrfit.atomic.OutputDir`; staged, not yet
        published, when ``publish`` is False).
    """
    from pbrfit.outputs import prepare_output, write_fit_outputs

    source = bpy.data.filepath or "<unsaved Blender scene>"
    files = _input_files(extraction)
    out = prepare_output(out_dir, option="output folder", inputs=files)  # the CLI's --out policy
    doc = write_fit_outputs(out, result, job_path=source, input_files=files, options=asdict(options),
                            seed=options.seed, title=f"pbrfit: {extraction.scene.target} in {Path(source).name}",
                            publish=publish)
    return doc, out


def publish_findings(context, result, options, written=()) -> None:
    """The plausibility findings and what each export format drops, for the panel
    (``scene.pbrfit.findings``; the same list as material.json and report.html), and
    ``written``: what the write-back changed besides the values (node settings switched)."""
    from pbrfit.material_mapping import export_losses
    from pbrfit.plausibility import findings

    settings = getattr(context.scene, "pbrfit", None)
    if settings is None:
        return
    settings.findings.clear()
    for f in findings(result.material, result.fitted, options.bounds or None, result.notes):
        item = settings.findings.add()
        item.kind, item.severity, item.subject, item.message = "finding", f["severity"], f["parameter"], f["message"]
    for target, lines in export_losses(result.material).items():
        for line in lines:
            item = settings.findings.add()
            item.kind, item.severity, item.subject = "export", "note", target
            item.message = line.removeprefix(f"{target}: ")
    for line in written:
        item = settings.findings.add()
        item.kind, item.severity, item.subject, item.message = "written", "note", "Principled BSDF", line


def finish(context, obj, result, extraction: Extraction, options, *, copy_if_shared: bool = False,
           out_dir=None, texture_folder=None) -> FitOutcome:
    """Stage the outputs, write the fitted material back (one undo step; fitted maps as
    image textures, packed or saved in ``texture_folder``), publish the outputs, show the
    images and findings. A failure staging the outputs leaves the material as it was."""
    doc, out = write_outputs(out_dir, result, extraction, options, publish=False) if out_dir else (None, None)
    switched = []
    try:
        material = apply_material(obj, result.material, copy_if_shared=copy_if_shared,
                                  message=f"pbrfit: fit {obj.name}", maps=getattr(result, "textures", None),
                                  texture_folder=texture_folder, notes=switched)
        if out is not None:
            out.publish(last=("material.json",))
    finally:
        if out is not None:
            out.discard()  # a no-op after publishing
    publish_images(context, result)
    publish_findings(context, result, options, switched)
    return FitOutcome(result, extraction, material, doc)


def fit_object(context, obj, options, *, copy_if_shared: bool = False, out_dir=None, progress=None,
               cancel=None, texture_folder=None) -> FitOutcome:
    """Extract, fit (synchronously, on this thread), write back and write the outputs.

    Raises:
        InputError: bad scene or shared material; FitCancelled when ``cancel`` is set (the
        material is then unchanged).
    """
    from pbrfit.fit import fit_material

    extraction = prepare(context, obj, copy_if_shared=copy_if_shared, out_dir=out_dir, maps=map_list(options),
                         texture_folder=texture_folder)
    result = fit_material(extraction.scene, options, progress=progress, cancel=cancel)
    return finish(context, obj, result, extraction, options, copy_if_shared=copy_if_shared, out_dir=out_dir,
                  texture_folder=texture_folder)


def map_list(options) -> tuple[str, ...]:
    """The parameters ``options`` fits as texture maps."""
    return tuple(options.textures.maps) if getattr(options, "textures", None) is not None else ()
