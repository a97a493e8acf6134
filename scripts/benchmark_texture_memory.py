"""Texture-map fit memory and iteration time: resident memory and seconds per Adam step over
a whole ``[textures]`` fit, per pyramid level, and the process's peak.

The map fit's memory is the texel grids (the variable, its gradient, two Adam moments, the
regularizers' temporaries: :func:`pbrfit.textures.map_memory_bytes`) plus the renders' autograd
graph, which is bounded by rendering a chunk of pixels at a time
(:data:`pbrfit.texture_fit.GRADIENT_CHUNK`). A leak shows as RSS or step time that keeps growing
within a level.

Usage::

    python scripts/benchmark_texture_memory.py JOB.toml [--maps base_color,roughness,metallic,normal]
        [--resolution 2048] [--iterations 40] [--json OUT.json]
    python scripts/benchmark_texture_memory.py JOB.toml --resolution 512 --iterations 1000 --single-level

``--single-level`` runs every step at the full resolution (no pyramid) to measure whether step
time and memory stay flat over a long fit: it reports, besides the per-level halves, the mean
step time and RSS of the first and last 100 steps and their least-squares slopes per 100 steps.

Runs the raster scalar fit briefly (``--scalar-iterations``, default 5) then the maps, on the
job's train views only (validation could end the pyramid before the full resolution, whose
memory is the point; ``--keep-validation`` keeps them), every level fitted even where the job's
photos do not resolve its texels; prints one line per level and a summary.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_memory import rss_mib


def _trend(samples: list[tuple[float, float]]) -> dict:
    """Step time and RSS over one long level: the first and last 100 steps' means and the
    least-squares slope per 100 steps (a leak shows as a positive slope well above the noise)."""
    import numpy as np

    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    dt = np.diff(t)
    steps = np.arange(len(dt))
    return {"steps": len(samples),
            "seconds_per_step_first_100": float(dt[:100].mean()), "seconds_per_step_last_100": float(dt[-100:].mean()),
            "seconds_per_step_slope_per_100": float(np.polyfit(steps, dt, 1)[0] * 100),
            "rss_mib_first_100": float(rss[:100].mean()), "rss_mib_last_100": float(rss[-100:].mean()),
            "rss_mib_max": float(rss.max()),
            "rss_mib_slope_per_100": float(np.polyfit(np.arange(len(rss)), rss, 1)[0] * 100),
            "seconds_per_step_every_50": [float(dt[i:i + 50].mean()) for i in range(0, len(dt), 50)],
            "rss_mib_every_50": [float(rss[i]) for i in range(0, len(rss), 50)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job")
    ap.add_argument("--maps", default="base_color,roughness,metallic,normal")
    ap.add_argument("--resolution", type=int, default=2048)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--scalar-iterations", type=int, default=5)
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when torch sees one)")
    ap.add_argument("--json")
    ap.add_argument("--single-level", action="store_true",
                    help="every step at the full resolution: step time and RSS over one long level")
    ap.add_argument("--keep-validation", action="store_true",
                    help="keep the job's validation views (they may end the pyramid before the full resolution)")
    args = ap.parse_args(argv)

    from pbrfit import texture_fit
    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.job import load_job
    from pbrfit.options import resolve_device
    from pbrfit.textures import TextureSettings, check_textures, map_memory_bytes

    if args.single_level:  # a benchmark-only override: the fit's pyramid is one level
        TextureSettings.levels = lambda self: [self.resolution]
    # every level runs, also those finer than the job's photos resolve (the fit would end its
    # pyramid before them: texture_fit.MIN_LEVEL_PIXELS): the full resolution's memory is the point
    texture_fit.MIN_LEVEL_PIXELS = 0.0

    settings = check_textures({"maps": args.maps.split(","), "resolution": args.resolution,
                               "iterations": args.iterations}, "--maps/--resolution")
    job = load_job(args.job)
    scene = job.scene
    if not args.keep_validation:  # every level runs: the memory of the full resolution is measured
        from dataclasses import replace

        scene = replace(scene, views=[v for v in scene.views if v.split == "train"])
    samples = []
    start = time.monotonic()

    def progress(p):
        if p.stage == "textures":
            samples.append((time.monotonic() - start, rss_mib()))

    base = rss_mib()
    device = resolve_device(args.device)
    options = FitOptions(iterations=args.scalar_iterations, backend="raster", textures=settings, device=device)
    result = fit_material(scene, options, progress=progress)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    levels = []
    k = 0
    for level in result.texture_log:
        steps = samples[k:k + level["steps"]]
        k += level["steps"]
        if len(steps) < 2:
            continue
        dt = [b[0] - a[0] for a, b in zip(steps, steps[1:])]
        half = max(1, len(dt) // 2)
        levels.append({"resolution": level["resolution"], "steps": level["steps"],
                       "seconds_per_step_first_half": sum(dt[:half]) / half,
                       "seconds_per_step_second_half": sum(dt[half:]) / max(1, len(dt) - half),
                       "rss_mib_first": steps[0][1], "rss_mib_last": steps[-1][1]})
    record = {"job": str(Path(args.job).resolve()), "device": device, "maps": list(settings.maps),
              "resolution": args.resolution, "iterations": args.iterations, "single_level": args.single_level, "views": len(scene.views),
              "texel_memory_bound_mib": map_memory_bytes(settings) / 2**20, "rss_mib_before": base,
              "peak_rss_mib": peak, "texture_seconds": result.timings.get("textures"), "levels": levels,
              "wall_seconds": time.monotonic() - start}
    if args.single_level and len(samples) > 200:
        record["series"] = _trend(samples)
        t = record["series"]
        print(f"over {t['steps']} steps: first 100 {t['seconds_per_step_first_100']:.2f} s/step, "
              f"{t['rss_mib_first_100']:.0f} MiB; last 100 {t['seconds_per_step_last_100']:.2f} s/step, "
              f"{t['rss_mib_last_100']:.0f} MiB; slopes per 100 steps {t['seconds_per_step_slope_per_100']:+.3f} s, "
              f"{t['rss_mib_slope_per_100']:+.1f} MiB")
    for lv in levels:
        print(f"level {lv['resolution']:5d}: {lv['steps']:3d} steps, "
              f"{lv['seconds_per_step_first_half']:.2f} -> {lv['seconds_per_step_second_half']:.2f} s/step, "
              f"RSS {lv['rss_mib_first']:.0f} -> {lv['rss_mib_last']:.0f} MiB")
    print(f"peak RSS {peak:.0f} MiB (texel bound {record['texel_memory_bound_mib']:.0f} MiB); "
          f"maps {record['texture_seconds']:.0f} s; wall {record['wall_seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
