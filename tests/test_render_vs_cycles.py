"""The raster backend against real Cycles on a convex part: no bias in mean radiance.

A rough grey plastic sphere under three environments rendered by Cycles
(scripts/cycles_reference.py): uniform, a half-bright sky, and a small very bright patch.
The last one caught a real bias (prefiltered lookups under MIS counted a small source twice).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pbrfit import losses as L
from pbrfit.images import write_exr
from pbrfit.job import load_job
from pbrfit.params import ParameterSpace, normalize_material
from pbrfit.render import RasterRenderer, SampleCounts

pytestmark = pytest.mark.cycles  # renders with real Cycles / runs the bpy module

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("vs_cycles")
    env = {"const": np.ones((64, 128, 3), np.float32)}
    half = np.full((64, 128, 3), 0.2, np.float32)
    half[:32] = 2.0
    env["half"] = half
    patch = np.full((64, 128, 3), 0.01, np.float32)
    patch[20:26, 28:36] = 50.0
    env["patch"] = patch
    for name, img in env.items():
        write_exr(d / f"{name}.exr", img)
    spec = {"shape": "sphere", "material": {"base_color": [0.7, 0.68, 0.6], "roughness": 0.6},
            "train_hdri": str(d / "const.exr"), "validate_hdris": [str(d / "half.exr"), str(d / "patch.exr")],
            "cameras": 2, "resolution": [48, 48], "samples": 128, "out": str(d / "case")}
    (d / "spec.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cycles_reference.py"), str(d / "spec.json")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return d / "case"


def test_raster_matches_cycles_mean_radiance(case):
    job = load_job(case / "job.toml")
    truth = json.loads((case / "truth.json").read_text())["material"]
    space = ParameterSpace(normalize_material(truth), [])
    m = space.material(space.initial_vector())
    r = RasterRenderer(job.scene, SampleCounts(64, 16, 32, 0), seed=0)
    for vi, view in enumerate(job.scene.views):
        img = r.render_image(vi, m)
        inside = view.mask > 0.99
        ratio = img[inside].mean(0) / view.image[inside].mean(0)
        assert np.allclose(ratio, 1.0, atol=0.03), (view.name, ratio)
        de = float(L.de2000(torch.as_tensor(img[inside]), torch.as_tensor(view.image[inside]),
                            white=r.environment(vi).mean_luminance))
        assert de < 2.0, (view.name, de)
