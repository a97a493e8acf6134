"""Other structures than the warm start's (pbrfit.hypotheses), and the noise-free error that
decides between them (FitRun.structure_evidence)."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import render_references, write_job

from pbrfit import hypotheses
from pbrfit.fit import FitOptions, compute_settings
from pbrfit.fit_run import FitRun
from pbrfit.job import load_job
from pbrfit.objective import Objective, unbiased_relative_error
from pbrfit.params import ParameterSpace, default_material
from pbrfit.renderers import Renderers

PARAMS = ["base_color", "roughness", "specular_ior_level", "coat_weight", "coat_roughness"]
COATED = {"base_color": [0.5, 0.03, 0.03], "roughness": 0.5, "coat_weight": 1.0, "coat_roughness": 0.05}
GLOSSY = {"base_color": [0.8, 0.8, 0.8], "roughness": 0.15}


def _film_loss(minima: dict[float, float]):
    """A train loss of thickness alone: narrow wells of the given depth at the given
    thicknesses (nm) on a level of 10."""
    def loss_of(space, u):
        t = space.values(u)["thin_film_thickness"]
        return 10.0 - sum(depth * np.exp(-((t - at) / 30.0) ** 2) for at, depth in minima.items())
    return loss_of


def test_film_branches_start_at_the_other_deepest_minima():
    space = ParameterSpace(default_material(), ["thin_film_thickness"])
    loss_of = _film_loss({470.0: 6.0, 350.0: 8.0, 900.0: 3.0, 1200.0: 5.0})
    current = dict(default_material(), thin_film_thickness=470.0)
    starts = hypotheses.film_branches(space, current, ["thin_film_thickness"], loss_of)
    assert len(starts) == hypotheses.FILM_BRANCHES
    step = 1500.0 * (1 - 2 * 0.02) / (hypotheses.FILM_PROFILE_POINTS - 1)
    # the deepest others first, the current branch's own well left out, each placed between the
    # profile's samples (a parabola through the minimum and its neighbours)
    assert all(abs(s["thin_film_thickness"] - at) <= 0.25 * step for s, at in zip(starts, (350.0, 1200.0)))
    # what the gloss stage used to mimic the film starts at its simplest again
    mimic = dict(current, metallic=0.26, specular_ior_level=0.1)
    fitted = ["metallic", "specular_ior_level", "thin_film_thickness"]
    assert all(s["metallic"] == 0.0 and s["specular_ior_level"] == 0.5
               for s in hypotheses.film_branches(space, mimic, fitted, loss_of))
    # no film fitted, or the warm start left it off: nothing to try
    assert hypotheses.film_branches(space, current, ["roughness"], loss_of) == []
    assert hypotheses.film_branches(space, default_material(), ["thin_film_thickness"], loss_of) == []


def test_the_coat_hypothesis_gives_the_coat_the_bases_highlight():
    space = ParameterSpace(default_material(), PARAMS)
    glossy_base = dict(default_material(), roughness=0.14, specular_ior_level=0.82)

    def loss_of(s, u):  # best with the base at roughness 0.5
        return (s.values(u)["roughness"] - 0.5) ** 2

    start = hypotheses.coat_takes_highlight(space, glossy_base, PARAMS, loss_of)
    assert start["coat_weight"] == 1.0 and start["coat_roughness"] == pytest.approx(0.14)
    assert start["specular_ior_level"] == 0.5  # the gloss stage's compensation undone
    assert start["roughness"] == pytest.approx(0.5, abs=0.07)  # searched again (the grid's nearest point)
    # not without a coat and a base roughness to fit, nor when the coat already has the highlight
    assert hypotheses.coat_takes_highlight(space, glossy_base, ["base_color", "roughness"], loss_of) is None
    carried = dict(glossy_base, coat_weight=0.9, coat_roughness=0.05, roughness=0.5)
    assert hypotheses.coat_takes_highlight(space, carried, PARAMS, loss_of) is None


def test_the_coat_hypothesis_searches_the_coats_roughness_below_the_bases_highlight():
    space = ParameterSpace(default_material(), PARAMS)
    glossy_base = dict(default_material(), roughness=0.28, specular_ior_level=0.95)

    def loss_of(s, u):  # the truth: a 0.05 coat over a 0.5 base
        v = s.values(u)
        return (v["roughness"] - 0.5) ** 2 + (v["coat_roughness"] - 0.05) ** 2

    start = hypotheses.coat_takes_highlight(space, glossy_base, PARAMS, loss_of)
    shares = hypotheses.COAT_ROUGHNESS_SHARES
    assert start["coat_roughness"] == pytest.approx(0.28 * shares[-1])  # the nearest candidate to 0.05
    assert start["roughness"] == pytest.approx(0.5, abs=0.07)


def test_the_coat_hypothesis_starts_from_a_weak_coats_sharper_highlight():
    """Suzanne's clear-coated paint: the warm start had put a weak coat at roughness 0 over a
    0.30 base; the full coat may keep that sharp highlight (a candidate of its own), and the
    base, searched after the coat chose, goes back to its own roughness."""
    space = ParameterSpace(default_material(), PARAMS)
    weak_coat = dict(default_material(), roughness=0.295, specular_ior_level=0.95, coat_weight=0.25,
                     coat_roughness=0.0)

    def loss_of(s, u):  # the truth: a 0.01 coat over a 0.5 base
        v = s.values(u)
        return (v["roughness"] - 0.5) ** 2 + (v["coat_roughness"] - 0.01) ** 2

    start = hypotheses.coat_takes_highlight(space, weak_coat, PARAMS, loss_of)
    assert start["coat_weight"] == 1.0 and start["coat_roughness"] == 0.0
    assert start["roughness"] == pytest.approx(0.5, abs=0.07)
    # a weak coat rougher than the base is not the highlight: only the base's shares are tried
    rough_coat = dict(weak_coat, coat_roughness=0.6)
    shares = hypotheses.COAT_ROUGHNESS_SHARES
    assert hypotheses.coat_takes_highlight(space, rough_coat, PARAMS, loss_of)["coat_roughness"] == pytest.approx(
        0.295 * shares[-1])


def test_the_twin_renderer_measures_error_without_the_renders_noise(tmp_path):
    job = write_job(tmp_path / "j", size=32, cameras=2)
    render_references(job, GLOSSY, seed=7)
    scene = load_job(job).scene
    renderers = Renderers(scene, FitOptions(seed=0))
    fit = renderers.raster_fit()
    twin = renderers.raster_twin(fit)
    objective = Objective(fit, [0, 1], {"l2": 1.0})
    for vi in (0, 1):
        twin.prepare(vi)
        assert np.array_equal(twin.train_subsets[vi], fit.train_subsets[vi])
    s = ParameterSpace(default_material() | GLOSSY, [])
    m = s.material(s.initial_vector())
    a = fit.shade(0, m, fit.train_subsets[0])
    assert not np.allclose(a.numpy(), twin.shade(0, m, fit.train_subsets[0]).numpy())  # independent samples
    truth = unbiased_relative_error(objective, m, twin=twin)
    biased = float(sum((((fit.shade(vi, m, fit.train_subsets[vi]) / objective.whites[vi] - objective.refs[vi]) ** 2)
                        / (objective.refs[vi] ** 2 + 0.05**2)).mean() for vi in (0, 1)) / 2)
    # (at 32 px the pixel filter widens the lobes as much as roughness 0.2 would: pbrfit.pixel_filter)
    off = ParameterSpace(default_material() | GLOSSY | {"roughness": 0.4}, [])
    wrong = unbiased_relative_error(objective, off.material(off.initial_vector()), twin=twin)
    assert truth < 0.7 * biased  # the fit render's own noise is gone from the estimate
    assert wrong > 1.2 * truth  # (the truth keeps the reference's own noise)


@pytest.mark.parametrize("truth, coat", [(COATED, True), (GLOSSY, False)], ids=["coated paint", "glossy plastic"])
def test_the_default_structure_search_finds_a_coat_only_where_there_is_one(tmp_path, truth, coat):
    """A red paint under a clear coat came out as a glossy base with no coat (the gloss stage
    gives the base the coat's highlight); a white glossy plastic must not gain a false coat
    over a rough base (which the train loss itself prefers: it renders with less noise)."""
    job = write_job(tmp_path / "j", size=40, cameras=3)
    render_references(job, truth, seed=7)
    with compute_settings(1):
        run = FitRun(load_job(job).scene, FitOptions(seed=0, parameters=PARAMS, iterations=40, backend="raster"))
        run.measure_initial()
        run.raster_stages()
        run.prune()
    tried = next(s["hypotheses"] for s in run.schedule if s["stage"] == "layers")
    assert [t["hypothesis"] for t in tried] == ["warm start", "coat takes the highlight"]
    assert [t["chosen"] for t in tried] == [not coat, coat]
    v = run.values
    if coat:
        # the coat carries the highlight; at 40 px the pixel filter (pbrfit.pixel_filter) makes a
        # coat of roughness 0.05 look like one of 0.15, so its roughness is only bounded here
        assert v["coat_weight"] > 0.9 and v["coat_roughness"] < 0.2 and abs(v["roughness"] - 0.5) < 0.08
    else:
        assert v["coat_weight"] == 0.0 and abs(v["roughness"] - 0.15) < 0.05
    assert np.allclose(v["base_color"], truth["base_color"], atol=0.03)


def test_the_structures_tried_are_reported():
    from pbrfit.report import render_report

    schedule = [{"stage": "colour", "parameters": ["base_color"], "iterations": 5, "warm_started": []},
                {"stage": "layers", "parameters": PARAMS, "iterations": 9, "warm_started": [],
                 "hypotheses": [{"hypothesis": "warm start", "error": 0.0053, "chosen": False},
                                {"hypothesis": "coat takes the highlight", "error": 0.0006, "chosen": True}]},
                {"stage": "prune", "parameters": ["sheen_weight"], "iterations": 10, "warm_started": []}]
    summary = hypotheses.structure_summary(schedule)
    assert summary["chosen"] == "coat takes the highlight" and summary["pruned"] == ["sheen_weight"]
    assert "2%" in summary["rule"]
    assert hypotheses.structure_summary(schedule[:1]) is None
    html = render_report({"title": "t", "structure": summary})
    section = html[html.index('id="structure"'):]
    assert "coat takes the highlight" in section and "0.00060" in section and "sheen_weight" in section
    # pruning's trials, each with its criteria's rises and the error's margin
    tests = [{"parameter": "coat_weight", "to": 0.0, "refit": True, "rises": [0.022, 0.041], "margin": 1.3,
              "dropped": True}]
    schedule[-1]["tests"] = tests
    summary = hypotheses.structure_summary(schedule)
    assert summary["tests"] == tests and "standard errors" in summary["rule"]
    section = render_report({"title": "t", "structure": summary})
    section = section[section.index('id="structure"'):]
    assert "+4.1%" in section and "1.3" in section and "does not pay" in section


def test_a_layer_must_pay_on_every_pruning_criterion():
    from pbrfit.layers import prune_layers

    space = ParameterSpace(default_material(), ["base_color", "anisotropic", "coat_weight"])
    values = dict(default_material(), anisotropic=0.25, coat_weight=1.0)

    def criteria(s, u):  # the coat pays on both; anisotropy only on the second
        v = s.values(u)
        return (10.0 - 3.0 * v["coat_weight"] - 0.01 * v["anisotropic"],
                1.0 - 0.3 * v["coat_weight"] - 0.4 * v["anisotropic"])

    kept, pruned = prune_layers(space, values, criteria)
    assert pruned == ["anisotropic"] and kept["coat_weight"] == 1.0 and kept["anisotropic"] == 0.0
    # one criterion alone keeps the anisotropy
    _, pruned = prune_layers(space, values, lambda s, u: criteria(s, u)[1])
    assert pruned == []


def test_a_layers_gain_in_the_structure_error_must_stand_out_of_its_pixels_noise():
    """The same 4% mean gain on the evidence criterion keeps a layer when the pixels agree on it
    and drops it when a few pixels carry it against the rest's scatter (1.3 standard errors,
    the false coat on Suzanne)."""
    import torch

    from pbrfit.layers import LAYER_SIGNIFICANCE, Evidence, pays, prune_layers
    from pbrfit.objective import paired_margin

    space = ParameterSpace(default_material(), ["base_color", "coat_weight"])
    values = dict(default_material(), coat_weight=0.02)
    g = torch.Generator().manual_seed(0)
    base = 0.01 + 0.002 * torch.rand(1024, generator=g)
    spread = torch.randn(1024, generator=g)

    def criteria(scatter):
        def of(s, u):
            coat = s.values(u)["coat_weight"] > 0
            # without the coat every pixel reads 4% of the mean worse, plus a scatter of zero mean
            terms = base + (0.0 if coat else 0.04 * float(base.mean()) + scatter * spread)
            return 2.0 - 0.1 * coat, Evidence(float(terms.mean()), terms)
        return of

    steady = criteria(0.0)
    kept, pruned = prune_layers(space, values, steady)
    assert pruned == [] and kept["coat_weight"] == 0.02
    # the scatter that puts the same mean gain at ~1.3 standard errors of the differences
    scatter = 0.04 * float(base.mean()) * 32 / 1.3 / float(spread.std())
    noisy = criteria(scatter)
    on, off = (noisy(s, s.initial_vector()) for s in (ParameterSpace(values, []),
                                                       ParameterSpace(dict(values, coat_weight=0.0), [])))
    margin = paired_margin(off[1].terms, on[1].terms)
    assert 0.5 < margin < LAYER_SIGNIFICANCE and off[1].value > on[1].value * 1.02
    assert not pays(on, off)
    log = []
    kept, pruned = prune_layers(space, values, noisy, log=log)
    assert pruned == ["coat_weight"] and kept["coat_weight"] == 0.0
    (record,) = log  # no re-fit given: the layer tested as it is
    assert record["parameter"] == "coat_weight" and record["refit"] is False and record["dropped"]
    assert record["margin"] == pytest.approx(margin) and record["rises"][0] == pytest.approx(0.1 / 1.9)
    # numbers alone (no terms) are judged on the share only, as before
    assert pays((on[0], on[1].value), (off[0], off[1].value))


def test_a_layer_that_does_nothing_is_pruned_even_when_the_refit_lands_worse():
    from pbrfit.layers import prune_layers

    space = ParameterSpace(default_material(), ["roughness", "coat_weight"])
    values = dict(default_material(), roughness=0.4, coat_weight=0.02)

    def loss(s, u):  # the coat changes nothing; the roughness is best where it is
        return 1.0 + (s.values(u)["roughness"] - 0.4) ** 2

    def bad_refit(v, hold=()):  # a re-fit whose grid search moved the roughness away
        return dict(v, roughness=0.8)

    kept, pruned = prune_layers(space, values, loss, refit=bad_refit)
    assert pruned == ["coat_weight"] and kept["coat_weight"] == 0.0 and kept["roughness"] == 0.4


def test_parameters_move_to_their_simplest_value_where_the_rest_pays_as_well():
    from pbrfit.layers import SIMPLEST, prune_layers

    assert SIMPLEST["metallic"] == (0.0, 1.0) and SIMPLEST["specular_ior_level"] == (0.5,)
    names = ["roughness", "metallic", "specular_ior_level"]
    space = ParameterSpace(default_material(), names)

    def loss(s, u):  # a rough plastic's trade: roughness - 0.6 pays for level - 0.5 (a flat valley)
        v = s.values(u)
        return 1.0 + 50.0 * ((v["roughness"] - 0.6) - 0.25 * (v["specular_ior_level"] - 0.5)) ** 2

    def refit(v, hold=()):  # the roughness found again for the held level; metallic drifts unless held
        assert "specular_ior_level" in hold or "metallic" in hold
        drifted = {} if "metallic" in hold else {"metallic": 0.97}
        return dict(v, roughness=0.6 + 0.25 * (v["specular_ior_level"] - 0.5), **drifted)

    values = dict(default_material(), roughness=0.72, metallic=0.98, specular_ior_level=0.98)
    kept, pruned = prune_layers(space, values, loss, refit=refit)
    assert pruned == ["metallic", "specular_ior_level"]
    assert kept["metallic"] == 1.0 and kept["specular_ior_level"] == 0.5 and kept["roughness"] == pytest.approx(0.6)

    # a metal already at 1 stays there while the level's trial re-fits the rest
    values = dict(default_material(), roughness=0.72, metallic=1.0, specular_ior_level=0.98)
    kept, pruned = prune_layers(space, values, loss, refit=refit)
    assert pruned == ["specular_ior_level"] and kept["metallic"] == 1.0

    def metal_pays(s, u):  # a half-metal the photos do show: 0 and 1 are both clearly worse
        return 1.0 + (s.values(u)["metallic"] - 0.5) ** 2
    values = dict(default_material(), metallic=0.5, specular_ior_level=0.5)
    kept, pruned = prune_layers(space, values, metal_pays, refit=lambda v, hold=(): v)
    assert pruned == [] and kept["metallic"] == 0.5


def test_structures_are_decided_by_the_path_tracer_on_a_part_that_shades_itself(tmp_path):
    """A convex part: the raster twin decides; a part that shades itself (a sphere on a plate:
    light between them, which the raster renderer leaves out): the path tracer's checks, when
    the fit path-traces."""
    import dataclasses

    from pbrfit.scene import Mesh, merge_meshes

    job = write_job(tmp_path, size=40, cameras=2)
    render_references(job, GLOSSY)
    scene = load_job(job).scene
    plate = Mesh(np.array([[-3, -1, -3], [3, -1, -3], [3, -1, 3], [-3, -1, 3]], float),
                 np.array([[0, 2, 1], [0, 3, 2]]))
    lobes = dataclasses.replace(scene, mesh=merge_meshes([scene.mesh, plate]))
    options = FitOptions(parameters=["base_color", "roughness"], iterations=4, backend="auto", path_iterations=2)
    sphere = FitRun(scene, options)
    assert sphere.structure_estimator() == "raster" and sphere.self_occlusion < 0.02
    two = FitRun(lobes, options)
    assert two.structure_estimator() == "path" and two.self_occlusion > 0.05
    space = ParameterSpace(dict(default_material(), **GLOSSY), [])
    assert np.isfinite(two.structure_evidence(space, space.initial_vector()).value)
    raster_only = FitRun(lobes, dataclasses.replace(options, backend="raster"))
    assert raster_only.structure_estimator() == "raster"


def test_each_layer_is_judged_against_the_material_kept_after_the_last_prune():
    from pbrfit.layers import prune_layers

    space = ParameterSpace(default_material(), ["base_color", "coat_weight", "thin_film_thickness"])
    values = dict(default_material(), coat_weight=0.5, thin_film_thickness=1470.0)

    def criteria(s, u):
        # the coat is dropped on the second criterion although the first rises 10%; from there,
        # the film buys nothing on the first (1%) and pays only on the second
        v = s.values(u)
        coat, film = v["coat_weight"] > 0, v["thin_film_thickness"] > 0
        return (1.0 + 0.1 * (not coat) + 0.011 * (not film), 1.0 - 0.005 * coat - 0.05 * film)

    kept, pruned = prune_layers(space, values, criteria)
    assert pruned == ["coat_weight", "thin_film_thickness"]
    assert kept["coat_weight"] == 0.0 and kept["thin_film_thickness"] == 0.0
