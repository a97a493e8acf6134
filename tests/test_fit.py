"""Fitting: recovery of known parameters, staged schedule, cancellation, early stopping."""

import threading

import numpy as np
import pytest
from synthetic import render_references, write_job

from pbrfit.errors import FitCancelled, InputError
from pbrfit.fit import FitOptions, fit_material
from pbrfit.job import load_job
from pbrfit.render import RasterRenderer, SampleCounts

TRUTH = {"base_color": [0.55, 0.2, 0.08], "roughness": 0.35, "specular_ior_level": 0.5}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    job = write_job(tmp_path_factory.mktemp("fit"), size=48, cameras=3, validate_env="sky_val.exr")
    render_references(job, TRUTH, seed=99)
    return job


def test_fit_recovers_known_parameters(case):
    job = load_job(case)
    opts = FitOptions(parameters=["base_color", "roughness"], iterations=30)
    result = fit_material(job.scene, opts)
    assert np.allclose(result.material["base_color"], TRUTH["base_color"], atol=0.03)
    assert result.material["roughness"] == pytest.approx(TRUTH["roughness"], abs=0.05)
    assert result.metrics["validate"]["mean"]["de2000_mean"] < 1.5
    # the initial material (Blender's default grey) was far worse
    assert result.history[0]["train_de2000"] > 5 * result.metrics["train"]["mean"]["de2000_mean"]
    assert [s["stage"] for s in result.schedule] == ["colour", "gloss", "path"]  # auto: raster, then path


def test_cancel_stops_the_fit(case):
    job = load_job(case)
    cancel = threading.Event()
    seen = []

    def progress(p):
        seen.append(p.iteration)
        if p.iteration >= 2:
            cancel.set()

    with pytest.raises(FitCancelled):
        fit_material(job.scene, FitOptions(parameters=["base_color"], iterations=50,
                                           samples=SampleCounts(4, 2, 2, 0)), progress=progress, cancel=cancel)
    assert 2 <= max(seen) <= 4


def test_no_train_views_and_bad_options_are_input_errors(case):
    job = load_job(case)
    for v in job.scene.views:
        v.split = "validate"
    with pytest.raises(InputError, match="no train views"):
        fit_material(job.scene, FitOptions(iterations=1))
    with pytest.raises(InputError, match="unknown loss"):
        fit_material(load_job(case).scene, FitOptions(loss={"lpips": 1.0}))
    for alone in ("ssim", {"ssim": 1.0, "l1": 0.0}):  # the objective leaves SSIM out: nothing would be fitted
        with pytest.raises(InputError, match="ssim .* cannot be fitted alone"):
            fit_material(load_job(case).scene, FitOptions(loss=alone))


def test_a_weight_on_ssim_is_said_not_to_be_fitted(case):
    """SSIM beside a per-pixel loss is accepted, and the result says it was not fitted."""
    result = fit_material(load_job(case).scene, FitOptions(parameters=["base_color"], iterations=1,
                                                           loss={"de2000": 1.0, "ssim": 0.2}, backend="raster",
                                                           samples=SampleCounts(4, 2, 2, 0)))
    said = [n["message"] for n in result.notes if n["about"] == "loss"]
    assert len(said) == 1 and "ssim (weight 0.2) was not fitted" in said[0], result.notes
    plain = fit_material(load_job(case).scene, FitOptions(parameters=["base_color"], iterations=1, backend="raster",
                                                          samples=SampleCounts(4, 2, 2, 0)))
    assert not [n for n in plain.notes if n["about"] == "loss"]


def test_layers_that_do_not_pay_for_themselves_are_pruned(case, tmp_path):
    """Occam's razor on layer switches: spurious layers go, a real coat stays."""
    from pbrfit.layers import prune_layers
    from pbrfit.objective import Objective
    from pbrfit.params import ParameterSpace, default_material

    def prune(job_path, values, fit):
        job = load_job(job_path)
        renderer = RasterRenderer(job.scene, SampleCounts(32, 8, 16, 8))
        objective = Objective(renderer, [0, 1, 2], {"de2000": 1.0, "l1": 10.0})
        space = ParameterSpace(values, fit)
        return prune_layers(space, values, lambda s, u: objective(s.material(u))[0])

    spurious = default_material() | TRUTH | {"anisotropic": 0.05, "sheen_weight": 0.03}
    values, pruned = prune(case, spurious, ["base_color", "roughness", "anisotropic", "sheen_weight"])
    assert set(pruned) == {"anisotropic", "sheen_weight"} and values["anisotropic"] == 0.0

    coated_truth = TRUTH | {"coat_weight": 1.0, "coat_roughness": 0.05}
    coated = write_job(tmp_path / "coated", size=48, cameras=3)
    render_references(coated, coated_truth, seed=7)
    values, pruned = prune(coated, default_material() | coated_truth, ["base_color", "coat_weight"])
    assert pruned == [] and values["coat_weight"] == 1.0
