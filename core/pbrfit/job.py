"""Job files: a TOML description of a fit, loaded into a :class:`pbrfit.scene.FitScene`.

Format (paths are relative to the job file; ``~`` is expanded)::

    scene = "scene.usda"          # the USD stage
    target = "/root/Part"         # optional when the stage holds one Mesh; may name the
                                  # Mesh or an ancestor holding exactly one Mesh
    time = 1.0                    # optional USD time code (default time when absent)

    [[views]]
    camera = "/root/Cam0"         # a Camera prim, or an ancestor holding exactly one
    image = "refs/cam0.exr"       # linear EXR (alpha = mask), sRGB PNG/JPEG/TIFF, or a
                                  # camera RAW file (.dng, .cr2, .nef, .arw, ...: pbrfit.raw)
    environment = "hdri/forest.exr"  # optional: replaces the DomeLight's texture, keeping
                                  # its rotation, intensity, exposure and colour
    split = "train"               # or "validate"; default "train"
    mask = "refs/cam0_mask.png"   # optional; overrides the image's alpha
    name = "front"                # optional; default: the camera path's last element,
                                  # then "<camera>@<environment>" for a second view of the
                                  # same camera under other lighting
    exposure = 0.0                # optional: the photo is 2^exposure times the radiance the
                                  # lighting gives (stops; default 0), or "auto": fitted (a
                                  # camera JPEG of unknown exposure); at least one view must
                                  # have a known exposure (else the base colour's level and
                                  # the exposure trade against each other)
    encoding = "srgb"             # what an integer image's values are: "srgb" (8-bit files'
                                  # default) or "linear"; required for 16-bit PNG/TIFF, which
                                  # raw converters write either way (float EXR: linear)
    color_chart = "refs/chart.jpg"  # optional: a photo (this one, or another with the same
                                  # camera, settings and light) with a ColorChecker Classic:
                                  # the photo is colour corrected by it (pbrfit.colorchart)
    raw_white_balance = "camera"  # RAW images only: "camera" (as shot, default), "daylight"
                                  # or multipliers [r, g, b]
    lights = ["/World/KeyRig"]    # optional: the analytic lights lighting this view are those
                                  # at or under these prims (default: every light on the
                                  # stage; [] for none: the environment alone)

    [fit]                         # optional; every key optional
    preset = "plastic"            # a name in pbrfit.params.PRESETS
    parameters = ["base_color", "roughness"]
    freeze = ["metallic"]
    backend = "auto"              # auto (default), raster or path; see pbrfit.fit
    path_iterations = 40          # path-traced refinement (auto, path)
    path_spp = 4                  # paths per pixel at its start, doubling up to path_max_spp
    path_max_spp = 32
    path_depth = 4                # surface vertices per path
    device = "cpu"
    optimizer = "lbfgs"           # see pbrfit.fit.FitOptions
    iterations = 300
    time_budget = 120.0           # seconds
    seed = 0
    loss = "l1"                   # or {l1 = 1.0, ssim = 0.2}; names from pbrfit.losses.LOSSES
    samples = 16
    bounds = { roughness = [0.1, 0.9] }

    [textures]                    # optional: fit these parameters as texture maps
    maps = ["base_color", "roughness"]  # any of pbrfit.textures.TEXTURE_MAPS
    resolution = 512              # texels per side, a power of two
    uv = "st"                     # the mesh's texCoord2f primvar (default: st, UVMap, first)
    iterations = 160              # Adam steps over the pyramid 1/8 .. 1
    tv_weight = 0.1               # total variation per map; prior_weight, learning_rate

    [calibrate]                   # optional: correct the capture alongside the material; each
                                  # key is its prior's sigma (pbrfit.calibration)
    environment_rotation = 5.0    # yaw of each environment about the up axis, degrees
    environment_exposure = 0.5    # each environment's intensity, stops
    white_balance = 0.05          # photos' R/B log gains; or { sigma = 0.05, per = "view" }
    light_intensity = 0.5         # each analytic light's intensity, stops
    light_color = 0.05            # each analytic light's R/B log gains (luminance kept)
    light_direction = 2.0         # each light with a direction turned about its centre, degrees
    light_position = 0.02         # each light but distant ones moved, metres
    [[calibrate.reference]]       # optional: an object of known material in the photos
    prim = "/World/GreyBall"
    material = { base_color = [0.18, 0.18, 0.18], roughness = 0.8 }  # else its bound material

A view's mask is, in order: the ``mask`` file; else the image's alpha channel unless it is
fully opaque (an opaque alpha says nothing about the object's outline); else None, and the
renderer uses the mesh's silhouette. Lighting is the view's ``environment`` image, oriented
and scaled by the stage's DomeLight (or, without one, by
:func:`pbrfit.usd_stage.default_world_from_dome` with scale 1); without ``environment``
it is the DomeLight's own texture.

Every problem is an :class:`pbrfit.errors.InputError` whose one line names the job file
(and the view) and says what to change.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .calibration import CalibrateSettings, check_calibrate
from .errors import InputError
from .images import (
    ENCODINGS,
    MAX_WORKING_SIZE,
    area_downsample,
    check_mask,
    read_environment,
    read_mask,
    read_photo,
    working_size,
)
from .options import JOB_KEYS as FIT_KEYS
from .options import check_table, host_label, table_label
from .raw import is_raw, white_balance_of
from .scene import Environment, FitScene, View
from .textures import TextureSettings, check_textures
from .usd_stage import StageContents, default_world_from_dome, is_package_path, read_stage

__all__ = ["Job", "load_job", "build_scene", "FIT_KEYS", "JOB_KEYS", "VIEW_KEYS", "SPLITS", "ASPECT_TOLERANCE"]

JOB_KEYS = ("scene", "target", "time", "views", "fit", "textures", "calibrate")
VIEW_KEYS = ("camera", "image", "environment", "split", "mask", "name", "exposure", "encoding", "color_chart",
             "raw_white_balance", "lights")
#: a view's exposure (stops) must lie within this
MAX_EXPOSURE_STOPS = 30.0
SPLITS = ("train", "validate")

#: Largest relative difference between an image's aspect and its camera aperture's.
ASPECT_TOLERANCE = 0.01


@dataclass
class Job:
    """A loaded job.

    Attributes:
        scene: the fit's scene, every view filled in.
        fit_options: the validated ``[fit]`` table with ``overrides`` applied (only keys
            that were given).
        job_path: the job file, absolute.
        input_files: every file read (job, stage layers, images, masks, environments),
            absolute, in first-read order, for provenance hashes.
        textures: the validated ``[textures]`` table, or None.
        calibrate: the validated ``[calibrate]`` table, or None.
    """

    scene: FitScene
    fit_options: dict
    job_path: Path
    input_files: list[str] = field(default_factory=list)
    textures: TextureSettings | None = None
    calibrate: CalibrateSettings | None = None


# --- [fit] --------------------------------------------------------------------------------

def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _fit_options(table: dict, where: str) -> dict:
    """Validate a ``[fit]`` table (:mod:`pbrfit.options`, the rules every route shares);
    returns a new dict with normalized values."""
    if not isinstance(table, dict):
        raise InputError(f"{where}: [fit] must be a table, got {table!r}")
    return check_table(table, label=table_label(where), allowed=FIT_KEYS, where=f"{where}: [fit]")


# --- the job file -------------------------------------------------------------------------

def _read_toml(path: Path) -> dict:
    if not path.exists():
        raise InputError(f"job file {path} does not exist; check the path")
    if not path.is_file():
        raise InputError(f"job file {path} is not a file; give a .toml job file")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark (Windows editors) is fine
    except UnicodeDecodeError as e:
        raise InputError(f"job file {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise InputError(f"cannot read job file {path}: {e.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"job file {path} is not valid TOML: {' '.join(str(e).split())}; fix that line") from None


def _string(table: dict, key: str, where: str, required: bool) -> str | None:
    if key not in table:
        if required:
            raise InputError(f"{where}: missing key '{key}'")
        return None
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _file(base: Path, value: str) -> Path:
    return Path(os.path.abspath(base / Path(value).expanduser()))


class _Files:
    """Ordered set of the files read."""

    def __init__(self):
        self.items: dict[str, None] = {}

    def add(self, path) -> None:
        self.items[str(Path(path).absolute())] = None


def _wrap(where: str, fn, *args, **kwargs):
    """Call ``fn``; prefix an InputError's message with ``where`` (still one line)."""
    try:
        return fn(*args, **kwargs)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def _environment(stage: StageContents, env_path: Path | None, cache: dict, files: _Files,
                 where: str, lights: tuple) -> Environment:
    dome = stage.dome
    packaged = env_path is None and dome is not None and bool(dome.texture) and is_package_path(dome.texture)
    if env_path is None and dome is None and lights:  # a studio rig: the view's lights only
        return Environment(image=np.zeros((8, 16, 3), np.float32), world_from_dome=default_world_from_dome(
            stage.up_axis), scale=np.ones(3), source="(none: the stage's lights only)")
    if env_path is None:
        if dome is None:
            raise InputError(f"{where}: the stage {stage.path} has no DomeLight, no other light for this view and the "
                             "view has no 'environment'; add environment = \"hdri.exr\" to the view or a light to the "
                             "stage")
        env_path = _wrap(where, dome.texture_file)
    key = str(env_path)
    if key not in cache:
        cache[key] = _wrap(where, read_environment, env_path)
        if not packaged:  # a texture inside a USDZ package is hashed with its package
            files.add(env_path)
    if dome is not None:
        rotation, scale = dome.world_from_dome.copy(), dome.scale.copy()
    else:
        rotation, scale = default_world_from_dome(stage.up_axis), np.ones(3)
    environment = Environment(image=cache[key], world_from_dome=rotation, scale=scale, source=key)
    check_lighting(environment, dome, where, black_allowed=bool(lights))
    return environment


#: Below this mean luminance an environment is black (radiance units are the file's own).
MIN_WHITE = 1e-20
#: Above this ratio of a reference's mean (over the part) to its lighting's white, the two
#: cannot belong together: the environment is (nearly) black or the image's exposure is off.
MAX_REFERENCE_TO_WHITE = 1e3
#: Negative texels carrying more than this share of an environment's energy are refused
#: (a few slightly negative texels from filtering are clamped to zero).
MAX_NEGATIVE_SHARE = 0.01


def check_lighting(environment: Environment, dome, where: str, black_allowed: bool = False) -> None:
    """Refuse lighting that cannot define ΔE2000's white: non-finite, substantially
    negative, black or near-black radiance (the file, the DomeLight's intensity, exposure
    and colour are named). ``black_allowed``: other lights define the white (a black
    environment is then a studio's dark surround)."""
    from .color import environment_white

    light = ""
    if dome is not None:
        light = (f" under DomeLight {dome.prim_path} (intensity {dome.intensity:g}, exposure {dome.exposure:g}, "
                 f"color {', '.join(f'{c:g}' for c in dome.color)})")
    what = f"environment {environment.source}{light}"
    scale = np.asarray(environment.scale, dtype=np.float64)
    if not np.isfinite(scale).all():
        raise InputError(f"{where}: {what}: intensity x 2^exposure x color overflows; use a smaller exposure")
    if (scale < 0).any():
        raise InputError(f"{where}: {what}: a negative intensity or color is not light; make them >= 0")
    img = np.asarray(environment.image, dtype=np.float64)
    negative = -np.minimum(img, 0.0).sum()
    total = np.abs(img).sum()
    if negative > MAX_NEGATIVE_SHARE * total:
        count = int((img < 0).any(axis=2).sum())
        raise InputError(f"{where}: environment {environment.source} has {count} of {img.shape[0] * img.shape[1]} "
                         f"texels with negative radiance ({100 * negative / max(total, 1e-300):.0f}% of its "
                         "energy); negative values are not light, fix the HDRI")
    with np.errstate(over="ignore", invalid="ignore"):
        white = environment_white(np.maximum(img, 0.0), scale)
    if not np.isfinite(white) or white > 1e30:
        raise InputError(f"{where}: {what}: the radiance overflows (mean luminance {white:.3g}); "
                         "scale the HDRI down or lower the exposure")
    if white < MIN_WHITE and not black_allowed:
        raise InputError(f"{where}: {what} is black (mean luminance {white:.3g}): ΔE2000 needs the light's "
                         "white; check the HDRI file and the DomeLight's intensity and exposure")


def _view(table, index: int, base: Path, stage: StageContents, env_cache: dict, files: _Files,
          source: str) -> tuple[View, tuple]:
    where = f"{source} view {index + 1}"
    if not isinstance(table, dict):
        raise InputError(f"{where}: each [[views]] entry must be a table, got {table!r}")
    unknown = [k for k in table if k not in VIEW_KEYS]
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(VIEW_KEYS)}")
    camera_path = _string(table, "camera", where, True)
    image_value = _string(table, "image", where, True)
    split = table.get("split", "train")
    if split not in SPLITS:
        raise InputError(f"{where}: split {split!r} is unknown; use \"train\" or \"validate\"")
    name = _string(table, "name", where, False)
    if name is not None:
        where = f"{source} view '{name}'"
    exposure = table.get("exposure", 0.0)
    if exposure != "auto" and (isinstance(exposure, bool) or not isinstance(exposure, (int, float))
                               or not abs(exposure) <= MAX_EXPOSURE_STOPS):
        raise InputError(f"{where}: exposure {exposure!r} must be a number of stops within "
                         f"+-{MAX_EXPOSURE_STOPS:g} (the photo is 2^exposure times the lighting's radiance) or "
                         "\"auto\" (fitted)")

    camera = _wrap(where, stage.camera, camera_path)
    image_path = _file(base, image_value)
    encoding = table.get("encoding")
    if encoding is not None and encoding not in ENCODINGS:
        raise InputError(f"{where}: encoding {encoding!r} is unknown; use \"srgb\" or \"linear\"")
    raw_wb = table.get("raw_white_balance")
    if is_raw(image_path):  # a camera RAW file: developed linear by LibRaw (pbrfit.raw)
        if encoding == "srgb":
            raise InputError(f"{where}: image {image_path} is a camera RAW file, which is developed linear; remove "
                             "encoding = \"srgb\"")
    else:
        chart = table.get("color_chart")
        if raw_wb is not None and not (isinstance(chart, str) and is_raw(chart)):
            raise InputError(f"{where}: raw_white_balance applies to camera RAW images (.dng, .cr2, .nef, ...), not "
                             f"to {image_path}; remove it")
    photo_wb = white_balance_of("camera" if raw_wb is None else raw_wb, where)
    # integer photos and RAW files saturate: ``clipped`` marks where a channel hit the file's maximum
    rgb, alpha, clipped, bits = _wrap(where, read_photo, image_path, encoding, photo_wb)
    if not is_raw(image_path) and encoding is None and bits is not None and bits > 8:
        raise InputError(f"{where}: image {image_path} is a {bits}-bit integer file, which raw converters write "
                         "sRGB-encoded or linear; say which: add encoding = \"srgb\" or encoding = \"linear\" to "
                         "the view")
    files.add(image_path)
    notes = []
    chart_value = _string(table, "color_chart", where, False)
    if chart_value is not None:  # colour-correct the photo by a ColorChecker (pbrfit.colorchart)
        from .colorchart import correction_of

        chart_path = _file(base, chart_value)
        key = ("color_chart", str(chart_path), encoding, photo_wb)
        if key not in env_cache:
            env_cache[key] = correction_of(chart_path, encoding, where, photo_wb)
            files.add(chart_path)
            mean, worst = env_cache[key].residual_de2000
            notes.append({"severity": "note" if worst < 5 else "warning", "about": "colour chart",
                          "message": f"{where}: colour corrected by the ColorChecker in {chart_path}: its residual "
                                     f"ΔE2000 after correction is {mean:.2f} mean, {worst:.2f} worst patch"})
        rgb = env_cache[key].apply(rgb)
    h, w = rgb.shape[:2]
    if abs((w / h) / camera.aspect - 1.0) > ASPECT_TOLERANCE:
        raise InputError(
            f"{where}: image {image_path} is {w}x{h} (aspect {w / h:.4f}) but camera {camera.prim_path} "
            f"has aperture {camera.horizontal_aperture:g} x {camera.vertical_aperture:g} (aspect "
            f"{camera.aspect:.4f}); change the camera's aperture (verticalAperture = "
            f"{camera.horizontal_aperture * h / w:.6g}) or crop the image to the camera's aspect")

    mask_value = _string(table, "mask", where, False)
    if mask_value is not None:
        mask_path = _file(base, mask_value)
        mask = _wrap(where, read_mask, mask_path, (h, w))
        files.add(mask_path)
    elif alpha is not None and float(alpha.min()) < 1.0 - 1e-6:
        _wrap(where, check_mask, alpha, f"(alpha of {image_path})")
        mask = alpha
    else:
        mask = None
    wh, ww = working_size(h, w)
    if (wh, ww) != (h, w):
        # memory and time grow with the pixels a view covers: work at a bounded resolution
        rgb = area_downsample(rgb, wh, ww)
        mask = None if mask is None else np.clip(area_downsample(mask, wh, ww), 0.0, 1.0)
        if clipped is not None:  # a working pixel with any clipped photo pixel in it is clipped
            clipped = area_downsample(clipped.astype(np.float32), wh, ww) > 0
        notes.append({"severity": "note", "about": "image size",
                      "message": f"{where}: image {image_path} ({w}x{h}) is used at {ww}x{wh}, area-averaged (the "
                                 f"working resolution is at most {MAX_WORKING_SIZE} px on the longer side)"})

    env_value = _string(table, "environment", where, False)
    env_path = _file(base, env_value) if env_value is not None else None
    lights = _view_lights(stage, table, where)
    environment = _environment(stage, env_path, env_cache, files, where, lights)
    if exposure != "auto":
        if exposure:
            rgb = (rgb / 2.0 ** float(exposure)).astype(np.float32)  # into the lighting's units
        _check_exposure(rgb, mask, environment, image_path, where, stage, lights)

    view = View(
        name=name or camera_path.rstrip("/").rsplit("/", 1)[-1],
        camera=camera,
        environment=environment,
        image=rgb,
        mask=mask,
        split=split,
        image_path=str(image_path),
        lights=lights,
        exposure=exposure if exposure == "auto" else float(exposure),
        clipped=clipped,
    )
    if clipped is not None:
        inside = clipped if mask is None else clipped & (mask > 0.5)
        notes.append({"severity": "note", "about": "clipped pixels",
                      "message": f"{where}: {int(clipped.sum())} pixels of {image_path} ({int(inside.sum())} on the "
                                 "part, as far as its mask says) reach the file's maximum in a channel (a clipped "
                                 "highlight): they and their neighbours are left out of the fit and its metrics"})
    identity = (camera.prim_path, str(image_path), environment.source, tuple(li.prim_path for li in lights))
    return view, identity, notes


def _view_lights(stage: StageContents, table: dict, where: str) -> tuple:
    """The analytic lights of a view: the stage's, or those at or under its ``lights`` prims."""
    value = table.get("lights")
    if value is None:
        return stage.lights
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith("/") for v in value):
        raise InputError(f"{where}: lights {table.get('lights')!r} must be a prim path or a list of prim paths "
                         "(\"/World/KeyRig\"), or [] for no analytic light")
    chosen = []
    for root in value:
        root = root.rstrip("/") or "/"
        prim = stage.stage.GetPrimAtPath(root) if stage.stage is not None else None
        if prim is None or not prim.IsValid():
            raise InputError(f"{where}: lights {root!r} is not a prim on stage {stage.path}; name a light or a prim "
                             "holding lights")
        under = [li for li in stage.lights if li.prim_path == root or li.prim_path.startswith(root.rstrip("/") + "/")]
        if not under:
            known = ", ".join(li.prim_path for li in stage.lights[:8]) or "none"
            raise InputError(f"{where}: lights {root!r} holds no active, visible light pbrfit renders (the stage's "
                             f"lights: {known}); fix the path or activate the light")
        chosen += [li for li in under if li not in chosen]
    return tuple(chosen)


def _check_exposure(rgb: np.ndarray, mask, environment: Environment, image_path, where: str, stage,
                    lights: tuple) -> None:
    """Refuse a reference far brighter than its lighting can make the part (a near-black
    environment, or an image exposed for other light)."""
    from .color import environment_white
    from .lights import lights_white

    weight = (mask if mask is not None else (rgb.max(axis=2) > 0)).astype(np.float64)
    if weight.sum() < 1:
        return
    mean = float((rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722]) * weight).sum() / weight.sum())
    white = environment_white(np.maximum(environment.image, 0.0), environment.scale)
    if lights:
        white += lights_white(lights, stage.mesh.positions.mean(0))
    if mean > MAX_REFERENCE_TO_WHITE * white:
        raise InputError(f"{where}: image {image_path} is {mean / white:.3g} times brighter than its lighting "
                         f"{environment.source} (mean luminance {white:.3g}) can make the part; the environment is "
                         "(nearly) black or the image was exposed differently: fix one of them")


def load_job(path, overrides: dict | None = None) -> Job:
    """Load and check a job file (format in the module docstring).

    Args:
        path: the job's TOML file.
        overrides: ``[fit]`` keys to replace (e.g. from the command line); None values are
            ignored. Validated like the ``[fit]`` table.

    Returns:
        The :class:`Job`, with every image, mask and environment read.

    Raises:
        InputError: a missing file or key, bad TOML (with its line), an unknown key, split
            or parameter, an image whose aspect does not match its camera, NaN/Inf pixels,
            an empty mask, no "train" view, or two identical views.
    """
    job_path = Path(os.path.abspath(Path(path).expanduser()))
    data = _read_toml(job_path)
    where = f"job {job_path}"
    unknown = [k for k in data if k not in JOB_KEYS]
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(JOB_KEYS)} "
                         "(put fit settings under [fit])")
    fit_options = _fit_options(data.get("fit", {}), where)
    textures = check_textures(data["textures"], f"{where}: [textures]") if "textures" in data else None
    calibrate = check_calibrate(data["calibrate"], f"{where}: [calibrate]") if "calibrate" in data else None
    if overrides:
        fit_options.update(check_table(overrides, label=host_label, where="options"))

    base = job_path.parent
    scene_value = _string(data, "scene", where, True)
    target = _string(data, "target", where, False)
    time = data.get("time")
    if time is not None and not _is_number(time):
        raise InputError(f"{where}: 'time' must be a number (a USD time code), got {time!r}")
    views_table = data.get("views")
    if not isinstance(views_table, list) or not views_table:
        raise InputError(f"{where}: no views; add at least one [[views]] table with camera and image")

    files = _Files()
    files.add(job_path)
    stage = _wrap(where, read_stage, _file(base, scene_value), target=target,
                  time=None if time is None else float(time), uv=textures.uv if textures else None)
    if textures is not None and stage.mesh.uvs is None:
        raise InputError(f"{where}: [textures]: mesh {stage.mesh.prim_path} has no texture coordinates; add a UV map "
                         "(Blender: UV > Smart UV Project, exported as primvars:st) or remove [textures]")
    scene, read = build_scene(stage, views_table, base, source=where)
    if calibrate is not None and calibrate.references:
        if not calibrate.keys():
            raise InputError(f"{where}: [calibrate] has references but nothing to calibrate; add e.g. "
                             "environment_exposure = 0.5")
        from .usd_stage import read_known_object

        known = []
        for prim, material in calibrate.references:
            obj = _wrap(f"{where}: [calibrate] reference", read_known_object, stage.stage, prim, stage.time,
                        stage.path, material)
            if obj.mesh.prim_path == stage.mesh.prim_path:
                raise InputError(f"{where}: [calibrate] reference {prim} is the target itself; name another object")
            known.append(obj)
        scene = dataclasses.replace(scene, known=tuple(known))
    for f in read:
        files.add(f)
    if calibrate is not None and calibrate.keys():  # what it names must exist: checked before any fitting
        from .calibration import Calibration

        _wrap(where, Calibration, scene, calibrate, [i for i, v in enumerate(scene.views) if v.split == "train"])
    return Job(scene=scene, fit_options=fit_options, job_path=job_path, input_files=list(files.items),
               textures=textures, calibrate=calibrate)


def build_scene(stage: StageContents, view_specs: list, base_dir, *, source: str) -> tuple[FitScene, list[str]]:
    """The :class:`FitScene` of a read stage and its views: the one path from stage to scene.

    Used by :func:`load_job` (views from the job's ``[[views]]``) and by host adapters
    (views from the stage's cameras, see ``pbrfit_material_fit.controller``).

    Args:
        stage: from :func:`pbrfit.usd_stage.read_stage`.
        view_specs: one dict per view with the keys of :data:`VIEW_KEYS` (``camera`` and
            ``image`` required); file paths relative to ``base_dir`` (absolute ones are
            kept).
        base_dir: directory relative paths are anchored to.
        source: prefix of every error message, e.g. ``"job /path/job.toml"``.

    Returns:
        The scene and every file read for it (stage layers, images, masks, environments),
        absolute, in first-read order.

    Raises:
        InputError: as :func:`load_job` for the views (one line starting with ``source``).
    """
    where = source
    base = Path(base_dir)
    files = _Files()
    for f in stage.files:
        files.add(f)

    views: list[View] = []
    notes: list[dict] = []
    seen_names: dict[str, int] = {}
    seen_views: dict[tuple, int] = {}
    env_cache: dict = {}
    for index, table in enumerate(view_specs):
        view, identity, view_notes = _view(table, index, base, stage, env_cache, files, source)
        notes.extend(view_notes)
        if identity in seen_views:
            raise InputError(f"{where}: views {seen_views[identity] + 1} and {index + 1} are the same "
                             f"(camera {identity[0]}, image {identity[1]}); remove one")
        seen_views[identity] = index
        explicit = isinstance(table, dict) and "name" in table
        if view.name in seen_names:
            if explicit:
                raise InputError(f"{where}: views {seen_names[view.name] + 1} and {index + 1} are both named "
                                 f"'{view.name}'; give each view its own name")
            first = views[seen_names[view.name]]
            if first.environment.source != view.environment.source:
                view.name = f"{view.name}@{Path(view.environment.source).stem}"
            else:
                view.name = f"{view.name}_{Path(view.image_path).stem}"
            if view.name in seen_names:
                raise InputError(f"{where}: cannot name view {index + 1} uniquely; add name = \"...\" to it")
        seen_names[view.name] = index
        views.append(view)

    if not any(v.split == "train" for v in views):
        raise InputError(f"{where}: no view has split = \"train\"; at least one view must be used for fitting")
    if all(v.exposure == "auto" for v in views if v.split == "train"):
        raise InputError(f"{where}: every train view has exposure = \"auto\", so the photos' brightness cannot "
                         "tell the base colour's level from the exposure; give at least one train view its exposure "
                         "in stops (0 when the photo is in the lighting's units, e.g. a linear EXR of a calibrated "
                         "capture)")

    scene = FitScene(
        mesh=stage.mesh,
        views=views,
        up_axis=stage.up_axis,
        meters_per_unit=stage.meters_per_unit,
        initial_material=stage.material,
        initial_material_source=stage.material_source,
        target=stage.target,
        stage_path=stage.path,
        notes=notes,
    )
    return scene, list(files.items)

