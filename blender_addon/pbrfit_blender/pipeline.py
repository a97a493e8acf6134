"""A fit of one Blender object, from extraction to write-back (host code, main thread).

Shared by the operators (UI and headless) and ``scripts/blender_fit.py``:

* :func:`fit_options` turns the panel's settings into :class:`pbrfit.fit.FitOptions`;
* :func:`prepare` extracts the scene and refuses a shared material early (before minutes
  of fitting) unless a copy was asked for;
* :func:`finish` writes the result back (one undo step), makes the result images and,
  with an output folder, writes the same material.json/report as the CLI;
* :func:`fit_object` does all three synchronously (headless and scripts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import bpy
import numpy as np

from pbrfit.errors import InputError

from .extract import Extraction, extract_scene
from .writeback import apply_material, shared_with

__all__ = ["FitOutcome", "fit_options", "prepare", "finish", "fit_object", "publish_images",
           "write_outputs", "HEATMAP_VMAX"]

#: ΔE2000 at the top of the heatmaps' colour scale
HEATMAP_VMAX = 10.0


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


def fit_options(settings=None, *, parameters=None, iterations=None, time_budget=None, **extra):
    """FitOptions from ``scene.pbrfit`` settings, overridden by the keyword arguments."""
    from pbrfit.fit import FitOptions

    from .properties import selected_parameters

    if parameters is None:
        parameters = selected_parameters(settings) if settings is not None else None
    if iterations is None and settings is not None:
        iterations = settings.iterations
    if time_budget is None and settings is not None and settings.time_budget > 0:
        time_budget = float(settings.time_budget)
    kw = dict(extra)
    if parameters is not None:
        if not parameters:
            raise InputError("no parameter is selected to fit; choose a preset or tick some parameters")
        kw["parameters"] = list(parameters)
    if iterations is not None:
        kw["iterations"] = int(iterations)
    kw["time_budget"] = time_budget
    if settings is not None and "backend" not in kw:
        kw["backend"] = settings.backend
    return FitOptions(**kw)


def prepare(context, obj, *, copy_if_shared: bool = False) -> Extraction:
    """Extract ``obj``'s scene; refuse a shared material unless ``copy_if_shared``."""
    if obj is None:
        raise InputError("no object selected; select the part whose material to fit")
    extraction = extract_scene(context, obj)
    others = shared_with(obj)
    if others and not copy_if_shared:
        raise InputError(f"material '{obj.active_material.name}' is also used by {', '.join(others)}; "
                         "choose 'Make a copy' to change only this object")
    return extraction


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
    from pbrfit.heatmap import delta_e_heatmap, display_exposure, to_srgb8

    settings = getattr(context.scene, "pbrfit", None)
    if settings is not None:
        settings.result_images.clear()
    images = []
    for v in result.views:
        heat = delta_e_heatmap(v["de_map"], v["mask"], vmax=HEATMAP_VMAX)
        ref = v["reference"]
        exposure = display_exposure(ref, v["mask"])
        figure = np.concatenate([to_srgb8(ref, exposure), to_srgb8(v["fit"], exposure), heat], axis=1)
        de = float(v["metrics"]["de2000_mean"])
        for kind, pixels in (("heatmap", heat), ("figure", figure)):
            img = _to_blender_image(f"pbrfit {kind} {v['name']}", pixels)
            images.append(img)
            if settings is not None:
                item = settings.result_images.add()
                item.view, item.split, item.kind, item.de2000, item.image = v["name"], v["split"], kind, de, img
    return images


def write_outputs(out_dir, result, extraction: Extraction, options) -> dict:
    """material.json, material.mtlx, material.usda and report.html, as the CLI writes them."""
    from pbrfit.outputs import prepare_output, write_fit_outputs

    source = bpy.data.filepath or "<unsaved Blender scene>"
    files = [p for p in [bpy.data.filepath, *(v.image_path for v in extraction.scene.views),
                         *(v.environment.source for v in extraction.scene.views)]
             if p and Path(p).is_file()]
    out = prepare_output(out_dir, option="output folder", inputs=files)  # the CLI's --out policy
    return write_fit_outputs(out, result, job_path=source, input_files=sorted(set(files)),
                             options=asdict(options), seed=options.seed,
                             title=f"pbrfit: {extraction.scene.target} in {Path(source).name}")


def finish(context, obj, result, extraction: Extraction, options, *, copy_if_shared: bool = False,
           out_dir=None) -> FitOutcome:
    """Write the fitted material back, make the result images, write the outputs."""
    material = apply_material(obj, result.material, copy_if_shared=copy_if_shared,
                              message=f"pbrfit: fit {obj.name}")
    publish_images(context, result)
    doc = write_outputs(out_dir, result, extraction, options) if out_dir else None
    return FitOutcome(result, extraction, material, doc)


def fit_object(context, obj, options, *, copy_if_shared: bool = False, out_dir=None, progress=None,
               cancel=None) -> FitOutcome:
    """Extract, fit (synchronously, on this thread), write back and write the outputs.

    Raises:
        InputError: bad scene or shared material; FitCancelled when ``cancel`` is set (the
        material is then unchanged).
    """
    from pbrfit.fit import fit_material

    extraction = prepare(context, obj, copy_if_shared=copy_if_shared)
    result = fit_material(extraction.scene, options, progress=progress, cancel=cancel)
    return finish(context, obj, result, extraction, options, copy_if_shared=copy_if_shared, out_dir=out_dir)
