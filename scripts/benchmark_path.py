"""Path backend benchmark: seconds per iteration, gradient variance against paths per
pixel, and iteration time and memory over a long fit.

Uses the Cycles-rendered benchmark cases of ``scripts/benchmark_fit.py`` (rendered into
``benchmarks/cache`` on first use). Writes ``benchmarks/path.md`` and ``path.json``::

    python scripts/benchmark_path.py --out benchmarks [--long 300]

* Seconds per iteration: one loss + gradient evaluation of one view (the rough plastic
  Suzanne, forest HDRI) at 160 and 512 px, raster (the fit's default samples) and path
  (4 and 16 paths per pixel, depth 4), on the fit's 1024-pixel subset and on every pixel.
* Gradient variance: the relative-L2 gradient with respect to base colour, roughness and
  specular level at the true material, over 16 seeds, for 1 to 32 paths per pixel.
* Long fits: ``--long`` Adam iterations of the path refinement on 4 views; the time of each
  iteration and the process's resident memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import benchmark_fit as bf  # noqa: E402
from machine import describe as describe_machine  # noqa: E402

from pbrfit import losses as L  # noqa: E402
from pbrfit.job import load_job  # noqa: E402
from pbrfit.params import ParameterSpace, default_material  # noqa: E402
from pbrfit.pathtrace import PathRenderer, PathSettings  # noqa: E402
from pbrfit.render import RasterRenderer, SampleCounts  # noqa: E402
from pbrfit.scene_renderer import flush_subnormals  # noqa: E402

FINISH = "rough_plastic"
NAMES = ["base_color", "roughness", "specular_ior_level"]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _scene(args):
    case = bf._render(bf._spec(FINISH, "suzanne", Path(args.out) / "cache", 160, 256), Path(args.out) / "cache")
    return load_job(case / "job.toml").scene, default_material() | bf.FINISHES[FINISH][0]


def _resized(scene, px: int):
    """The scene's train views at px x px (references blank: timing only)."""
    views = [dataclasses.replace(v, image=np.zeros((px, px, 3), np.float32), mask=None)
             for v in scene.views if v.split == "train"]
    return dataclasses.replace(scene, views=views)


def _iteration_time(renderer, space, pixels, repeats=3) -> float:
    q = renderer.prepare(0).geometry.loss_pixels if pixels is None else renderer.train_subsets[0]
    ref = torch.zeros(len(q), 3)
    times = []
    for _ in range(repeats):
        u = space.initial_vector().clone().requires_grad_(True)
        t0 = time.perf_counter()
        with flush_subnormals():
            pred = renderer.shade(0, space.material(u), q)
            L.relative_l2(pred, ref + 0.5).backward()
        times.append(time.perf_counter() - t0)
        if hasattr(renderer, "next_iteration"):
            renderer.next_iteration()
    return min(times), len(q)


def speed(scene, truth) -> list[dict]:
    space = ParameterSpace(truth, NAMES)
    rows = []
    for px in (160, 512):
        s = _resized(scene, px)
        for name, make in (("raster", lambda s=s: RasterRenderer(s, SampleCounts(64, 16, 32, 16), 0, 1024)),
                           ("path 4 spp", lambda s=s: PathRenderer(s, PathSettings(4, 4), 0, 1024)),
                           ("path 16 spp", lambda s=s: PathRenderer(s, PathSettings(16, 4), 0, 1024))):
            r = make()
            t0 = time.perf_counter()
            r.prepare(0)
            prep = time.perf_counter() - t0
            sub, n_sub = _iteration_time(r, space, "subset")
            full, n_full = _iteration_time(r, space, None, repeats=1)
            rows.append({"px": px, "backend": name, "prepare_s": prep, "subset_pixels": n_sub,
                         "subset_s": sub, "all_pixels": n_full, "all_s": full})
            print(json.dumps(rows[-1]), flush=True)
    # subsurface: every primary vertex also sends three random walks
    wax = truth | bf.FINISHES["subsurface_wax"][0]
    wax_space = ParameterSpace(wax, NAMES + ["subsurface_weight", "subsurface_scale"])
    s = _resized(scene, 160)
    r = PathRenderer(s, PathSettings(4, 4), 0, 1024)
    r.prepare(0)
    sub, n_sub = _iteration_time(r, wax_space, "subset")
    full, n_full = _iteration_time(r, wax_space, None, repeats=1)
    rows.append({"px": 160, "backend": "path 4 spp, subsurface wax", "prepare_s": 0.0, "subset_pixels": n_sub,
                 "subset_s": sub, "all_pixels": n_full, "all_s": full})
    print(json.dumps(rows[-1]), flush=True)
    return rows


def variance(scene, truth) -> list[dict]:
    space = ParameterSpace(truth, NAMES)
    out = []
    for spp in (1, 2, 4, 8, 16, 32):
        r = PathRenderer(scene, PathSettings(spp, 4), seed=0, max_loss_pixels=1024)
        pv = r.prepare(0)
        q = r.train_subsets[0]
        ref = torch.as_tensor(scene.views[0].image.reshape(-1, 3)[pv.geometry.pixels[q]] / pv.env.mean_luminance)
        grads = []
        t0 = time.perf_counter()
        for _ in range(16):
            r.next_iteration()
            u = space.initial_vector().clone().requires_grad_(True)
            with flush_subnormals():
                L.relative_l2(r.shade(0, space.material(u), q) / pv.env.mean_luminance, ref).backward()
            grads.append(u.grad.numpy().copy())
        g = np.array(grads)
        out.append({"spp": spp, "std": g.std(0, ddof=1).tolist(), "mean": g.mean(0).tolist(),
                    "seconds_per_gradient": (time.perf_counter() - t0) / 16})
        print(json.dumps(out[-1]), flush=True)
    return out


def long_fit(scene, truth, iterations: int) -> dict:
    from pbrfit.objective import Objective

    start = dict(truth, base_color=[0.5, 0.5, 0.5], roughness=0.4)
    space = ParameterSpace(start, NAMES)
    train = [i for i, v in enumerate(scene.views) if v.split == "train"]
    r = PathRenderer(scene, PathSettings(4, 4), seed=0, max_loss_pixels=1024)
    obj = Objective(r, train, {"relative_l2": 1.0})
    u = space.initial_vector().clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=0.02)
    times, rss = [], []
    with flush_subnormals():
        for _ in range(iterations):
            t0 = time.perf_counter()
            r.next_iteration()
            opt.zero_grad()
            loss, _ = obj(space.material(u))
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            rss.append(_rss_mib())
    k = max(1, iterations // 6)
    res = {"iterations": iterations, "first_s": statistics.mean(times[:k]), "last_s": statistics.mean(times[-k:]),
           "rss_first_mib": rss[k - 1], "rss_last_mib": rss[-1], "rss_max_mib": max(rss), "times": times, "rss": rss,
           "final": space.values(u.detach())}
    print(json.dumps({k2: v for k2, v in res.items() if k2 not in ("times", "rss")}), flush=True)
    return res


def table(data: dict) -> str:
    lines = [f"Machine: {data['machine']}; CPU (llvm_ad_rgb ray tracing, torch shading on 1 thread).", "",
             "**Seconds per iteration** (one view, loss + gradient; rough plastic Suzanne):", "",
             "| px | backend | G-buffer s | fit subset (px) s | all covered pixels (px) s |", "|---|---|---|---|---|"]
    for r in data["speed"]:
        lines.append(f"| {r['px']} | {r['backend']} | {r['prepare_s']:.2f} | {r['subset_s']:.2f} ({r['subset_pixels']}) "
                     f"| {r['all_s']:.2f} ({r['all_pixels']}) |")
    lines += ["", "**Gradient spread against paths per pixel** (16 seeds, 1024 pixels, relative-L2 loss at the "
              "true material; standard deviation per component, base colour averaged over RGB):", "",
              "| spp | std base colour | std roughness | std specular level | s per gradient |", "|---|---|---|---|---|"]
    for r in data["variance"]:
        s = r["std"]
        lines.append(f"| {r['spp']} | {np.mean(s[:3]):.4f} | {s[3]:.4f} | {s[4]:.4f} | {r['seconds_per_gradient']:.2f} |")
    lf = data["long"]
    lines += ["", f"**Long fit**: {lf['iterations']} Adam iterations of the path refinement (4 views x 1024 px, "
              f"4 spp): first sixth {lf['first_s']:.2f} s/iteration, last sixth {lf['last_s']:.2f} s/iteration; "
              f"resident memory {lf['rss_first_mib']:.0f} MiB after the first sixth, {lf['rss_last_mib']:.0f} MiB at "
              f"the end (max {lf['rss_max_mib']:.0f} MiB)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("--long", type=int, default=300)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    scene, truth = _scene(args)
    data = {"machine": describe_machine(), "speed": speed(scene, truth), "variance": variance(scene, truth),
            "long": long_fit(scene, truth, args.long)}
    out = Path(args.out)
    (out / "path.json").write_text(json.dumps(data, indent=1))
    text = table(data)
    (out / "path.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
