"""Our path tracer's direct light against Cycles', with the pixel filter's widening scaled.

A diagnosis, not a benchmark: it renders (and caches) a benchmark case's references with Cycles
lighting the part directly only (``max_bounces`` 0, ``scripts/cycles_reference.py``), then the
true material with our path tracer at depth 1 (direct light only, the same) with the pixel
filter's widening of the lobes (:mod:`pbrfit.pixel_filter`) multiplied by each ``--scales``
value, and prints per train view the mean of ours / Cycles over the loss pixels: all of them,
those the reference reads dim (luminance under ``DIM`` of white) and those it reads bright (over
``BRIGHT``). Interreflection is out of both renders, so what differs is the first hit's shading:
on a part whose normals turn quickly, mostly the widening. ``--bounces N`` lets both renderers
bounce N times after the first hit, ``--bounces all`` compares the fit's own references (Cycles'
12 bounces) with our default depth.

    python scripts/diagnose_pixel_filter.py --finish gold --shape suzanne [--scales 0,0.25,0.5,1]
        [--spp 256] [--cache DIR] [--bounces 0|N|all]

Measured with it (BENCHMARKS.md): in session 14, on Suzanne, the isotropic widened GGX read the
dim pixels 2-15% bright (a quarter of the widening within 0.5%); in session 15, with the lobe's own
tails kept and the widening along the spread's principal axes, gold's and brushed aluminium's
within 2.7% at the full widening, with all bounces gold 0.4-1.4% dark overall.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from benchmark_fit import FINISHES, _render, _spec

#: reference luminance, as a share of white, under which a pixel counts as dim
DIM = 0.2
#: and over which as bright
BRIGHT = 1.0


def _mean(values: np.ndarray) -> float | None:
    """The mean, or None for no value (a view with no dim or no bright pixel)."""
    return float(values.mean()) if len(values) else None


def _cell(value: float | None, width: int) -> str:
    return f"{value:{width}.3f}" if value is not None else "-".rjust(width)


def compare(finish: str, shape: str, scales: list[float], spp: int, cache: Path, bounces: int | None = 0) -> list[dict]:
    """Rows ``{"scale", "view", "all", "dim", "bright"}``: mean ours / Cycles per pixel group."""
    from pbrfit.job import load_job
    from pbrfit.params import ParameterSpace, default_material
    from pbrfit.pathtrace import PathRenderer, PathSettings

    spec = _spec(finish, shape, cache, 160, 256)
    if bounces is not None:
        spec["max_bounces"] = bounces
    spec["validate_hdris"] = []
    job = load_job(_render(spec, cache) / "job.toml")
    scene = replace(job.scene, views=[v for v in job.scene.views if v.split == "train"])
    truth = default_material() | FINISHES[finish][0]
    space = ParameterSpace(truth, [])
    material = space.material(space.initial_vector())
    renderer = PathRenderer(scene, PathSettings(spp, 1 + bounces) if bounces is not None else PathSettings(spp),
                            5, 1 << 40)
    rows = []
    for vi in range(len(scene.views)):
        geo = renderer.prepare(vi).geometry
        widening = geo.footprint
        pixels = renderer.train_subsets[vi]
        white = renderer.white(vi)
        ref = scene.views[vi].image.reshape(-1, 3)[geo.pixels[pixels]] / white
        luminance = ref.mean(-1)
        for scale in scales:
            geo.footprint = None if widening is None or scale == 0 else widening * scale
            with torch.no_grad():
                ours = renderer.shade(vi, material, pixels).double().cpu().numpy() / white
            ratio = ours.mean(-1) / np.maximum(luminance, 1e-6)
            rows.append({"scale": scale, "view": vi, "all": float(ratio.mean()),
                         "dim": _mean(ratio[luminance < DIM]), "bright": _mean(ratio[luminance > BRIGHT])})
        geo.footprint = widening
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--finish", required=True, choices=sorted(FINISHES))
    ap.add_argument("--shape", default="suzanne", choices=["sphere", "suzanne"])
    ap.add_argument("--scales", default="0,0.25,0.5,1", help="multipliers of the widening, comma-separated")
    ap.add_argument("--spp", type=int, default=256, help="our paths per pixel")
    ap.add_argument("--cache", default="benchmarks/cache", help="reference cache (shared with benchmark_fit)")
    ap.add_argument("--bounces", default="0", help="bounces after the first hit, both renderers (0: direct light "
                    "only); 'all': the fit's references as they are (Cycles' 12) against our default depth")
    args = ap.parse_args(argv)
    scales = [float(s) for s in args.scales.split(",")]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    bounces = None if args.bounces == "all" else int(args.bounces)
    rows = compare(args.finish, args.shape, scales, args.spp, cache, bounces)
    light = "direct light" if bounces == 0 else f"{args.bounces} bounces"
    print(f"{args.finish} on {args.shape}, {light}: ours / Cycles per view (dim: reference under {DIM} "
          f"of white, bright: over {BRIGHT})")
    print("scale  view    all    dim  bright")
    for r in rows:
        print(f"{r['scale']:5.2f} {r['view']:5d} {r['all']:6.3f} {_cell(r['dim'], 6)} {_cell(r['bright'], 7)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
