"""Memory benchmark: resident memory over many objective evaluations with gradients, raster and
path-traced (path replay), on one job. A leak shows as RSS that keeps growing; the target is
flat after the first iterations.

Usage::

    python scripts/benchmark_memory.py JOB.toml [--iterations 1000] [--every 100] [--backend raster,path]

Prints one line per sample and a summary (``--json`` for a machine-readable record).
"""

from __future__ import annotations

import argparse
import json
import os
import time


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc; else peak RSS)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(job_path: str, backend: str, iterations: int, every: int) -> dict:
    import torch

    from pbrfit.fit import compute_settings
    from pbrfit.job import load_job
    from pbrfit.objective import Objective
    from pbrfit.options import resolve
    from pbrfit.params import ParameterSpace, normalize_material
    from pbrfit.renderers import Renderers

    job = load_job(job_path)
    opts = resolve(job.fit_options, {})
    renderers = Renderers(job.scene, opts)
    renderer = renderers.raster_fit() if backend == "raster" else renderers.path_fit()
    train = [i for i, v in enumerate(job.scene.views) if v.split == "train"]
    objective = Objective(renderer, train, opts.loss if backend == "raster" else opts.path_loss)
    space = ParameterSpace(normalize_material(job.scene.initial_material or {}), opts.parameters, opts.bounds)
    u = space.initial_vector().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([u], lr=0.01)
    samples = []
    t0 = time.monotonic()
    with compute_settings(opts.threads):
        for it in range(iterations + 1):
            if it % every == 0:
                samples.append({"iteration": it, "rss_mib": round(rss_mib(), 1), "seconds": round(time.monotonic() - t0, 1)})
                print(f"{backend} iteration {it}: RSS {samples[-1]['rss_mib']:.0f} MiB", flush=True)
            if it == iterations:
                break
            if backend == "path":
                renderer.next_iteration()
            optimizer.zero_grad()
            loss, _ = objective(space.material(u))
            loss.backward()
            u.grad.nan_to_num_(0.0)
            optimizer.step()
    after_warmup = [s["rss_mib"] for s in samples[1:]] or [samples[0]["rss_mib"]]
    return {"backend": backend, "iterations": iterations, "samples": samples,
            "growth_after_first_sample_mib": round(max(after_warmup) - after_warmup[0], 1),
            "seconds_per_iteration": round((time.monotonic() - t0) / max(iterations, 1), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("job")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--backend", default="raster,path")
    ap.add_argument("--json", help="write the record here")
    args = ap.parse_args(argv)
    records = [measure(args.job, b, args.iterations, args.every) for b in args.backend.split(",")]
    for r in records:
        print(f"{r['backend']}: {r['iterations']} iterations, {r['seconds_per_iteration']} s each, RSS "
              f"{r['samples'][0]['rss_mib']:.0f} -> {r['samples'][-1]['rss_mib']:.0f} MiB "
              f"(growth after the first {r['samples'][1]['iteration'] if len(r['samples']) > 1 else 0} iterations: "
              f"{r['growth_after_first_sample_mib']} MiB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
