"""Layer-discovery benchmark: the default command, no preset, on Cycles-rendered finishes.

A user does not know which preset a part needs; that is what they ask the tool. For each
finish (scripts/benchmark_fit.py's list) on each shape:

1. Cycles renders the truth from 4 cameras under the train HDRI and 2 cameras under each of
   three others (cached by spec, shared with benchmark_fit.py).
2. ``pbrfit`` fits it as ``pbrfit fit JOB`` does with no preset (every default parameter,
   the default backend), validating under one other HDRI only (city).
3. The fitted material is re-rendered by Cycles and judged under the two HDRIs the fit never
   saw (courtyard, sunset), next to the truth through the same judge (Cycles' own noise floor).

Reported per case: judged ΔE2000 (mean over pixels and over 4x4 blocks) against the floor,
the recovered structure (metal, coat, sheen, thin film, anisotropy, subsurface) against the
true one, errors of the parameters the result says are determined (next to the tolerance it
states for each), the parameters it flags as not determined, its run-level warnings and wall
time.

Usage::

    python scripts/benchmark_discovery.py --out benchmarks [--cases glossy_plastic,gold] [--shapes sphere] [--fit-seed 1]

Writes ``OUT/discovery.json`` and ``OUT/discovery.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmark_fit import FINISHES, _cycles_judge, _param_errors, _render, _spec
from machine import describe as describe_machine

#: the HDRI the fit validates on; the judge uses the others
FIT_VALIDATE_HDRI = "city"

#: a structure's layers and when a material has them (switch values, canonical names)
LAYERS = {
    "metal": lambda m: m["metallic"] >= 0.5,
    "coat": lambda m: m["coat_weight"] > 0.05,
    "sheen": lambda m: m["sheen_weight"] > 0.05,
    "thin film": lambda m: m["thin_film_thickness"] > 10.0,
    "anisotropy": lambda m: m["anisotropic"] > 0.05,
    "subsurface": lambda m: m["subsurface_weight"] > 0.05,
}


def structure(material: dict) -> list[str]:
    return [name for name, has in LAYERS.items() if has(material)]


def _case(finish: str, shape: str, args, cache: Path):
    """(spec, reference case folder, the fit's scene, the judge's scene, the true material);
    renders the references (Cycles) unless cached."""
    from pbrfit.job import load_job
    from pbrfit.params import default_material

    spec = _spec(finish, shape, cache, args.resolution, args.samples)
    case_dir = _render(spec, cache)
    job = load_job(case_dir / "job.toml")
    # the fit validates under one other HDRI; the judge uses the two it never sees
    fit_views = [v for v in job.scene.views if v.split == "train" or FIT_VALIDATE_HDRI in str(v.image_path)]
    judge_views = [v for v in job.scene.views if v.split == "validate" and FIT_VALIDATE_HDRI not in str(v.image_path)]
    material, _, _ = FINISHES[finish]
    return (spec, case_dir, replace(job.scene, views=fit_views), replace(job.scene, views=judge_views),
            default_material() | material)


def render_references(finish: str, shape: str, args, cache: Path) -> dict:
    """The case's references and the truth's judge renders (both cached): what a later run
    reuses, so that the fits can run apart from Cycles."""
    spec, case_dir, _, judge_scene, truth = _case(finish, shape, args, cache)
    return {"finish": finish, "shape": shape, "judge_truth": _cycles_judge(spec, truth, judge_scene, cache, case_dir)}


def run_case(finish: str, shape: str, args, cache: Path) -> dict:
    from pbrfit import hypotheses
    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.layers import LAYER_OF

    spec, case_dir, fit_scene, judge_scene, truth = _case(finish, shape, args, cache)
    opts = FitOptions(seed=args.fit_seed)  # the default command: no preset, default backend and budget
    t0 = time.monotonic()
    result = fit_material(fit_scene, opts)
    wall = time.monotonic() - t0
    tolerances = result.identifiability
    # a parameter of a layer the truth does not have (a coat's roughness under no coat) has no true value
    determined = [n for n in result.fitted if (tolerances.get(n) or {}).get("determined")
                  and truth.get(LAYER_OF.get(n), 1.0) > 0]
    undetermined = [n for n in result.fitted if n in tolerances and not tolerances[n]["determined"]]
    true_structure, found = structure(truth), structure(result.material)
    return {"finish": finish, "shape": shape, "fit_seed": args.fit_seed, "wall_time_s": wall, "stopped": result.stopped,
            "judge_truth": _cycles_judge(spec, truth, judge_scene, cache, case_dir),
            "judge_fit": _cycles_judge(spec, result.material, judge_scene, cache, case_dir),
            "validate_de2000_own": (result.metrics.get("validate") or {}).get("mean", {}).get("de2000_mean"),
            "train_de2000_own": result.metrics["train"]["mean"]["de2000_mean"],
            "structure_true": true_structure, "structure_found": found,
            "structure_correct": sorted(true_structure) == sorted(found),
            "errors_determined": _param_errors(truth, result.material, determined),
            # what the result itself claims for them (material.json's identifiability): an error
            # over its tolerance is a parameter the tool is surer of than it should be
            "tolerances": {n: tolerances[n]["tolerance"] for n in determined},
            # the subsurface weight is not analysed for identifiability (the raster renderer does
            # not walk; the scale is, by the path stage's search): its errors are shown apart,
            # when the truth has it and the analysis did not place them among the determined
            "errors_subsurface": _param_errors(truth, result.material, [
                n for n in ("subsurface_weight", "subsurface_scale") if n in result.fitted
                and n not in determined and truth.get("subsurface_weight", 0.0) > 0]),
            "undetermined": undetermined,
            "warnings": [n["message"] for n in result.notes if n.get("about") == "fit"],
            "material": result.material, "timings": result.timings,
            # what a later diagnosis needs without a rerun: the structure search and the
            # path refinement's start, checks and warm starts
            "structure_search": hypotheses.structure_summary(result.schedule),
            "path_stage": {k: v for s in result.schedule if s.get("stage") == "path" for k, v in s.items()
                           if k in ("parameters", "iterations", "warm_started", "polished", "spp", "check", "checks", "check_metric",
                                    "start", "subsurface_trial")}}


def write_table(rows: list[dict], out: Path, args) -> str:
    lines = [f"Machine: {describe_machine()}; CPU; {args.resolution} px; the default command (no preset): 4 train "
             f"views (forest), validation under {FIT_VALIDATE_HDRI} (2 views); judged by Cycles ({args.samples} "
             "samples, another seed) under courtyard and sunset (2 views each), which the fit never saw. ΔE2000 "
             "mean over pixels (and 4x4 blocks); *floor*: the true material through the same judge.", "",
             "| finish | shape | floor ΔE (4x4) | fit ΔE (4x4) | over floor | true structure | found | correct | "
             "errors (determined parameters; ± the tolerance the result states) | not determined | warnings | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['finish']} | {r['shape']} | error: {r['error']} |" + " |" * 10)
            continue
        t, f = r["judge_truth"], r["judge_fit"]
        tol = r.get("tolerances", {})
        errs = ", ".join(f"{k} {v:.3g}" + (f" (±{tol[k]:.2g})" if k in tol else "")
                         for k, v in r["errors_determined"].items())
        errs += "".join(f", {k} {v:.3g} ({'not determined' if k in r.get('undetermined', []) else 'not analysed'})"
                        for k, v in r.get("errors_subsurface", {}).items())
        warn = "; ".join(w.split(":")[0] for w in r["warnings"]) or "-"
        lines.append(
            f"| {r['finish']} | {r['shape']} | {t['pixel']:.2f} ({t['block4']:.2f}) | {f['pixel']:.2f} "
            f"({f['block4']:.2f}) | {f['pixel'] - t['pixel']:+.2f} | {', '.join(r['structure_true']) or 'base'} | "
            f"{', '.join(r['structure_found']) or 'base'} | {'yes' if r['structure_correct'] else '**no**'} | "
            f"{errs} | {', '.join(r['undetermined']) or '-'} | {warn} | {r['wall_time_s']:.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "discovery.md").write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("--cache", default=None, help="reference cache (default OUT/cache; shared with benchmark_fit)")
    ap.add_argument("--cases", default=",".join(FINISHES))
    ap.add_argument("--shapes", default="sphere,suzanne")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--samples", type=int, default=256, help="Cycles samples per pixel of the references")
    ap.add_argument("--fit-seed", type=int, default=0,
                    help="the fit's seed (its Monte Carlo samples; the default command's is 0): the spread of a "
                         "case's result across seeds is its run-to-run noise")
    ap.add_argument("--references-only", action="store_true",
                    help="render (and cache) every case's references and the truth's judge renders, fit nothing")
    args = ap.parse_args(argv)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for shape in args.shapes.split(","):
        for finish in args.cases.split(","):
            try:
                if args.references_only:
                    print(json.dumps(render_references(finish, shape, args, cache)), flush=True)
                    continue
                row = run_case(finish, shape, args, cache)
            except Exception as e:  # keep benchmarking the other cases; the table shows the failure
                row = {"finish": finish, "shape": shape, "error": f"{type(e).__name__}: {e}"[:300]}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "material"}), flush=True)
            (out / "discovery.json").write_text(json.dumps({"machine": describe_machine(), "rows": rows}, indent=2))
            write_table(rows, out, args)
    print(write_table(rows, out, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
