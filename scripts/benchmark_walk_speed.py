"""Subsurface walk speed: a wax render with its gradient, the working tree's walk against a
git revision's, interleaved in one process (so both see the same machine load).

Renders a tessellated sphere (tests/fixtures/synthetic.py's job) with the path backend, a
wax-like subsurface material (base colour 0.9, 0.75, 0.5; radius 1, 0.5, 0.25; scale 0.3),
and back-propagates into base colour, roughness, radius and scale; the only thing swapped
between the two sides is :meth:`pbrfit.subsurface_walk.SubsurfaceWalk.run`. Prints and writes
each repeat's seconds (the whole render with its gradient, and the walk alone), the image mean and the gradient's L1 norm (the two sides must agree:
the same samples), and the medians.

Usage::

    python scripts/benchmark_walk_speed.py [--baseline REV] [--size 64] [--spp 8] [--repeats 4] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
sys.path.insert(0, str(ROOT / "scripts"))


def main(argv=None) -> int:
    import numpy as np
    import torch
    from machine import describe as describe_machine
    from synthetic import render_references, write_job

    from pbrfit import pathtrace
    from pbrfit.job import load_job
    from pbrfit.params import ParameterSpace, normalize_material
    from pbrfit.pathtrace import PathRenderer, PathSettings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="HEAD", help="git revision whose walk is timed against the working tree's")
    ap.add_argument("--size", type=int, default=64, help="image side, px")
    ap.add_argument("--spp", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--out", default=None, help="write the figures here as JSON")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="walk_speed."))
    source = subprocess.run(["git", "show", f"{args.baseline}:core/pbrfit/subsurface_walk.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    (tmp / "baseline_walk.py").write_text(source)
    spec = importlib.util.spec_from_file_location("pbrfit._baseline_walk", tmp / "baseline_walk.py")
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    walk_seconds = [0.0]

    def timed(run):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return run(*a, **k)
            finally:
                walk_seconds[0] += time.perf_counter() - t
        return wrapper

    sides = {"baseline": timed(baseline.SubsurfaceWalk.run), "working tree": timed(pathtrace.SubsurfaceWalk.run)}

    job = write_job(tmp / "job", size=args.size, cameras=1)
    render_references(job, {"base_color": [0.5, 0.5, 0.5]})
    scene = load_job(job).scene
    values = normalize_material({"base_color": [0.9, 0.75, 0.5], "subsurface_weight": 1.0, "roughness": 0.4,
                                 "subsurface_radius": [1.0, 0.5, 0.25], "subsurface_scale": 0.3})
    space = ParameterSpace(values, ["base_color", "subsurface_scale", "subsurface_radius", "roughness"])
    renderer = PathRenderer(scene, PathSettings(spp=args.spp, max_depth=3), seed=1)
    pixels = renderer.prepare(0).geometry.loss_pixels
    runs = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, run in sides.items():
            pathtrace.SubsurfaceWalk.run = run
            u = space.initial_vector().clone().requires_grad_(True)
            walk_seconds[0] = 0.0
            t = time.perf_counter()
            img = renderer.shade(0, space.material(u), pixels)
            img.sum().backward()
            runs[name].append({"seconds": time.perf_counter() - t, "walk_seconds": walk_seconds[0],
                               "image_mean": float(img.detach().mean()), "gradient_l1": float(u.grad.abs().sum())})
            print(name, json.dumps(runs[name][-1]), flush=True)
    medians = {name: float(np.median([r["seconds"] for r in rs])) for name, rs in runs.items()}
    walks = {name: float(np.median([r["walk_seconds"] for r in rs])) for name, rs in runs.items()}
    print("median seconds:", medians, f"speed-up {medians['baseline'] / medians['working tree']:.2f}x")
    print("median seconds in the walk:", walks, f"speed-up {walks['baseline'] / walks['working tree']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": describe_machine(), "settings": vars(args), "runs": runs,
                                              "median_s": medians, "median_walk_s": walks}, indent=2))
    torch.set_grad_enabled(True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
