"""The Material Fit extension's logic: pure pxr + pbrfit, no omni imports (runs under usd-core).

Reference photos live on the stage
----------------------------------
Each camera that has a reference photo carries it as custom, namespaced attributes on the
camera prim (a ``UsdGeom.Camera``, or an ancestor holding exactly one, as Blender's
``/root/Cam`` over ``/root/Cam/CamData``):

* ``pbrfit:referenceImage`` (``asset``, required): the photo, a linear EXR (alpha = mask)
  or an sRGB PNG/JPEG/TIFF, exactly as a job file's ``image`` (see :mod:`pbrfit.job`).
  Resolved by USD's asset resolver; a path it cannot find is reported anchored to the layer
  that authored it (to the root layer when that is an anonymous layer, e.g. the session
  layer).
* ``pbrfit:referenceMask`` (``asset``, optional): a mask overriding the image's alpha.
* ``pbrfit:split`` (``token``, optional): ``"train"`` (default) or ``"validate"``.

The attributes are read at the default time. :func:`set_reference` / :func:`get_reference`
author and read them (on the stage's current edit target).

One reader
----------
The fit's scene is built exactly as the CLI builds a job's: :func:`pbrfit.usd_stage.read_stage`
on the open (live) stage, then :func:`pbrfit.job.build_scene` with one view per camera
carrying a reference. Lighting is the stage's DomeLight.

Running a fit
-------------
:class:`FitSession` reads the stage on the calling thread (USD stages are not thread-safe:
call ``start`` from Kit's main thread), then runs the fit on a background thread as the
engine's :class:`pbrfit.session.FitSession` (the one runner both hosts use): progress
through :meth:`FitSession.poll`, :meth:`FitSession.cancel` to stop it. :func:`run_async` awaits a
session from an asyncio loop (Kit's) without blocking it. Write-back goes through
:func:`write_back_material` / :func:`undo_write_back` (:mod:`pbrfit.writeback_usd`),
which the extension's undoable command wraps.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Callable

from pxr import Sdf, Usd, UsdGeom, UsdShade

from pbrfit.atomic import atomic_write_bytes
from pbrfit.errors import FitCancelled, InputError, PbrfitError
from pbrfit.fit import FitOptions, FitResult, Progress
from pbrfit.heatmap import png_bytes
from pbrfit.job import SPLITS, build_scene
from pbrfit.material_mapping import export_losses
from pbrfit.options import BACKENDS, resolve
from pbrfit.params import PRESETS
from pbrfit.plausibility import findings
from pbrfit.progress import describe as describe_progress
from pbrfit.scene import FitScene
from pbrfit.session import FitSession as EngineFitSession
from pbrfit.textures import TEXTURE_MAPS, check_textures
from pbrfit.usd_stage import read_stage
from pbrfit.writeback_usd import WriteBackRecord, undo, write_back

__all__ = [
    "REFERENCE_IMAGE_ATTR", "REFERENCE_MASK_ATTR", "SPLIT_ATTR",
    "set_reference", "get_reference", "clear_reference", "reference_views", "list_meshes", "list_cameras",
    "preset_names", "make_options", "build_fit_scene",
    "FitSession", "run_async", "write_back_material", "undo_write_back", "result_figures", "result_findings",
    "describe_progress", "BACKENDS", "TEXTURE_MAPS",
    # the engine's errors, for the window
    "FitCancelled", "InputError", "PbrfitError",
]

REFERENCE_IMAGE_ATTR = "pbrfit:referenceImage"
REFERENCE_MASK_ATTR = "pbrfit:referenceMask"
SPLIT_ATTR = "pbrfit:split"


# --- stage queries ------------------------------------------------------------------------

def list_meshes(stage: Usd.Stage) -> list[str]:
    """Paths of every active Mesh (fit targets), in traversal order."""
    return [str(p.GetPath()) for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)]


def list_cameras(stage: Usd.Stage) -> list[str]:
    """Paths of every Camera, in traversal order."""
    return [str(p.GetPath()) for p in stage.Traverse() if p.IsA(UsdGeom.Camera)]


def _camera_prim(stage: Usd.Stage, camera_path: str) -> Usd.Prim:
    if not Sdf.Path.IsValidPathString(str(camera_path)) or not Sdf.Path(str(camera_path)).IsAbsolutePath():
        raise InputError(f"camera '{camera_path}' is not an absolute prim path; write it like /World/Camera")
    prim = stage.GetPrimAtPath(str(camera_path))
    if not prim:
        raise InputError(f"camera {camera_path} not found on the stage; cameras there: "
                         f"{', '.join(list_cameras(stage)[:10]) or 'none'}")
    if not prim.IsA(UsdGeom.Camera) and not any(p.IsA(UsdGeom.Camera) for p in Usd.PrimRange(prim)):
        raise InputError(f"{camera_path} is a {prim.GetTypeName() or 'typeless prim'}, not a Camera; "
                         "pick a camera for the reference image")
    return prim


# --- reference attributes -----------------------------------------------------------------

def set_reference(stage: Usd.Stage, camera_path: str, image: str | os.PathLike, *, mask=None,
                  split: str = "train") -> None:
    """Author ``pbrfit:referenceImage`` (and ``referenceMask``, ``split``) on a camera prim,
    on the stage's current edit target. ``mask=None`` clears an authored mask.

    Raises:
        InputError: not a camera, or an unknown split.
    """
    prim = _camera_prim(stage, camera_path)
    if split not in SPLITS:
        raise InputError(f"split {split!r} is unknown; use \"train\" or \"validate\"")
    prim.CreateAttribute(REFERENCE_IMAGE_ATTR, Sdf.ValueTypeNames.Asset, custom=True).Set(
        Sdf.AssetPath(str(image)))
    if mask is not None:
        prim.CreateAttribute(REFERENCE_MASK_ATTR, Sdf.ValueTypeNames.Asset, custom=True).Set(
            Sdf.AssetPath(str(mask)))
    elif prim.HasAttribute(REFERENCE_MASK_ATTR):
        prim.RemoveProperty(REFERENCE_MASK_ATTR)
    prim.CreateAttribute(SPLIT_ATTR, Sdf.ValueTypeNames.Token, custom=True).Set(split)


def clear_reference(stage: Usd.Stage, camera_path: str) -> None:
    """Remove the reference attributes from a camera prim (on the current edit target)."""
    prim = _camera_prim(stage, camera_path)
    for name in (REFERENCE_IMAGE_ATTR, REFERENCE_MASK_ATTR, SPLIT_ATTR):
        if prim.HasAttribute(name):
            prim.RemoveProperty(name)


def _asset_file(attr: Usd.Attribute) -> tuple[str, str]:
    """(absolute file, path as authored) of an asset attribute; the file may not exist."""
    value = attr.Get()
    if not value or not value.path:
        return "", ""
    if value.resolvedPath and Path(value.resolvedPath).is_file():
        return value.resolvedPath, value.path
    stack = attr.GetPropertyStack(Usd.TimeCode.Default())
    layer = stack[0].layer if stack else None
    if layer is None or layer.anonymous:  # e.g. the session layer: anchor to the root layer
        layer = attr.GetStage().GetRootLayer()
    if layer.anonymous or not layer.realPath or os.path.isabs(value.path):
        return os.path.abspath(value.path), value.path
    return os.path.normpath(os.path.join(os.path.dirname(layer.realPath), value.path)), value.path


def get_reference(stage: Usd.Stage, camera_path: str) -> dict | None:
    """``{"image", "image_asset", "mask", "mask_asset", "split"}`` of a camera prim, or None
    when it has no ``pbrfit:referenceImage``. Files are absolute and may not exist."""
    prim = stage.GetPrimAtPath(str(camera_path))
    attr = prim.GetAttribute(REFERENCE_IMAGE_ATTR) if prim else None
    if not attr or not attr.HasAuthoredValue():
        return None
    image, image_asset = _asset_file(attr)
    mask_attr = prim.GetAttribute(REFERENCE_MASK_ATTR)
    mask, mask_asset = _asset_file(mask_attr) if mask_attr and mask_attr.HasAuthoredValue() else ("", "")
    split_attr = prim.GetAttribute(SPLIT_ATTR)
    split = str(split_attr.Get()) if split_attr and split_attr.HasAuthoredValue() else "train"
    return {"image": image, "image_asset": image_asset, "mask": mask or None, "mask_asset": mask_asset or None,
            "split": split}


def reference_views(stage: Usd.Stage) -> list[dict]:
    """One view spec (keys of :data:`pbrfit.job.VIEW_KEYS`) per prim with a reference image.

    Raises:
        InputError: no prim has one, or a reference (or mask) file is missing.
    """
    specs = []
    for prim in stage.Traverse():
        ref = get_reference(stage, prim.GetPath()) if prim.HasAttribute(REFERENCE_IMAGE_ATTR) else None
        if ref is None:
            continue
        where = f"camera {prim.GetPath()}"
        if not ref["image"] or not Path(ref["image"]).is_file():
            raise InputError(f"{where}: {REFERENCE_IMAGE_ATTR} '{ref['image_asset']}' not found (looked for "
                             f"{ref['image'] or 'an empty path'}); pick the reference photo again")
        if ref["mask"] is not None and not Path(ref["mask"]).is_file():
            raise InputError(f"{where}: {REFERENCE_MASK_ATTR} '{ref['mask_asset']}' not found (looked for "
                             f"{ref['mask']}); pick the mask again or clear it")
        spec = {"camera": str(prim.GetPath()), "image": ref["image"], "split": ref["split"]}
        if ref["mask"] is not None:
            spec["mask"] = ref["mask"]
        specs.append(spec)
    if not specs:
        raise InputError(f"no camera on the stage has a {REFERENCE_IMAGE_ATTR}; pick a reference photo for at "
                         "least one camera")
    return specs


# --- options and scene --------------------------------------------------------------------

def preset_names() -> list[str]:
    """Names for the window's 'parameters to fit' combo: "default" then the presets."""
    return ["default"] + sorted(PRESETS)


def make_options(preset: str = "default", *, iterations: int = 60, samples: int | None = None, seed: int = 0,
                 device: str = "cpu", time_budget: float | None = None, backend: str = "auto",
                 maps: list[str] | None = None, map_resolution: int = 512) -> FitOptions:
    """:class:`pbrfit.options.FitOptions` from the window's choices, resolved and checked by
    :func:`pbrfit.options.resolve` (the command line's and the job file's rules). ``maps``:
    parameters to fit as texture maps on the mesh's UVs (:mod:`pbrfit.textures`), written
    back as OmniPBR texture inputs.

    Raises:
        InputError: unknown preset or bad values, named as the window names them.
    """
    overrides = {"preset": None if preset == "default" else preset, "iterations": iterations, "samples": samples,
                 "seed": seed, "device": device, "time_budget": time_budget, "backend": backend}
    textures = None
    if maps:
        textures = check_textures({"maps": list(maps), "resolution": map_resolution},
                                  "Material Fit window: texture maps")
    return resolve(None, overrides, override_labels=lambda name: f"Material Fit window: {name}", textures=textures)


def _root_dir(stage: Usd.Stage) -> Path:
    root = stage.GetRootLayer()
    return Path(root.realPath).parent if root.realPath else Path.cwd()


def build_fit_scene(stage: Usd.Stage, target_path: str, time=Usd.TimeCode.Default(), *,
                    start_from_defaults: bool = False, uv: str | None = None,
                    need_uvs: bool = False) -> tuple[FitScene, list[str]]:
    """Read the live stage and its reference attributes into a :class:`FitScene` (the CLI's path).

    Args:
        start_from_defaults: accept a target whose bound material pbrfit cannot read (the
            fit then starts from Blender's defaults); otherwise that is an error.
        uv: the texture coordinate primvar (None: the default order).
        need_uvs: texture maps will be fitted: a mesh without texture coordinates is an error.

    Returns:
        The scene and every file read.

    Raises:
        InputError: unknown target or not a Mesh, no/missing references, a bad image, or a
            bound material with an unsupported shader (unless ``start_from_defaults``).
    """
    root = stage.GetRootLayer()
    source = f"stage {root.realPath or root.identifier}"
    contents = read_stage(stage, target=target_path, time=time, uv=uv)
    if not contents.material_source and not start_from_defaults:
        bound, _ = UsdShade.MaterialBindingAPI(stage.GetPrimAtPath(contents.target)).ComputeBoundMaterial()
        if bound:
            raise InputError(
                f"{source}: material {bound.GetPath()} bound to {contents.target} has no surface shader pbrfit "
                "can read (OpenPBR, OmniPBR, OmniPBR_ClearCoat or UsdPreviewSurface); start from Blender's "
                "defaults instead (start_from_defaults) or bind a supported material")
    if need_uvs and contents.mesh.uvs is None:
        raise InputError(f"{source}: mesh {contents.target} has no texture coordinates (primvars:st), so texture "
                         "maps cannot be fitted; add UVs or fit without maps")
    return build_scene(contents, reference_views(stage), _root_dir(stage), source=source)


# --- the session --------------------------------------------------------------------------

class FitSession(EngineFitSession):
    """The engine's :class:`pbrfit.session.FitSession` (a fit on a background thread, polled
    from Kit's main thread) whose scene is read from the live stage when it starts.

    States: ``"idle"`` -> ``"running"`` -> ``"done"`` | ``"cancelled"`` | ``"failed"``.

    Attributes:
        scene, files: the scene fitted and the files read (after :meth:`start`).
        result, error, message, latest: see :class:`pbrfit.session.FitSession`.
    """

    def __init__(self, stage: Usd.Stage, target_path: str, options: FitOptions | None = None,
                 time=Usd.TimeCode.Default(), *, start_from_defaults: bool = False):
        super().__init__(None, options or FitOptions())
        self.stage, self.target_path, self.time = stage, str(target_path), time
        self.start_from_defaults = start_from_defaults
        self.files: list[str] = []

    def start(self) -> FitSession:
        """Read the stage (this thread: USD stages are not thread-safe) and start the fit.

        Raises:
            InputError: the stage, target or references are unusable (nothing started).
            RuntimeError: already started.
        """
        if self.state != "idle":
            raise RuntimeError(f"this fit session is already {self.state}; make a new one")
        self.options.validate()
        textures = self.options.textures
        self.scene, self.files = build_fit_scene(self.stage, self.target_path, self.time,
                                                 start_from_defaults=self.start_from_defaults,
                                                 uv=textures.uv if textures else None, need_uvs=textures is not None)
        return super().start()

    def write_back(self, **kwargs) -> WriteBackRecord:
        """Author the fitted material (and its texture maps, as files beside the edit layer)
        on the stage (see :func:`write_back_material`)."""
        result = self.outcome()
        kwargs.setdefault("maps", getattr(result, "textures", None) or None)
        return write_back_material(self.stage, self.scene.target if self.scene else self.target_path,
                                   result.material, **kwargs)


async def run_async(session: FitSession, *, on_progress: Callable[[Progress], None] | None = None,
                    poll_interval: float = 0.05) -> FitResult:
    """Start ``session`` (if idle) and await it without blocking the event loop.

    ``on_progress`` is called on the loop's thread for every report. Cancelling the awaiting
    task cancels the fit.

    Raises:
        FitCancelled, InputError, ...: what ended the fit.
    """
    if session.state == "idle":
        session.start()
    try:
        while not session.finished:
            for p in session.poll():
                if on_progress is not None:
                    on_progress(p)
            await asyncio.sleep(poll_interval)
    except asyncio.CancelledError:
        session.cancel()
        await asyncio.get_running_loop().run_in_executor(None, session.wait)
        raise
    for p in session.poll():
        if on_progress is not None:
            on_progress(p)
    return session.outcome()


# --- write-back ---------------------------------------------------------------------------

def write_back_material(stage: Usd.Stage, target_path: str, material: dict, **kwargs) -> WriteBackRecord:
    """:func:`pbrfit.writeback_usd.write_back` (same keywords: edit_layer, material_path, save, maps)."""
    return write_back(stage, target_path, material, **kwargs)


def undo_write_back(stage: Usd.Stage, record: WriteBackRecord) -> None:
    """:func:`pbrfit.writeback_usd.undo`."""
    undo(stage, record)


# --- figures ------------------------------------------------------------------------------

def result_figures(result: FitResult, folder: str | os.PathLike) -> list[dict]:
    """Write per-view PNGs for the window: reference, fit (sRGB, at the view's display
    exposure) and a ΔE2000 heat map, the same figures as report.html (:mod:`pbrfit.figures`).
    Returns ``[{"name", "split", "reference", "fit", "de_map", "de2000_mean", "exposure"}]``
    with absolute PNG paths.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, view in enumerate(result.views):
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in view.name) or f"view{i}"
        fig = view.figure()
        paths = {}
        for key, image in (("reference", fig.reference), ("fit", fig.fit), ("de_map", fig.heatmap)):
            paths[key] = str((folder / f"{i:02d}_{stem}_{key}.png").absolute())
            atomic_write_bytes(paths[key], png_bytes(image))
        out.append({"name": view.name, "split": view.split, **paths,
                    "de2000_mean": view.metrics.get("de2000_mean"), "exposure": fig.exposure})
    return out


def result_findings(result: FitResult, options: FitOptions | None = None) -> dict:
    """``{"findings": [{parameter, severity, message}], "export_losses": {target: [line]}}``:
    the plausibility findings and run notes (:func:`pbrfit.plausibility.findings`, as in
    material.json) and what each format the write-back authors drops
    (:func:`pbrfit.material_mapping.export_losses`)."""
    bounds = (options.bounds or None) if options is not None else None
    return {"findings": findings(result.material, result.fitted, bounds, result.notes),
            "export_losses": export_losses(result.material)}
