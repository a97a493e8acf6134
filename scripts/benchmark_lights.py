"""Analytic lights against Cycles: per lamp type, pbrfit's renders of Blender lamps (exported
by Blender's USD exporter, read by pbrfit.lights) against Cycles' renders of the same scene.

A rough grey plastic sphere (base colour 0.7/0.68/0.6, roughness 0.6) and a glossy one
(roughness 0.2) under a dim uniform World (radiance 0.05) and one lamp per case: a sun with a
10 degree disc, a point lamp of radius 0.3 m, a rectangular and a disk area lamp, a spot whose
ramp crosses the part, and all of them together; two cameras (one facing the lamps, one
behind). Reported per case and view: mean radiance of pbrfit over Cycles (inside the mask), for
the raster backend and the path backend, and the ΔE2000 mean between them.

Usage::

    python scripts/benchmark_lights.py --out benchmarks [--resolution 96] [--samples 256]

Writes ``OUT/lights.md`` and ``OUT/lights.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import describe as describe_machine  # noqa: E402

LAMPS = {
    "sun": [{"type": "SUN", "energy": 3.0, "angle": 10.0, "location": [4, -3, 3]}],
    "point": [{"type": "POINT", "energy": 400.0, "radius": 0.3, "location": [2.5, -2.5, 2.0]}],
    "rect": [{"type": "AREA", "energy": 300.0, "shape": "RECTANGLE", "size": 1.5, "size_y": 0.8,
              "location": [-2.5, -2.0, 1.5]}],
    "disk": [{"type": "AREA", "energy": 300.0, "shape": "DISK", "size": 1.2, "location": [0.5, -3.0, -1.5]}],
    "spot": [{"type": "SPOT", "energy": 800.0, "radius": 0.1, "spot_size": 24.0, "spot_blend": 0.4,
              "location": [3.0, -3.0, 1.0], "look_at": [0.3, 0.0, 0.0]}],
    # a tube light (UsdLux CylinderLight; Cycles renders an emissive tube of the same radiance)
    "tube": [{"type": "TUBE", "radiance": [60.0, 58.0, 52.0], "location": [2.0, -2.5, 1.0], "axis": [0.3, 0.2, 1.0],
              "length": 1.6, "radius": 0.06}],
    # a tungsten-balanced softbox: colour temperature (UsdLux colorTemperature) on an area lamp
    "warm": [{"type": "AREA", "energy": 300.0, "shape": "RECTANGLE", "size": 1.2, "size_y": 0.9,
              "temperature": 3200.0, "location": [-2.0, -2.5, 1.0]}],
}
LAMPS["all"] = [lamp for k in ("sun", "point", "rect", "disk", "spot") for lamp in LAMPS[k]]
MATERIALS = {"rough": {"base_color": [0.7, 0.68, 0.6], "roughness": 0.6},
             "glossy": {"base_color": [0.7, 0.68, 0.6], "roughness": 0.2}}


def run_case(lamp: str, finish: str, args, work: Path) -> list[dict]:
    import torch

    from pbrfit import losses as L
    from pbrfit.images import write_exr
    from pbrfit.job import load_job
    from pbrfit.params import ParameterSpace, normalize_material
    from pbrfit.pathtrace import PathRenderer, PathSettings
    from pbrfit.render import RasterRenderer, SampleCounts

    d = work / f"{lamp}_{finish}"
    d.mkdir(parents=True, exist_ok=True)
    write_exr(d / "dim.exr", np.full((32, 64, 3), 0.05, np.float32))
    spec = {"shape": "sphere", "material": MATERIALS[finish], "train_hdri": str(d / "dim.exr"),
            "cameras": [{"azimuth": 0, "elevation": 20}, {"azimuth": 180, "elevation": 10}],
            "resolution": [args.resolution, args.resolution], "samples": args.samples,
            "lights": LAMPS[lamp], "out": str(d / "case")}
    (d / "spec.json").write_text(json.dumps(spec))
    subprocess.run([sys.executable, str(HERE / "cycles_reference.py"), str(d / "spec.json")], check=True,
                   capture_output=True)
    job = load_job(d / "case" / "job.toml")
    space = ParameterSpace(normalize_material(MATERIALS[finish]), [])
    m = space.material(space.initial_vector())
    renderers = {"raster": RasterRenderer(job.scene, SampleCounts(128, 32, 64, 0, 128), seed=0),
                 "path": PathRenderer(job.scene, PathSettings(128, 4), seed=0)}
    rows = []
    for vi, view in enumerate(job.scene.views):
        inside = view.mask > 0.99
        row = {"lamp": lamp, "finish": finish, "view": view.name}
        for name, r in renderers.items():
            t = time.monotonic()
            img = r.render_image(vi, m)
            row[f"{name}_ratio"] = (img[inside].mean(0) / view.image[inside].mean(0)).tolist()
            row[f"{name}_de2000"] = float(L.de2000(torch.as_tensor(img[inside]), torch.as_tensor(view.image[inside]),
                                                   white=r.white(vi)))
            row[f"{name}_s"] = time.monotonic() - t
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("--resolution", type=int, default=96)
    ap.add_argument("--samples", type=int, default=256, help="Cycles samples per pixel")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for lamp in LAMPS:
            for finish in MATERIALS:
                rows += run_case(lamp, finish, args, Path(work))
    (out / "lights.json").write_text(json.dumps({"machine": describe_machine(), "rows": rows}, indent=1))
    lines = [f"Machine: {describe_machine()}. Sphere, {args.resolution} px, Cycles {args.samples} samples; pbrfit "
             "raster 128 samples per lamp (and its other strategies), path 128 paths of depth 4. Mean radiance "
             "inside the mask, pbrfit / Cycles (luminance-weighted mean of the three channels), and ΔE2000 mean "
             "between them. The back view (azimuth 180) sees little of most lamps.", "",
             "| lamp | finish | view | raster / Cycles | path / Cycles | raster ΔE | path ΔE |",
             "|---|---|---|---|---|---|---|"]
    w = np.array([0.2126, 0.7152, 0.0722])
    for r in rows:
        lines.append(f"| {r['lamp']} | {r['finish']} | {r['view']} | {float(np.dot(w, r['raster_ratio'])):.3f} | "
                     f"{float(np.dot(w, r['path_ratio'])):.3f} | {r['raster_de2000']:.2f} | {r['path_de2000']:.2f} |")
    (out / "lights.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
