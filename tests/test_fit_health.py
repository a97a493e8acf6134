"""A result the run's own numbers do not support is handed over with a warning: over-fitting
(validation far above train) and a last stage still improving when its iterations ran out."""

from __future__ import annotations

import pytest
from synthetic import render_references, write_job

from pbrfit import fit_health
from pbrfit.fit import FitOptions
from pbrfit.fit_run import FitRun
from pbrfit.job import load_job
from pbrfit.render import SampleCounts
from pbrfit.report import render_report


def metrics(train: float, validate: float | None = None) -> dict:
    m = {"train": {"mean": {"de2000_mean": train}, "views": {}}}
    if validate is not None:
        m["validate"] = {"mean": {"de2000_mean": validate}, "views": {}}
    return m


def test_overfitting_is_a_warning_that_says_what_would_help():
    # the iridescent finish: train 2.2, validation 6.8
    note = fit_health.overfit_note(metrics(2.2, 6.8))
    assert note["severity"] == "warning" and note["about"] == "fit"
    assert "6.80" in note["message"] and "2.20" in note["message"] and "--preset" in note["message"]
    assert fit_health.overfit_note(metrics(2.01, 1.37)) is None  # the demo: other light, lower ΔE
    assert fit_health.overfit_note(metrics(0.7, 1.3)) is None  # above train, but by less than the excess
    assert fit_health.overfit_note(metrics(4.0, 5.8)) is None  # by the excess, but not the ratio
    assert fit_health.overfit_note(metrics(1.0, 2.6))["severity"] == "warning"
    no_val = fit_health.overfit_note(metrics(1.0))
    assert no_val["severity"] == "note" and "validate" in no_val["message"]


def path_stage(checks, iterations=40):
    return [{"stage": "gloss"}, {"stage": "path", "iterations": iterations, "checks": checks,
                                 "check_metric": "de2000"}]


def test_a_path_refinement_still_improving_is_not_converged():
    note = fit_health.unfinished_note("iterations", path_stage([1.50, 1.45, 1.40, 1.36, 1.31]), [])
    assert note["severity"] == "warning" and "--path-iterations" in note["message"] and "40" in note["message"]
    # flat within noise at the end, stopped for another reason, or too few checks: nothing
    assert fit_health.unfinished_note("iterations", path_stage([1.50, 1.40, 1.37, 1.372, 1.368]), []) is None
    assert fit_health.unfinished_note("converged", path_stage([1.5, 1.4, 1.3, 1.2]), []) is None
    assert fit_health.unfinished_note("iterations", path_stage([1.5, 1.4]), []) is None
    # a wax's relative errors are ~1e-4: the message shows their digits, not "0.000 -> 0.000"
    small = [{"stage": "path", "iterations": 40, "checks": [4.1e-4, 3.9e-4, 3.6e-4, 3.3e-4, 3.0e-4],
              "check_metric": "relative_error"}]
    note = fit_health.unfinished_note("iterations", small, [])
    assert "relative error 0.00036 -> 0.0003" in note["message"], note["message"]


def test_a_raster_stage_still_improving_is_not_converged():
    history = [{"stage": "gloss", "loss": 1.0 - 0.01 * k} for k in range(30)]
    note = fit_health.unfinished_note("iterations", [{"stage": "gloss"}], history)
    assert note is not None and "--iterations" in note["message"] and "gloss" in note["message"]
    assert fit_health.unfinished_note("iterations", [{"stage": "gloss"}, {"stage": "prune"}], history) == note
    flat = [{"stage": "gloss", "loss": 1.0 - 0.01 * min(k, 10)} for k in range(30)]
    assert fit_health.unfinished_note("iterations", [{"stage": "gloss"}], flat) is None


def test_the_report_opens_with_the_run_level_warnings():
    warning = fit_health.overfit_note(metrics(2.2, 6.8))
    data = {"material": {}, "plausibility": [{"parameter": "fit", "severity": "warning",
                                              "message": warning["message"]},
                                             {"parameter": "roughness", "severity": "warning", "message": "x"}]}
    html = render_report(data)
    banner = html.index('id="fit-warnings"')
    assert banner < html.index("<h2>Parameters") and "over-fitted" in html[banner:banner + 600]
    assert 'id="fit-warnings"' not in render_report({"material": {}, "plausibility": []})


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    job = write_job(tmp_path_factory.mktemp("health"), size=24, cameras=2, validate_env="sky_val.exr")
    render_references(job, {"base_color": [0.6, 0.3, 0.2], "roughness": 0.35}, samples=SampleCounts(16, 4, 8, 4))
    return job


def test_a_run_records_its_path_checks_and_notes_what_they_say(case):
    job = load_job(case)
    opts = FitOptions(parameters=["base_color", "roughness"], iterations=12, samples=SampleCounts(16, 4, 8, 4),
                      path_iterations=4, check_every=2, path_spp=2, path_max_spp=2, threads=1)
    result = FitRun(job.scene, opts).run()
    path = result.schedule[-1]
    assert path["stage"] == "path" and len(path["checks"]) == 1 + path["iterations"] // 2
    assert result.stopped in ("converged", "iterations")
    assert set(result.identifiability) == {"base_color", "roughness"} and "identifiability" in result.timings
    expected = fit_health.notes(result.metrics, result.stopped, result.schedule, result.history)
    assert [n for n in result.notes if n.get("about") == "fit"] == expected


# --- identifiability -----------------------------------------------------------------------

def raster_objective(case):
    from pbrfit.objective import Objective
    from pbrfit.render import RasterRenderer

    job = load_job(case)
    renderer = RasterRenderer(job.scene, SampleCounts(16, 4, 8, 4), seed=2, max_loss_pixels=256)
    return Objective(renderer, [0, 1], {"de2000": 1.0})


def test_colour_and_roughness_are_determined_and_a_redundant_pair_is_not(case):
    from pbrfit import identifiability
    from pbrfit.params import normalize_material

    objective = raster_objective(case)
    values = normalize_material({"base_color": [0.6, 0.3, 0.2], "roughness": 0.35, "ior": 1.5,
                                 "specular_ior_level": 0.5})
    found = identifiability.analyse(objective, values, ["base_color", "roughness"])
    assert found["base_color"]["determined"] and found["roughness"]["determined"]
    assert 0 < found["roughness"]["tolerance"] < 0.1 and identifiability.findings(found) == []
    # Blender's specular IOR level rescales the IOR's F0: the two explain the same reflection
    found = identifiability.analyse(objective, values, ["roughness", "ior", "specular_ior_level"])
    assert not found["ior"]["determined"] and not found["specular_ior_level"]["determined"]
    assert found["specular_ior_level"]["trades_with"] == "ior" and found["specular_ior_level"]["correlation"] < -0.9
    assert found["roughness"]["determined"]
    notes = identifiability.findings(found)
    assert {n["about"] for n in notes} == {"ior", "specular_ior_level"}
    assert all("not determined by these photos" in n["message"] and n["severity"] == "warning" for n in notes)
    assert all("freeze it" in n["message"] for n in notes)
    # one the structure search already held at its simplest value is said to be held, not to be frozen
    held = {n["about"]: n["message"] for n in identifiability.findings(found, {"specular_ior_level": 0.5})}
    specular = held["specular_ior_level"]
    assert "held at its simplest value, 0.5" in specular and "freeze" not in specular
    assert "freeze it" in held["ior"]


def test_a_parameter_the_renders_do_not_depend_on_has_no_tolerance(case):
    from pbrfit import identifiability
    from pbrfit.params import normalize_material

    values = normalize_material({"base_color": [0.6, 0.3, 0.2], "roughness": 0.35, "coat_weight": 0.0})
    found = identifiability.analyse(raster_objective(case), values, ["roughness", "coat_roughness"])
    assert found["coat_roughness"]["tolerance"] == float("inf") and not found["coat_roughness"]["determined"]
    assert found["roughness"]["determined"]
    assert "any value in its range" in identifiability.findings(found)[0]["message"]


# --- no false layers -----------------------------------------------------------------------

def test_a_glossy_plastic_loses_a_false_coat(tmp_path):
    """A rough base under a coat can look like a glossy plastic: switching the coat off and
    re-fitting the base finds the simpler structure, and the coat goes."""
    truth = {"base_color": [0.8, 0.8, 0.78], "roughness": 0.15, "specular_ior_level": 0.5}
    job_path = write_job(tmp_path, size=48, cameras=3)
    render_references(job_path, truth, samples=SampleCounts(128, 32, 64, 32))
    job = load_job(job_path)
    opts = FitOptions(parameters=["base_color", "roughness", "coat_weight", "coat_roughness"], iterations=20,
                      samples=SampleCounts(64, 16, 32, 16), backend="raster", threads=1)
    run = FitRun(job.scene, opts)
    run.values = dict(run.values, base_color=[0.8, 0.8, 0.78], roughness=0.55, coat_weight=0.5,
                      coat_roughness=0.15)  # the false structure the issue reports
    run.prune()
    assert run.values["coat_weight"] == 0.0
    assert run.values["roughness"] == pytest.approx(0.15, abs=0.05)
    assert run.schedule[-1]["stage"] == "prune" and run.schedule[-1]["parameters"] == ["coat_weight"]


def test_parameters_the_raster_renderer_does_not_render_are_not_analysed(case):
    from pbrfit import identifiability
    from pbrfit.params import normalize_material

    values = normalize_material({"base_color": [0.6, 0.3, 0.2], "roughness": 0.35, "subsurface_weight": 0.5})
    found = identifiability.analyse(raster_objective(case), values,
                                    ["roughness", "subsurface_weight", "subsurface_scale"])
    assert set(found) == {"roughness"}
