"""The subsurface walk against Cycles' Random Walk, per view: our path backend rendering the
true material of a subsurface finish against its Cycles references, mean radiance per colour
channel over each view's part pixels (ours / Cycles).

The references are the discovery benchmark's (``scripts/benchmark_discovery.py``: 4 train
cameras under forest and 2 cameras under each of city, courtyard and sunset; cached by spec,
rendered here by Cycles when not cached). A ratio tells where our transport differs from
Cycles' (1 = the same light); per-pixel metrics cannot, since Cycles' own subsurface noise is
~8 ΔE2000 per pixel at 256 samples. The CI test ``tests/test_path_vs_cycles.py`` does the same
on small spheres; this runs on the benchmark's shapes and sizes (Suzanne: thin ears, a
self-occluding part).

Usage::

    python scripts/benchmark_walk_parity.py [--cases subsurface_wax] [--shapes suzanne,sphere]
        [--cache benchmarks/cache] [--spp 64] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_fit import FINISHES, _render, _spec
from machine import describe as describe_machine


def view_ratios(case_dir: Path, truth: dict, spp: int, seed: int = 0) -> list[dict]:
    """Per view of the case's job: ours / Cycles' mean radiance per channel over the pixels
    inside both masks."""
    from pbrfit.job import load_job
    from pbrfit.params import ParameterSpace, normalize_material
    from pbrfit.pathtrace import PathRenderer, PathSettings

    job = load_job(case_dir / "job.toml")
    space = ParameterSpace(normalize_material(truth), [])
    material = space.material(space.initial_vector())
    renderer = PathRenderer(job.scene, PathSettings(spp=spp), seed=seed)
    rows = []
    for i, view in enumerate(job.scene.views):
        t0 = time.monotonic()
        img = renderer.render_image(i, material)
        inside = (view.mask > 0.99) & renderer.prepare(i).geometry.coverage
        ratio = img[inside].mean(0) / view.image[inside][:, :3].mean(0)
        rows.append({"view": i, "image": Path(view.image_path).relative_to(case_dir).as_posix(),
                     "split": view.split, "ratio": [round(float(r), 4) for r in ratio],
                     "seconds": round(time.monotonic() - t0, 1)})
        print(f"  {rows[-1]['image']:28s} ours/Cycles {rows[-1]['ratio']}  ({rows[-1]['seconds']} s)", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="subsurface_wax")
    ap.add_argument("--shapes", default="suzanne,sphere")
    ap.add_argument("--cache", default="benchmarks/cache")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--samples", type=int, default=256, help="Cycles samples per pixel of the references")
    ap.add_argument("--spp", type=int, default=64, help="our paths per pixel")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    from pbrfit.params import default_material

    cache = Path(args.cache)
    out = {"machine": describe_machine(), "spp": args.spp, "cases": []}
    for finish in args.cases.split(","):
        for shape in args.shapes.split(","):
            print(f"{finish} on {shape}", flush=True)
            spec = _spec(finish, shape, cache, args.resolution, args.samples)
            case_dir = _render(spec, cache)
            truth = default_material() | FINISHES[finish][0]
            rows = view_ratios(case_dir, truth, args.spp)
            ratios = np.array([r["ratio"] for r in rows])
            summary = {"mean": np.round(ratios.mean(0), 4).tolist(),
                       "largest_deviation": np.round(np.abs(ratios - 1).max(0), 4).tolist()}
            print(f"  mean over views {summary['mean']}, largest deviation {summary['largest_deviation']}")
            out["cases"].append({"finish": finish, "shape": shape, "views": rows, **summary})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
