"""The path backend against real Cycles: interreflection and subsurface transport.

* Suzanne (self-occluding) in grey rough plastic under a sky with a sun: the path backend
  matches Cycles' mean radiance where the raster backend, without interreflection, is darker.
* A wax sphere (random-walk subsurface) lit from above, with a short mean free path and with
  a red one around a tenth of the sphere's radius: mean radiance per channel within 1.5 % of
  Cycles' Random Walk, and the contrast between the lit and the shadowed side, which tells
  how far light travels under the surface, within 5 % (Cycles' mean free path is radius x
  scale / 4 pi; with radius x scale the long case's red contrast was 17 % low).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pbrfit.images import write_exr
from pbrfit.job import load_job
from pbrfit.params import ParameterSpace, normalize_material
from pbrfit.pathtrace import PathRenderer, PathSettings
from pbrfit.render import RasterRenderer, SampleCounts

pytestmark = pytest.mark.cycles  # renders with real Cycles / runs the bpy module

ROOT = Path(__file__).resolve().parents[1]


def _cycles(d: Path, spec: dict) -> Path:
    (d / "spec.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cycles_reference.py"), str(d / "spec.json")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return Path(spec["out"])


def _material(values):
    space = ParameterSpace(normalize_material(values), [])
    return space.material(space.initial_vector())


@pytest.fixture(scope="module")
def suzanne(tmp_path_factory):
    d = tmp_path_factory.mktemp("path_suzanne")
    spec = {"shape": "suzanne", "material": {"base_color": [0.7, 0.7, 0.7], "roughness": 0.6},
            "train_hdri": str(ROOT / "examples" / "demo" / "hdri" / "forest.exr"), "cameras": 1,
            "resolution": [48, 48], "samples": 128, "out": str(d / "case")}
    return _cycles(d, spec)


#: subsurface scale of the wax sphere -> tolerance of its mean radiance per channel against
#: Cycles' (measured, two seeds averaged: 1.000, 0.997, 0.996 and 1.001, 0.997, 0.998).
#: Regressions they catch: walks starting 0.05 of the caster's epsilon under the surface (11 %
#: of the short case's blue mean free path) read 1.000, 0.985, 0.946; half the walks entering
#: along a cosine (Random Walk (Skin)'s entry) 1.011, 1.008, 0.986 and 1.005, 1.014, 1.034; a
#: refracted entry of GGX alpha 1 instead of roughness^2 1.011, 1.031, 1.058 on the long one;
#: the mean free path 4 pi too long read red 0.87, blue 1.19
MEAN_TOLERANCE = {"short": 0.015, "long": 0.015}


@pytest.fixture(scope="module", params=[0.02, 1.0], ids=list(MEAN_TOLERANCE))
def wax(tmp_path_factory, request):
    d = tmp_path_factory.mktemp(f"path_wax_{request.param_index}")
    sky = np.full((32, 64, 3), 0.05, np.float32)
    sky[:14] = 2.0
    write_exr(d / "top.exr", sky)
    spec = {"shape": "sphere", "material": {"base_color": [0.9, 0.75, 0.5], "roughness": 0.4,
                                            "subsurface_weight": 1.0, "subsurface_radius": [1.0, 0.2, 0.1],
                                            "subsurface_scale": request.param},
            "train_hdri": str(d / "top.exr"), "cameras": 1, "resolution": [40, 40], "samples": 256,
            "out": str(d / ("short" if request.param < 0.1 else "long"))}
    return _cycles(d, spec)


def _renders(case: Path, renderer_cls, settings):
    """(ours, Cycles') pixels inside the part, (N, 3) each."""
    job = load_job(case / "job.toml")
    truth = json.loads((case / "truth.json").read_text())["material"]
    r = renderer_cls(job.scene, settings, seed=0)
    img = r.render_image(0, _material(truth))
    view = job.scene.views[0]
    inside = (view.mask > 0.99) & r.prepare(0).geometry.coverage
    return img[inside], view.image[inside][:, :3]


def _means(case: Path, renderer_cls, settings):
    ours, cycles = _renders(case, renderer_cls, settings)
    return ours.mean(0) / cycles.mean(0)


def test_interreflection_closes_the_gap_to_cycles(suzanne):
    path = _means(suzanne, PathRenderer, PathSettings(spp=64, max_depth=4))
    raster = _means(suzanne, RasterRenderer, SampleCounts(64, 16, 32, 0))
    assert np.allclose(path, 1.0, atol=0.03), path
    assert float(raster.mean()) < float(path.mean()) - 0.02, (raster, path)  # raster misses light


def test_subsurface_walk_matches_cycles_random_walk(wax):
    ours, cycles = _renders(wax, PathRenderer, PathSettings(spp=64, max_depth=3))
    ratio = ours.mean(0) / cycles.mean(0)
    assert np.allclose(ratio, 1.0, atol=MEAN_TOLERANCE[wax.name]), ratio
    # lit against shadowed side (quartiles of Cycles' luminance): how far light travels inside
    y = cycles.mean(-1)
    lit, shadowed = y > np.quantile(y, 0.75), y < np.quantile(y, 0.25)

    def contrast(img):
        return img[lit].mean(0) / img[shadowed].mean(0)

    assert np.allclose(contrast(ours) / contrast(cycles), 1.0, atol=0.05), (contrast(ours), contrast(cycles))
