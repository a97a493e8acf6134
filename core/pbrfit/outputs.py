"""A fit's output directory: material.json, material.mtlx, material.usda, report.html.

Everything is written into a staging directory and published together
(:class:`pbrfit.atomic.OutputDir`): after an error or a cancel, ``DIR`` is as it was.

``material.json`` layout::

    {
      "format": "pbrfit.material/1",
      "parameters": {canonical name: value},          # Blender 5.0 Principled semantics
      "initial": {canonical name: value},
      "fitted": [names optimized],
      "metrics": {split: {"views": {view: {de2000_mean, de2000_p95, ssim, l1, mask_iou}},
                          "mean": {...}}},
      "normalization": "...",                          # how HDR was mapped for ΔE2000
      "plausibility": [{parameter, severity, message}],
      "export_drops": {target: [{parameter, reason}]},
      "textures": {parameter: {file, colorspace, channels, resolution, uv,
                               observed_share}},             # only with [textures]
      "stopped": why the fit ended,
      "history": [...], "provenance": {...}
    }
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import json
import math
import os
from pathlib import Path

import numpy as np

from . import hypotheses, plausibility, provenance, report
from .atomic import OutputDir, atomic_write_text
from .errors import InputError, WriteError
from .export import write_materialx, write_usd_material
from .params import PARAMETERS

__all__ = ["NORMALIZATION", "OUTPUT_NAMES", "TEXTURE_FOLDER", "texture_entries", "read_material_maps",
           "check_output_folder", "prepare_output", "write_fit_outputs",
           "read_material_json", "report_data", "finite_or_none"]

NORMALIZATION = ("linear radiance divided by the mean luminance of the view's environment "
                 "(solid-angle weighted) before CIE XYZ -> CIELAB (D65); a white Lambertian "
                 "under a uniform environment of that radiance has L* = 100")


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    return x


def _drops_as_dicts(drops) -> list[dict]:
    out = []
    for d in drops or []:
        if isinstance(d, dict):
            out.append(d)
        elif dataclasses.is_dataclass(d):
            out.append(dataclasses.asdict(d))
        elif isinstance(d, (tuple, list)) and len(d) == 2:
            out.append({"parameter": d[0], "reason": d[1]})
        else:
            out.append({"parameter": "", "reason": str(d)})
    return out


def report_data(title: str, job_path: str, result, flags, drops, prov) -> dict:
    """The dict :func:`pbrfit.report.write_report` renders."""
    views = []
    for v in result.views:
        views.append({"name": v.name, "split": v.split, "reference": v.reference, "fit": v.fit,
                      "de_map": v.de_map, "mask": v.mask, "exposure": v.exposure, "metrics": v.metrics})
    params = []
    tolerances = getattr(result, "identifiability", None) or {}
    for n, spec in PARAMETERS.items():
        params.append({"name": n, "initial": result.initial[n], "final": result.material[n],
                       "fitted": n in result.fitted, "unit": spec.unit,
                       "lower": spec.lower, "upper": spec.upper,
                       "tolerance": (tolerances.get(n) or {}).get("tolerance")})
    return {
        "title": title, "job": job_path, "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "views": views,
        "summary": {split: d["mean"] for split, d in result.metrics.items()},
        "history": result.history, "parameters": params,
        "plausibility": list(flags), "drops": drops, "provenance": prov,
        "structure": hypotheses.structure_summary(result.schedule),
        "calibration": getattr(result, "calibration", None) or {},
        "maps": [{"name": n, "texels": m.texels, "weight": m.weight, "resolution": m.texels.shape[0],
                  "observed_share": m.observed_share, "file": f"{TEXTURE_FOLDER}/{n}.exr"}
                 for n, m in (getattr(result, "textures", None) or {}).items()],
    }


#: the files a fit writes into its output folder; material.json is published last
OUTPUT_NAMES = ("material.mtlx", "material.usda", "report.html", "material.json")


def _is_pbrfit_material(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and str(doc.get("format", "")).startswith("pbrfit.material/")


def check_output_folder(out_dir, *, inputs=(), option: str = "--out", image_pixels: int = 0) -> OutputDir:
    """Check an output folder before any long work (nothing is created).

    The ``--out`` policy: the folder may be new, empty, or hold an earlier pbrfit result
    (a ``material.json`` pbrfit wrote), whose four files are replaced; other files in it are
    left alone. Refused (InputError): an empty name, a folder that holds a
    ``material.json``, ``material.mtlx``, ``material.usda`` or ``report.html`` pbrfit did
    not write, a folder where an output would replace one of the run's input files, a
    symlink loop, a file in the way, no permission, or too little free space.

    Args:
        out_dir: the folder.
        inputs: the run's input files (none may be replaced).
        option: how the user named the folder, for messages.
        image_pixels: pixels of all views together (sizes the free-space check).

    Returns:
        The :class:`pbrfit.atomic.OutputDir`, not opened yet.
    """
    out = OutputDir(out_dir, option=option, min_free=2_000_000 + 12 * int(image_pixels))
    out.check()
    if out.path.is_dir():
        targets = {name: out.path / name for name in OUTPUT_NAMES}
        real = {os.path.realpath(t): name for name, t in targets.items()}
        for f in inputs:
            name = real.get(os.path.realpath(f))
            if name is not None:
                raise InputError(f"{option} {out.path} would replace {name}, an input of this run ({f}); "
                                 "choose another output folder")
        present = [name for name, t in targets.items() if os.path.lexists(t)]
        if present and not _is_pbrfit_material(targets["material.json"]):
            raise InputError(f"{option} {out.path} already holds {', '.join(present)} that pbrfit did not write "
                             "(no pbrfit material.json there); choose a new or empty folder, or move those files")
    return out


def prepare_output(out_dir, *, inputs=(), option: str = "--out", image_pixels: int = 0) -> OutputDir:
    """:func:`check_output_folder`, then open its staging folder (publish or discard it)."""
    out = check_output_folder(out_dir, inputs=inputs, option=option, image_pixels=image_pixels)
    out.open()
    return out


def write_fit_outputs(out_dir: str | Path | OutputDir, result, *, job_path: str, input_files: list,
                      options: dict, seed: int, title: str | None = None, publish: bool = True) -> dict:
    """Write the four outputs of a fit atomically; returns the material.json content.

    Args:
        out_dir: the folder, or an :class:`pbrfit.atomic.OutputDir` already opened
            (:func:`prepare_output`).
        publish: move the files into place now; False leaves them staged for the caller's
            ``publish()`` (e.g. after a write-back succeeded).

    Raises:
        WriteError: the staging folder could not be written (a full disk): nothing was
            written.
    """
    out = out_dir if isinstance(out_dir, OutputDir) else OutputDir(out_dir)
    staging = out.staging or out.open()
    try:
        doc = _stage_outputs(staging, result, job_path=job_path, input_files=input_files, options=options,
                             seed=seed, title=title)
    except OSError as e:
        out.discard()
        raise WriteError(f"cannot write the outputs for {out.path}: {e.strerror or e} (in {staging.parent}); "
                         "free some space or choose another output folder; nothing was written") from None
    except BaseException:
        out.discard()
        raise
    if publish:
        out.publish(last=("material.json",))
    return doc


def finite_or_none(x):
    """``x`` with every non-finite float replaced by None: JSON has no NaN or Infinity, and a
    metric that could not be measured is null."""
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite_or_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


#: the folder, inside the output folder, of the fitted texture maps
TEXTURE_FOLDER = "textures"


def texture_entries(result) -> dict:
    """material.json's ``textures``: per fitted map its file (relative to material.json),
    colour space, channels, resolution, UV primvar and observed share. Every map is an
    OpenEXR of float32 texels in the parameter's own units, row 0 at the top: base colour
    linear Rec.709 (``lin_rec709``), the others plain data (``raw``); the normal map tangent
    space, OpenGL convention (+Y along increasing v), encoded (n + 1) / 2, MikkTSpace tangents."""
    out = {}
    for name, m in (getattr(result, "textures", None) or {}).items():
        out[name] = {"file": f"{TEXTURE_FOLDER}/{name}.exr",
                     "colorspace": "lin_rec709" if name == "base_color" else "raw",
                     "channels": int(m.texels.shape[-1]), "resolution": int(m.texels.shape[0]),
                     "uv": m.uv, "observed_share": m.observed_share}
    return out


def _write_maps(staging: Path, result) -> None:
    from .images import write_exr, write_png

    maps = getattr(result, "textures", None) or {}
    if not maps:
        return
    (staging / TEXTURE_FOLDER).mkdir(exist_ok=True)
    for name, m in maps.items():
        texels = m.texels[..., 0] if m.texels.shape[-1] == 1 else m.texels
        write_exr(staging / TEXTURE_FOLDER / f"{name}.exr", texels)
        write_png(staging / TEXTURE_FOLDER / f"{name}_observed.png", (m.observed * 255).astype(np.uint8))


def _stage_outputs(staging: Path, result, *, job_path: str, input_files: list, options: dict, seed: int,
                   title: str | None) -> dict:
    for name, value in result.material.items():
        if not all(math.isfinite(float(v)) for v in np.ravel(value)):
            raise ValueError(f"the fitted {name} is not finite ({value!r}): refusing to write it")
    notes = [dict(n) for n in getattr(result, "notes", [])]
    flags = plausibility.findings(result.material, result.fitted, bounds=(options or {}).get("bounds") or None,
                                  notes=notes)
    drops = {}
    _write_maps(staging, result)
    textures = texture_entries(result)
    mtlx_drops = write_materialx(result.material, staging / "material.mtlx", textures=textures)
    usd_drops = write_usd_material(result.material, staging / "material.usda", textures=textures)
    drops["materialx"] = _drops_as_dicts(mtlx_drops)
    drops["usd"] = _drops_as_dicts(usd_drops)
    prov = provenance.collect(input_files, seed=seed, options=_jsonable(options),
                              schedule=result.schedule, wall_time=result.wall_time,
                              timings=getattr(result, "timings", None))
    prov["notes"] = notes
    doc = {
        "format": "pbrfit.material/1",
        "parameters": result.material,
        "initial": result.initial,
        "fitted": result.fitted,
        "metrics": result.metrics,
        "normalization": NORMALIZATION,
        "plausibility": flags,
        "notes": notes,
        "identifiability": finite_or_none(dict(getattr(result, "identifiability", None) or {})),
        "structure": hypotheses.structure_summary(result.schedule),
        **({"exposures": dict(result.exposures)} if getattr(result, "exposures", None) else {}),
        **({"calibration": dict(result.calibration)} if getattr(result, "calibration", None) else {}),
        "export_drops": drops,
        **({"textures": textures, "texture_levels": getattr(result, "texture_log", [])} if textures else {}),
        "stopped": result.stopped,
        "history": result.history,
        "provenance": prov,
    }
    doc = finite_or_none(_jsonable(doc))
    atomic_write_text(staging / "material.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
    report.write_report(staging / "report.html",
                        report_data(title or f"pbrfit: {Path(job_path).name}", job_path, result,
                                    flags, drops, prov))
    for name in OUTPUT_NAMES:  # a writer that failed without saying so (a full disk) leaves no or an empty file
        if not (staging / name).is_file() or (staging / name).stat().st_size == 0:
            raise OSError(errno.ENOSPC, f"{name} was not written (is the disk full?)")
    return doc


def read_material_maps(path: str | Path) -> dict:
    """The texture maps a material.json lists under ``textures`` (files relative to it), as
    {parameter: :class:`pbrfit.texture_fit.MapResult`}; {} when it lists none.

    Raises:
        InputError: a listed map file is missing or unreadable, or not a map pbrfit can use.
    """
    from .images import read_image
    from .texture_fit import MapResult
    from .textures import TEXTURE_MAPS, map_channels

    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return {}  # read_material_json reports it
    entries = doc.get("textures") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        return {}
    out = {}
    for name, entry in entries.items():
        where = f"material file {p}: textures.{name}"
        if name not in TEXTURE_MAPS or not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise InputError(f"{where}: not a map pbrfit fits ({', '.join(TEXTURE_MAPS)}) with a 'file'; "
                             "pass the material.json a fit wrote")
        file = p.parent / entry["file"]
        if not file.is_file():
            raise InputError(f"{where}: map file {file} does not exist; keep the textures folder beside material.json")
        pixels, _ = read_image(file)
        size = map_channels(name)
        texels = pixels[..., :size] if pixels.ndim == 3 else pixels[..., None]
        if texels.shape[-1] != size:
            texels = np.repeat(texels[..., :1], size, -1)
        observed = np.ones(texels.shape[:2], bool)
        mask_file = file.with_name(f"{name}_observed.png")
        if mask_file.is_file():
            observed = read_image(mask_file)[0][..., 0] > 0.5
        out[name] = MapResult(name, np.ascontiguousarray(texels, dtype=np.float32), observed,
                              observed.astype(np.float32), str(entry.get("uv") or "st"))
    return out


def read_material_json(path: str | Path) -> dict:
    """The parameters of a material file: a material.json written by pbrfit, or a JSON
    object ``{"parameters": {name: value}}``.

    Every canonical parameter must be there (nothing is silently filled with a default)
    and inside its range (:func:`pbrfit.params.check_material_ranges`).

    Raises:
        InputError: a missing or unreadable file, no ``parameters`` object, an unknown,
            missing, non-numeric, non-finite or out-of-range parameter (one line naming
            the file and the parameter).
    """
    from .params import PARAMETER_NAMES, check_material_ranges, normalize_material

    p = Path(path)
    if not p.is_file():
        raise InputError(f"material file {p} does not exist; pass the material.json a fit wrote")
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        what = " ".join(str(e).split())
        raise InputError(f"material file {p} is not valid JSON ({what}); pass the material.json a fit wrote") from None
    params = doc.get("parameters") if isinstance(doc, dict) else None
    if not isinstance(params, dict):
        raise InputError(f"material file {p} has no 'parameters' object; pass the material.json a fit wrote, "
                         "or write {\"parameters\": {\"base_color\": [r, g, b], ...}} with every parameter")
    source = f"material file {p}"
    material = normalize_material(params, source=source)  # unknown names, sizes, finiteness
    missing = [n for n in PARAMETER_NAMES if n not in params]
    if missing:
        raise InputError(f"{source}: 'parameters' lacks {', '.join(missing)}; give every parameter (the "
                         "material.json a fit wrote has them all) rather than relying on defaults")
    check_material_ranges(material, source=source)
    return material
