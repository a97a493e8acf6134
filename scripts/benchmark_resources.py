"""Peak memory and wall time of ``pbrfit fit`` against reference image size and view count.

Each configuration is a fresh ``python -m pbrfit.cli fit`` process on a synthetic sphere job
(tests/fixtures/synthetic.py: a sphere filling about 40% of each frame, a sky HDRI of
128x64, raster-rendered references) with small iteration counts; the peak resident set
size of that process (its VmHWM, polled every 50 ms) and its wall time are recorded. Image
sizes above the working resolution (``pbrfit.images.MAX_WORKING_SIZE``) are rendered at a
smaller size and repeated up, so that pbrfit reads (and downsamples) a file of that size.

    python scripts/benchmark_resources.py --out benchmarks [--quick]

Writes ``resources.md`` (the table for BENCHMARKS.md) and ``resources.json``.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

from machine import describe as describe_machine  # noqa: E402
from synthetic import render_references, write_job  # noqa: E402

from pbrfit.images import MAX_WORKING_SIZE, read_image, write_exr  # noqa: E402

#: (image size in px, views); views are train views, plus one validation view
CONFIGS = [(160, 1), (160, 4), (160, 16), (320, 4), (512, 1), (512, 4), (1024, 4), (4000, 1)]
QUICK = [(160, 1), (160, 4), (512, 1), (4000, 1)]
#: the fit: small iteration counts (the point is memory and the fixed costs)
FIT = ["--preset", "plastic", "--iterations", "8", "--samples", "16", "--path-iterations", "4", "--quiet"]


def make_job(folder: Path, size: int, views: int) -> Path:
    """A job whose reference files are ``size`` px square (rendered at most at the working
    resolution, then repeated up)."""
    render = size if size <= MAX_WORKING_SIZE else max(d for d in range(MAX_WORKING_SIZE, 0, -1) if size % d == 0)
    job = write_job(folder, size=render, cameras=views, validate_env="sky_val.exr")
    render_references(job, {"base_color": [0.2, 0.4, 0.6], "roughness": 0.4}, seed=5)
    if render != size:
        for exr in sorted((folder / "refs").glob("*.exr")):
            rgb, alpha = read_image(exr)
            img = np.concatenate([rgb, alpha[..., None]], -1)
            img = img.repeat(size // render, axis=0).repeat(size // render, axis=1)
            write_exr(exr, img)
    return job


def _high_water_kib(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM), in KiB; 0 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def measure(job: Path, out: Path, backend: str) -> dict:
    """Wall time and peak RSS of one fit. The peak is the child's own VmHWM, polled: the
    ``ru_maxrss`` that ``wait4`` reports would include this (large) process's RSS at fork."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "core"), os.environ.get("PYTHONPATH", "")]))
    started = time.monotonic()
    with tempfile.TemporaryFile() as out_log, tempfile.TemporaryFile() as err_log:
        proc = subprocess.Popen([sys.executable, "-m", "pbrfit.cli", "fit", str(job), "--out", str(out),
                                 "--backend", backend, *FIT], stdout=out_log, stderr=err_log, env=env)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _high_water_kib(proc.pid))
            time.sleep(0.05)
        wall = time.monotonic() - started
        out_log.seek(0)
        err_log.seek(0)
        stdout, stderr = out_log.read().decode(), err_log.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"fit failed ({proc.returncode}): {stderr[-2000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(peak / 1024), "stdout": stdout.strip()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks"), help="folder for resources.md and resources.json")
    ap.add_argument("--quick", action="store_true", help=f"only {QUICK}")
    ap.add_argument("--configs", help="SIZExVIEWS,... instead of the default set, e.g. 1024x4,4000x1")
    ap.add_argument("--backends", default="auto,raster")
    args = ap.parse_args(argv)
    configs = QUICK if args.quick else CONFIGS
    if args.configs:
        configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    backends = args.backends.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pbrfit-resources-") as tmp:
        for size, views in configs:
            job = make_job(Path(tmp) / f"{size}_{views}", size, views)
            row = {"size": size, "views": views, "working": min(size, MAX_WORKING_SIZE)}
            for backend in backends:
                r = measure(job, Path(tmp) / f"out_{size}_{views}_{backend}", backend)
                row[backend] = {k: v for k, v in r.items() if k != "stdout"}
                print(f"{size:5d} px x {views + 1:2d} views  {backend:6s}  {r['wall_s']:7.1f} s  "
                      f"{r['peak_rss_mib']:6d} MiB", flush=True)
            rows.append(row)
    head = "| reference size | views (train + validate) | working size | " + " | ".join(
        f"{b}: wall (s) | {b}: peak RSS (MiB)" for b in backends) + " |"
    lines = [f"Machine: {describe_machine()}.", "", head, "|" + "---|" * (3 + 2 * len(backends))]
    for row in rows:
        cells = [f"{row['size']} px", f"{row['views']} + 1", f"{row['working']} px"]
        for b in backends:
            cells += [f"{row[b]['wall_s']:.1f}", f"{row[b]['peak_rss_mib']}"]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "resources.md").write_text(table)
    (out / "resources.json").write_text(json.dumps({"machine": describe_machine(), "fit": FIT, "rows": rows}, indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
