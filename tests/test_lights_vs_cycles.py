"""Analytic lights against real Cycles: Blender lamps, exported by Blender's USD exporter, read
by pbrfit (pbrfit.lights) and rendered by the raster backend; mean radiance within 3%.

A rough grey sphere under a dim uniform environment and one lamp per case: a sun with a 10
degree disc, a point lamp of radius 0.3 m, a rectangular and a disk area lamp, and all of them
at once. Each case is lit from one side, so the shadowed half and the terminator count too."""

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
sys.path.insert(0, str(ROOT / "scripts"))
from benchmark_lights import LAMPS  # noqa: E402  (one lamp list for the test and the benchmark)


def _render(folder, lamps) -> Path:
    """Cycles renders of the grey sphere under ``lamps`` and a dim World; the case folder."""
    write_exr(folder / "dim.exr", np.full((32, 64, 3), 0.05, np.float32))
    spec = {"shape": "sphere", "material": {"base_color": [0.7, 0.68, 0.6], "roughness": 0.6},
            "train_hdri": str(folder / "dim.exr"), "cameras": 2, "resolution": [48, 48], "samples": 128,
            "lights": lamps, "out": str(folder / "case")}
    (folder / "spec.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cycles_reference.py"), str(folder / "spec.json")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return folder / "case"


_CASES: dict = {}


@pytest.fixture(scope="module", params=list(LAMPS))
def case(request, tmp_path_factory):
    _CASES[request.param] = _render(tmp_path_factory.mktemp(f"lights_{request.param}"), LAMPS[request.param])
    return request.param, _CASES[request.param]


@pytest.fixture(scope="module")
def every_lamp(tmp_path_factory):
    """The case with every lamp (rendered once: shared with the parametrized fixture if it ran)."""
    if "all" not in _CASES:
        _CASES["all"] = _render(tmp_path_factory.mktemp("lights_all_path"), LAMPS["all"])
    return _CASES["all"]


def test_each_lamp_renders_as_in_cycles(case):
    name, folder = case
    job = load_job(folder / "job.toml")
    assert len(job.scene.views[0].lights) == len(LAMPS[name])
    truth = json.loads((folder / "truth.json").read_text())["material"]
    space = ParameterSpace(normalize_material(truth), [])
    m = space.material(space.initial_vector())
    r = RasterRenderer(job.scene, SampleCounts(64, 16, 32, 0, 64), seed=0)
    for vi, view in enumerate(job.scene.views):
        img = r.render_image(vi, m)
        inside = view.mask > 0.99
        ratio = img[inside].mean(0) / view.image[inside].mean(0)
        assert np.allclose(ratio, 1.0, atol=0.03), (name, view.name, ratio)
        # and not only on average: the lit and the shadowed halves each within 6%
        lum = view.image[inside] @ np.array([0.2126, 0.7152, 0.0722])
        for half in (lum > np.median(lum), lum <= np.median(lum)):
            r_half = img[inside][half].mean(0) / view.image[inside][half].mean(0)
            assert np.allclose(r_half, 1.0, atol=0.06), (name, view.name, r_half)


def test_the_path_tracer_lights_as_the_raster_does(every_lamp):
    """The path backend's next-event estimation of every lamp at once against Cycles."""
    job = load_job(every_lamp / "job.toml")
    truth = json.loads((every_lamp / "truth.json").read_text())["material"]
    space = ParameterSpace(normalize_material(truth), [])
    m = space.material(space.initial_vector())
    r = PathRenderer(job.scene, PathSettings(64, 3), seed=0)
    for vi, view in enumerate(job.scene.views):
        img = r.render_image(vi, m)
        inside = view.mask > 0.99
        ratio = img[inside].mean(0) / view.image[inside].mean(0)
        assert np.allclose(ratio, 1.0, atol=0.03), (view.name, ratio)


STUDIO = [{"type": "AREA", "energy": 500.0, "shape": "RECTANGLE", "size": 2.0, "size_y": 1.0,
           "location": [-3.0, -3.0, 2.5]},
          {"type": "SUN", "energy": 2.0, "angle": 5.0, "location": [4, -2, 3]},
          {"type": "POINT", "energy": 300.0, "radius": 0.2, "location": [1.0, 3.5, 1.0]}]
PLASTIC = {"base_color": [0.6, 0.1, 0.08], "roughness": 0.35}


def test_a_fit_under_a_studio_rig_with_a_black_surround_recovers_the_material(tmp_path):
    """Three lamps and a black World (no HDRI light at all): the job loads (the white comes from
    the lamps), and the raster fit finds the plastic's colour and roughness."""
    from pbrfit.fit import FitOptions, fit_material

    write_exr(tmp_path / "black.exr", np.zeros((16, 32, 3), np.float32))
    spec = {"shape": "sphere", "material": PLASTIC, "train_hdri": str(tmp_path / "black.exr"), "cameras": 4,
            "resolution": [48, 48], "samples": 128, "lights": STUDIO, "out": str(tmp_path / "case")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cycles_reference.py"), str(tmp_path / "spec.json")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    job = load_job(tmp_path / "case" / "job.toml")
    assert sorted(light.kind for light in job.scene.views[0].lights) == ["distant", "rect", "sphere"]
    result = fit_material(job.scene, FitOptions(parameters=["base_color", "roughness"], backend="raster",
                                                iterations=30, seed=0))
    assert np.allclose(result.material["base_color"], PLASTIC["base_color"], atol=0.03), result.material
    assert abs(result.material["roughness"] - PLASTIC["roughness"]) < 0.06, result.material
    assert result.metrics["train"]["mean"]["de2000_mean"] < 2.0
