"""How smooth a fitted normal map should be: the embossed panel's normals on raster references.

The Cycles texture benchmark (``scripts/benchmark_textures.py``) takes about 40 minutes a case
on 2 cores; this sweep compares settings of the normal map's regularization in minutes. It
renders ``benchmark_textures``' embossed panel (its truth normal map, at the map resolution
asked for) on the test fixtures' synthetic UV sphere (4 cameras, a sky HDRI) with pbrfit's own
raster renderer as the references, fits ``[textures] maps = ["normal"]`` with each
``tv_weight`` given (the normal map's total variation is ``texture_fit.NORMAL_SMOOTHNESS`` times
it), and prints the fitted normals' mean angle from the truth over the observed texels: all of
them, the ramps' (truth tilted more than 5 degrees) and the plateaus', and the fitted ramps'
mean tilt against the truth's. Its numbers say which setting fits the normals better on
pbrfit's own renders, and only that: 15x instead of 50x won here (6.91 -> 4.57 degrees at a
128² map) and lost against Cycles' references (7.8 -> 8.6 degrees, BENCHMARKS.md), whose
mismatch with pbrfit's renders a weaker smoothness lets into the flat texels.

Usage::

    python scripts/tune_normal_smoothness.py [--map-resolution 128] [--size 128] \\
        [--tv-weights 0.1,0.03,0.01] [--out out/tune_normal_smoothness]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))

import synthetic
from benchmark_textures import CASES, _unit, embossed_panel_maps

from pbrfit.images import read_image

#: the truth's ramps: texels whose normal tilts more than this from flat, degrees
RAMP_TILT_DEG = 5.0


def _tilt(n: np.ndarray) -> np.ndarray:
    """Degrees between unit normals ``n`` (..., 3) and flat (0, 0, 1)."""
    return np.degrees(np.arccos(np.clip(n[..., 2], -1.0, 1.0)))


def _decoded(encoded: np.ndarray) -> np.ndarray:
    """Unit normals from an encoded normal map's (n + 1) / 2."""
    return _unit(encoded[..., :3] * 2.0 - 1.0)


def sweep(out: Path, resolution: int, size: int, tv_weights: list[float]) -> list[dict]:
    """Fit the embossed panel once per ``tv_weights`` entry; one row of errors each."""
    truth_encoded = embossed_panel_maps(resolution)["normal"]
    truth = _decoded(truth_encoded)
    truth_tilt = _tilt(truth)
    ramp = truth_tilt > RAMP_TILT_DEG
    material = CASES["embossed_panel"]["material"]
    rows = []
    for tv in tv_weights:
        folder = out / f"tv{tv:g}"
        job = synthetic.write_job(folder / "job", uvs=True, size=size, cameras=4,
                                  extra=f'[textures]\nmaps = ["normal"]\nresolution = {resolution}\n'
                                        f'tv_weight = {tv}')
        synthetic.render_references(job, material, maps={"normal": truth_encoded})
        started = time.monotonic()
        fit = folder / "fit"
        r = subprocess.run([sys.executable, "-m", "pbrfit.cli", "fit", str(job), "--out", str(fit),
                            "--fit", "base_color,roughness", "--iterations", "30", "--backend", "raster",
                            "--quiet"], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"tv_weight {tv}: pbrfit fit failed: {r.stderr.strip().splitlines()[-1]}")
        fitted = _decoded(read_image(fit / "textures" / "normal.exr")[0])
        seen = read_image(fit / "textures" / "normal_observed.png")[0][..., 0] > 0.5
        angle = np.degrees(np.arccos(np.clip((fitted * truth).sum(-1), -1.0, 1.0)))
        rows.append({"tv_weight": tv, "angle": float(angle[seen].mean()), "flat": float(truth_tilt[seen].mean()),
                     "ramps": float(angle[seen & ramp].mean()), "plateaus": float(angle[seen & ~ramp].mean()),
                     "ramp_tilt": float(_tilt(fitted)[seen & ramp].mean()),
                     "truth_ramp_tilt": float(truth_tilt[seen & ramp].mean()),
                     "seconds": time.monotonic() - started})
        row = rows[-1]
        print(f"tv_weight {tv:g}: {row['angle']:.2f} degrees from the truth (flat {row['flat']:.2f}); ramps "
              f"{row['ramps']:.2f}, plateaus {row['plateaus']:.2f}; ramps tilt {row['ramp_tilt']:.2f} for "
              f"{row['truth_ramp_tilt']:.2f}; {row['seconds']:.0f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out/tune_normal_smoothness")
    ap.add_argument("--map-resolution", type=int, default=128)
    ap.add_argument("--size", type=int, default=128, help="reference image side, px")
    ap.add_argument("--tv-weights", default="0.1,0.03,0.01")
    a = ap.parse_args()
    sweep(Path(a.out), a.map_resolution, a.size, [float(t) for t in a.tv_weights.split(",")])


if __name__ == "__main__":
    main()
