"""Accuracy and speed benchmark: fit Cycles-rendered finishes, validate under other HDRIs.

For each finish (glossy and rough plastic, gold, brushed aluminium, clear-coated paint,
fabric with sheen, two thin films, subsurface wax) on a sphere and on Suzanne:

1. Cycles renders the truth material from 4 cameras under the train HDRI and from 2 of
   them under each of 3 validation HDRIs (scripts/cycles_reference.py; cached by spec).
2. ``pbrfit`` fits the finish's preset parameters, starting from Blender's default
   Principled BSDF, on the train views only, with the raster backend.
3. We report validation ΔE2000 (mean, p95), train ΔE2000, parameter errors and wall time.

Usage::

    python scripts/benchmark_fit.py --out benchmarks [--cases glossy_plastic,gold] [--shapes sphere]

Writes ``OUT/results.json`` and ``OUT/results.md`` (a Markdown table with the machine).
Rendering runs in a subprocess per case (bpy and the fit do not share a process).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from machine import describe as describe_machine

ROOT = Path(__file__).resolve().parent.parent

FINISHES = {
    "glossy_plastic": ({"base_color": [0.05, 0.2, 0.6], "roughness": 0.15}, "plastic", 1.5),
    "rough_plastic": ({"base_color": [0.7, 0.68, 0.6], "roughness": 0.6}, "plastic", 1.5),
    "gold": ({"base_color": [1.0, 0.77, 0.33], "metallic": 1.0, "roughness": 0.25}, "metal", 1.5),
    "brushed_aluminium": ({"base_color": [0.91, 0.92, 0.92], "metallic": 1.0, "roughness": 0.35,
                           "anisotropic": 0.8, "anisotropic_rotation": 0.0}, "brushed_metal", 1.5),
    "coated_paint": ({"base_color": [0.5, 0.03, 0.03], "roughness": 0.5, "coat_weight": 1.0,
                      "coat_roughness": 0.05}, "coated_paint", 1.5),
    "fabric_sheen": ({"base_color": [0.15, 0.2, 0.45], "roughness": 0.9, "sheen_weight": 1.0,
                      "sheen_roughness": 0.35, "sheen_tint": [1.0, 1.0, 1.0]}, "fabric", 3.0),
    "thin_film": ({"base_color": [0.05, 0.05, 0.05], "roughness": 0.2, "thin_film_thickness": 350.0},
                  "thin_film", 3.0),
    "iridescent_film": ({"base_color": [0.04, 0.04, 0.05], "roughness": 0.1, "thin_film_thickness": 450.0},
                        "thin_film", 3.0),
    "subsurface_wax": ({"base_color": [0.9, 0.75, 0.5], "roughness": 0.4, "subsurface_weight": 1.0,
                        "subsurface_radius": [1.0, 0.2, 0.1], "subsurface_scale": 0.1}, "subsurface", 3.0),
}
TRAIN_HDRI = "forest"
VALIDATE_HDRIS = ["city", "courtyard", "sunset"]


def _spec(finish: str, shape: str, out: Path, resolution: int, samples: int) -> dict:
    material, _, _ = FINISHES[finish]
    return {"shape": shape, "material": material, "train_hdri": TRAIN_HDRI, "validate_hdris": VALIDATE_HDRIS,
            "cameras": 4, "validate_cameras": [0, 2], "resolution": [resolution, resolution],
            "samples": samples, "seed": 0, "out": str(out)}


def _render(spec: dict, cache: Path) -> Path:
    key = hashlib.sha256(json.dumps({k: v for k, v in spec.items() if k != "out"}, sort_keys=True).encode()).hexdigest()[:12]
    out = (cache / key).resolve()
    if (out / "job.toml").is_file():
        return out
    spec = dict(spec, out=str(out))
    spec_file = cache / f"{key}.json"
    spec_file.write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cycles_reference.py"), str(spec_file)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"Cycles reference render failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return out


def _param_errors(truth: dict, fitted: dict, names: list[str]) -> dict:
    errs = {}
    for n in names:
        t, f = truth.get(n), fitted[n]
        if t is None:
            continue
        if isinstance(f, list):
            errs[n] = max(abs(a - b) for a, b in zip(f, t))
        elif n == "anisotropic_rotation":  # a stretch along the tangent repeats every half turn
            d = abs(f - t) % 0.5
            errs[n] = min(d, 0.5 - d)
        else:
            errs[n] = abs(f - t)
    return errs


def run_case(finish: str, shape: str, args, cache: Path) -> dict:
    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.job import load_job
    from pbrfit.params import PRESETS, default_material

    t0 = time.monotonic()
    case_dir = _render(_spec(finish, shape, cache, args.resolution, args.samples), cache)
    render_s = time.monotonic() - t0
    job = load_job(case_dir / "job.toml")
    material, preset, target = FINISHES[finish]
    opts = FitOptions(parameters=list(PRESETS[preset]), iterations=args.iterations,
                      time_budget=args.time_budget, seed=0, backend=args.backend)
    t1 = time.monotonic()
    result = fit_material(job.scene, opts)
    truth = default_material() | material
    wall = time.monotonic() - t1
    val = result.metrics.get("validate", {}).get("mean", {})
    tr = result.metrics["train"]["mean"]
    extra = {}
    path_stage = [s for s in result.schedule if s["stage"] == "path"]
    if path_stage:
        # the same judge for both: the raster-only material (where the refinement started)
        # and the refined one, path traced on the validation views
        st = path_stage[0]
        spec = _spec(finish, shape, cache, args.resolution, args.samples)
        extra = {"raster_only_material": st["start"], "path_seconds": st["seconds"],
                 "path_iterations": st["iterations"], "path_spp": st["spp"],
                 "judge_truth": _cycles_judge(spec, truth, job.scene, cache, case_dir),
                 "judge_raster_only": _cycles_judge(spec, st["start"], job.scene, cache, case_dir),
                 "judge_auto": _cycles_judge(spec, result.material, job.scene, cache, case_dir),
                 "raster_only_parameter_errors": _param_errors(truth, st["start"], result.fitted)}
    return extra | {"finish": finish, "shape": shape, "preset": preset, "target_de2000": target,
            "validate_de2000_mean": val.get("de2000_mean"), "validate_de2000_p95": val.get("de2000_p95"),
            "train_de2000_mean": tr["de2000_mean"], "parameter_errors": _param_errors(truth, result.material, result.fitted),
            "fitted": {n: result.material[n] for n in result.fitted}, "truth": {n: truth[n] for n in result.fitted},
            "wall_time_s": wall, "iterations": len(result.history) - 1, "stopped": result.stopped,
            "render_s": render_s, "views": {"train": len(job.scene.split("train")),
                                            "validate": len(job.scene.split("validate"))}}


JUDGE_SEED = 7


def _cycles_judge(spec: dict, material: dict, scene, cache: Path, ref_case: Path) -> float:
    """Mean ΔE2000 over the validation views between Cycles renders of ``material`` (same
    cameras, HDRIs and samples as the references, another seed) and the references: the
    same judge, real Cycles, for every fit. Pixels one pixel inside both alpha masks."""
    import numpy as np
    import torch

    from pbrfit import losses as L
    from pbrfit.envmap import EnvironmentMap
    from pbrfit.images import read_image

    (cache / "judge").mkdir(parents=True, exist_ok=True)
    # only the views judged: their HDRIs (refs/<hdri>/<camera>.exr), no train views
    judged = sorted({Path(v.image_path).parent.name for v in scene.views if v.split == "validate"})
    case = _render(dict(spec, material=dict(material), seed=JUDGE_SEED, train_cameras=[],
                        validate_hdris=[h for h in spec["validate_hdris"] if Path(str(h)).stem in judged]), cache / "judge")
    des = []
    for view in scene.views:
        if view.split != "validate":
            continue
        rel = Path(view.image_path).resolve().relative_to(Path(ref_case).resolve())
        ref, ref_alpha = read_image(view.image_path)
        img, alpha = read_image(case / rel)
        inside = _eroded(ref_alpha >= 0.99) & _eroded(alpha >= 0.99) & _part_coverage(scene, view)
        white = EnvironmentMap(view.environment).mean_luminance  # plus the lamps' (SceneRenderer.white)
        if view.lights:
            from pbrfit.lights import lights_white

            white += lights_white(view.lights, scene.mesh.positions.mean(0))
        pixel = float(L.de2000(torch.as_tensor(img[inside]), torch.as_tensor(ref[inside]), white=white))
        # 4x4-pixel block means (blocks entirely inside): Monte Carlo noise shrinks 4x, shading
        # differences over a few pixels stay
        h, w = (inside.shape[0] // 4) * 4, (inside.shape[1] // 4) * 4

        def blocks(a, h=h, w=w):
            return a[:h, :w].reshape(h // 4, 4, w // 4, 4, *a.shape[2:]).mean((1, 3))

        full = blocks(inside.astype(np.float64)) > 0.999
        block = float(L.de2000(torch.as_tensor(blocks(img)[full]), torch.as_tensor(blocks(ref)[full]), white=white))
        des.append((pixel, block))
    return {"pixel": float(np.mean([d[0] for d in des])), "block4": float(np.mean([d[1] for d in des]))}


def _part_coverage(scene, view):
    """Pixels of ``view`` where the part (``scene.mesh``) is the first surface: the judge scores the
    part, not other objects in view (a reference ball)."""
    import numpy as np

    if not scene.known:
        return np.ones(view.resolution, bool)
    from pbrfit.gbuffer import view_geometry
    from pbrfit.raycast import RayCaster
    from pbrfit.scene import merge_meshes

    geo = view_geometry(scene.mesh, RayCaster(scene.mesh), view, RayCaster(merge_meshes([k.mesh for k in scene.known])))
    return geo.coverage


def _eroded(mask):
    """The mask shrunk by one pixel (4-neighbourhood)."""
    import numpy as np

    m = np.pad(mask, 1, constant_values=False)
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def write_auto_table(rows: list[dict], out: Path, args) -> str:
    lines = [f"Machine: {describe_machine()}; CPU; {args.resolution} px, 4 train views ({TRAIN_HDRI}), validation under "
             f"{', '.join(VALIDATE_HDRIS)} (2 views each). Judge: each material rendered by real Cycles "
             f"({args.samples} samples, another seed) against the references; validation ΔE2000 mean over pixels "
             "inside both masks, and over 4x4-pixel block means (Monte Carlo noise of both renders shrinks 4x). "
             "*truth* is the true material through the same judge: the floor set by Cycles' own noise.", "",
             "| finish | shape | truth ΔE (4x4) | raster-only ΔE (4x4) | auto ΔE (4x4) | auto lower per pixel | raster s | "
             "path stage s (its, spp) | raster-only param errors | auto param errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r or "judge_auto" not in r:
            lines.append(f"| {r['finish']} | {r['shape']} | error: {r.get('error', 'no path stage')} | | | | | | | |")
            continue
        a, b, t = r["judge_auto"], r["judge_raster_only"], r["judge_truth"]
        better = "yes" if a["pixel"] < b["pixel"] - 1e-6 else ("same" if abs(a["pixel"] - b["pixel"]) <= 1e-6 else "**no**")

        def errs(e):
            return ", ".join(f"{k} {v:.3g}" for k, v in e.items())

        lines.append(f"| {r['finish']} | {r['shape']} | {t['pixel']:.2f} ({t['block4']:.2f}) | "
                     f"{b['pixel']:.2f} ({b['block4']:.2f}) | {a['pixel']:.2f} ({a['block4']:.2f}) | {better} | "
                     f"{r['wall_time_s'] - r['path_seconds']:.0f} | "
                     f"{r['path_seconds']:.0f} ({r['path_iterations']}, {r['path_spp'][0]}→{r['path_spp'][1]}) | "
                     f"{errs(r['raster_only_parameter_errors'])} | {errs(r['parameter_errors'])} |")
    text = "\n".join(lines) + "\n"
    (out / "results_auto.md").write_text(text)
    return text


def write_table(rows: list[dict], out: Path, args) -> str:
    lines = [f"Machine: {describe_machine()}; raster backend on CPU; {args.resolution} px, 4 train views "
             f"({TRAIN_HDRI}), validation under {', '.join(VALIDATE_HDRIS)} (2 views each); "
             f"budget {args.iterations} iterations / {args.time_budget} s.", "",
             "| finish | shape | val ΔE mean | val ΔE p95 | train ΔE mean | target | met | parameter errors (abs) | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['finish']} | {r['shape']} | error: {r['error']} | | | | | | |")
            continue
        met = "yes" if r["validate_de2000_mean"] is not None and r["validate_de2000_mean"] <= r["target_de2000"] else "**no**"
        errs = ", ".join(f"{k} {v:.3g}" for k, v in r["parameter_errors"].items())
        lines.append(f"| {r['finish']} | {r['shape']} | {r['validate_de2000_mean']:.2f} | {r['validate_de2000_p95']:.2f} | "
                     f"{r['train_de2000_mean']:.2f} | ≤ {r['target_de2000']:g} | {met} | {errs} | {r['wall_time_s']:.1f} |")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("--cases", default=",".join(FINISHES))
    ap.add_argument("--shapes", default="sphere,suzanne")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--samples", type=int, default=256, help="Cycles samples per pixel of the references")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--time-budget", type=float, default=60.0)
    ap.add_argument("--backend", default="raster", choices=["raster", "auto"],
                    help="raster: results.md/json; auto: raster-only vs auto judged alike, results_auto.md/json")
    ap.add_argument("--table-only", action="store_true", help="rewrite results.md from results.json")
    args = ap.parse_args(argv)
    stem = "results" if args.backend == "raster" else "results_auto"
    table = write_table if args.backend == "raster" else write_auto_table
    if args.table_only:
        rows = json.loads((Path(args.out) / f"{stem}.json").read_text())["rows"]
        for r in rows:
            if "fitted" in r:
                r["parameter_errors"] = _param_errors(r["truth"], r["fitted"], list(r["fitted"]))
        print(table(rows, Path(args.out), args))
        return 0
    out = Path(args.out)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for shape in args.shapes.split(","):
        for finish in args.cases.split(","):
            try:
                row = run_case(finish, shape, args, cache)
            except Exception as e:  # keep benchmarking the other cases; the table shows the failure
                row = {"finish": finish, "shape": shape, "error": f"{type(e).__name__}: {e}"[:300]}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("fitted", "truth")}), flush=True)
            (out / f"{stem}.json").write_text(json.dumps({"machine": describe_machine(), "rows": rows}, indent=2))
            table(rows, out, args)
    print(table(rows, out, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
