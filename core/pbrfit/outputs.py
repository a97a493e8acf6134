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
      "stopped": why the fit ended,
      "history": [...], "provenance": {...}
    }
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from pathlib import Path

import numpy as np

from . import plausibility, provenance, report
from .atomic import OutputDir, atomic_write_text
from .export import write_materialx, write_usd_material
from .heatmap import display_exposure
from .params import PARAMETERS

__all__ = ["NORMALIZATION", "write_fit_outputs", "read_material_json", "report_data"]

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


def _flags_as_dicts(flags) -> list[dict]:
    out = []
    for f in flags:
        if dataclasses.is_dataclass(f):
            out.append(dataclasses.asdict(f))
        elif isinstance(f, dict):
            out.append(f)
        else:
            out.append({"parameter": getattr(f, "parameter", ""), "severity": getattr(f, "severity", ""),
                        "message": str(f)})
    return out


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
        views.append({"name": v["name"], "split": v["split"], "reference": v["reference"], "fit": v["fit"],
                      "de_map": v["de_map"], "mask": v["mask"],
                      "exposure": display_exposure(v["reference"], v["mask"]),
                      "metrics": v["metrics"]})
    params = []
    for n, spec in PARAMETERS.items():
        params.append({"name": n, "initial": result.initial[n], "final": result.material[n],
                       "fitted": n in result.fitted, "unit": spec.unit,
                       "lower": spec.lower, "upper": spec.upper})
    return {
        "title": title, "job": job_path, "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "views": views,
        "summary": {split: d["mean"] for split, d in result.metrics.items()},
        "history": result.history, "parameters": params,
        "plausibility": _flags_as_dicts(flags), "drops": drops, "provenance": prov,
    }


def write_fit_outputs(out_dir: str | Path, result, *, job_path: str, input_files: list,
                      options: dict, seed: int, title: str | None = None) -> dict:
    """Write the four outputs of a fit atomically; returns the material.json content."""
    flags = plausibility.check(result.material, result.fitted, bounds=(options or {}).get("bounds") or None)
    with OutputDir(out_dir) as staging:
        drops = {}
        mtlx_drops = write_materialx(result.material, staging / "material.mtlx")
        usd_drops = write_usd_material(result.material, staging / "material.usda")
        drops["materialx"] = _drops_as_dicts(mtlx_drops)
        drops["usd"] = _drops_as_dicts(usd_drops)
        prov = provenance.collect(input_files, seed=seed, options=_jsonable(options),
                                  schedule=result.schedule, wall_time=result.wall_time)
        doc = {
            "format": "pbrfit.material/1",
            "parameters": result.material,
            "initial": result.initial,
            "fitted": result.fitted,
            "metrics": result.metrics,
            "normalization": NORMALIZATION,
            "plausibility": _flags_as_dicts(flags),
            "export_drops": drops,
            "stopped": result.stopped,
            "history": result.history,
            "provenance": prov,
        }
        doc = _jsonable(doc)
        atomic_write_text(staging / "material.json", json.dumps(doc, indent=2) + "\n")
        report.write_report(staging / "report.html",
                            report_data(title or f"pbrfit: {Path(job_path).name}", job_path, result,
                                        flags, drops, prov))
    return doc


def read_material_json(path: str | Path) -> dict:
    """Parameters from a material.json written by pbrfit (or a plain {name: value} dict)."""
    from .errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"material file {p} does not exist; pass the material.json a fit wrote")
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"material file {p} is not valid JSON ({e}); pass the material.json a fit wrote") from None
    params = doc.get("parameters", doc) if isinstance(doc, dict) else None
    if not isinstance(params, dict):
        raise InputError(f"material file {p} has no 'parameters' object")
    return params
