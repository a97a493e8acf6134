"""Small fits, a git revision's engine against the working tree's: their time and whether they
reach the same material.

A change meant to make the fits faster without changing them (threads, a cheaper ray query)
is shown by fitting the same small jobs with both engines: the materials must agree to the
last digit (the same samples), the seconds tell the speed-up. Two fits of the size the tests
run (tests/fixtures/synthetic.py's tessellated sphere, 32 px, path samples as the tests'):

* ``wax``: a subsurface material (base colour 0.8, 0.6, 0.4; roughness 0.4; scale 1), its
  scale searched from 0.5 and its colour solved on the walks (the path refinement's subsurface
  work: tests/test_fit_run.py's wax refinement);
* ``plastic``: the default command on a blue plastic (roughness 0.25), 3 views and a
  validation view: layer discovery, raster stages and path refinement.

Each side runs in a fresh process with its ``core/`` first on ``PYTHONPATH`` (the baseline
from a temporary ``git worktree``), the sides interleaved ``--repeats`` times, so that both see
the same machine load.

Usage::

    python scripts/benchmark_small_fits.py --baseline REV [--cases wax,plastic] [--repeats 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("wax", "plastic")


def _fit(case: str, folder: Path) -> dict:
    """Fit ``case`` in ``folder`` with the ``pbrfit`` first on the path; its material and seconds."""
    from dataclasses import replace

    from synthetic import render_references, write_job

    import pbrfit
    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.job import load_job
    from pbrfit.render import SampleCounts

    fast = SampleCounts(16, 4, 8, 4)  # tests/test_fit_run.py's
    if case == "wax":
        job = write_job(folder, size=32, cameras=2)
        render_references(job, {"base_color": [0.8, 0.6, 0.4], "roughness": 0.4, "subsurface_weight": 1.0,
                                "subsurface_scale": 1.0}, seed=3, path_spp=32)
        scene = load_job(job).scene
        scene = replace(scene, initial_material=dict(scene.initial_material or {}, subsurface_weight=1.0,
                                                     subsurface_scale=0.5))
        opts = FitOptions(samples=fast, parameters=["base_color", "roughness", "subsurface_scale"], iterations=20,
                          path_iterations=4, check_every=2, seed=0)
    else:
        job = write_job(folder, size=32, cameras=3, validate_env="sky_val.exr")
        render_references(job, {"base_color": [0.2, 0.4, 0.7], "roughness": 0.25}, seed=3)
        scene = load_job(job).scene
        opts = FitOptions(samples=fast, iterations=30, path_iterations=6, seed=0)
    t = time.perf_counter()
    result = fit_material(scene, opts)
    return {"seconds": time.perf_counter() - t, "material": result.material, "timings": result.timings,
            "engine": str(Path(pbrfit.__file__).parent)}


def _child(case: str) -> int:
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    with tempfile.TemporaryDirectory(prefix=f"small_fit_{case}.") as tmp:
        print(json.dumps(_fit(case, Path(tmp)), default=float))
    return 0


def _run_side(core: Path, case: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(core), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, __file__, "--child", case], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{case} with {core} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _differences(a: dict, b: dict) -> dict:
    """{parameter: largest absolute difference} where the two materials differ."""
    out = {}
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        xs, ys = (v if isinstance(v, list) else [v] for v in (x, y))
        if x is None or y is None or len(xs) != len(ys):
            out[name] = "missing"
        elif any(p != q for p, q in zip(xs, ys)):
            out[name] = max(abs(float(p) - float(q)) for p, q in zip(xs, ys))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="HEAD", help="git revision whose engine is timed against the working tree's")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the figures here as JSON")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child)
    sys.path.insert(0, str(ROOT / "scripts"))
    from machine import describe as describe_machine

    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"--cases: unknown {', '.join(unknown)}; choose from {', '.join(CASES)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="small_fits.") as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline],
                       check=True, capture_output=True)
        try:
            sides = {args.baseline: worktree / "core", "working tree": ROOT / "core"}
            for case in cases:
                runs = {name: [] for name in sides}
                for _ in range(args.repeats):
                    for name, core in sides.items():
                        runs[name].append(_run_side(core, case))
                        print(case, name, f"{runs[name][-1]['seconds']:.1f} s", flush=True)
                first, second = (runs[name][0]["material"] for name in sides)
                row = {"case": case, "seconds": {name: [r["seconds"] for r in rs] for name, rs in runs.items()},
                       "timings": {name: rs[0]["timings"] for name, rs in runs.items()},
                       "differences": _differences(first, second), "material": second}
                rows.append(row)
                best = {name: min(s) for name, s in row["seconds"].items()}
                print(case, "fastest seconds:", {k: round(v, 1) for k, v in best.items()},
                      f"speed-up {best[args.baseline] / best['working tree']:.2f}x;",
                      "the same material" if not row["differences"] else f"materials differ: {row['differences']}",
                      flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)],
                           capture_output=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": describe_machine(), "baseline": args.baseline, "rows": rows},
                                             indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
