"""Texture maps: the lookup and its gradients, seams, the regularizers, filling unseen texels,
both renderers with maps, the [textures] table's bad inputs, the exporters' wiring (re-read by
MaterialX and pxr) and a fit that recovers a printed label."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import MaterialX as mx
import numpy as np
import pytest
import torch
from pxr import Usd, UsdShade

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import synthetic

from pbrfit.errors import InputError
from pbrfit.export.materialx import materialx_document
from pbrfit.export.usd_material import write_usd_material
from pbrfit.images import read_image
from pbrfit.job import load_job
from pbrfit.params import ParameterSpace, normalize_material
from pbrfit.pathtrace import PathRenderer, PathSettings
from pbrfit.render import RasterRenderer, SampleCounts
from pbrfit.textures import (
    check_textures,
    fill_unseen,
    lookup,
    map_values,
    pyramid,
    slopes,
    splat,
    texel_weights,
    total_variation,
)

PBRFIT = [sys.executable, "-m", "pbrfit.cli"]


# --- lookup ---------------------------------------------------------------------------------

def test_lookup_hits_texel_centres_and_repeats():
    texels = torch.arange(4 * 8 * 3, dtype=torch.float64).reshape(4, 8, 3)
    # texel (row 0 = top, column 2): centre at u = 2.5 / 8, v = 1 - 0.5 / 4
    uv = torch.tensor([[2.5 / 8, 1 - 0.5 / 4], [2.5 / 8 + 1.0, 1 - 0.5 / 4 - 2.0], [2.5 / 8 - 3.0, 1 - 0.5 / 4]])
    out = lookup(texels, uv)
    for row in out:
        assert torch.allclose(row, texels[0, 2])
    # half-way between two texel centres: their mean
    mid = lookup(texels, torch.tensor([[3.0 / 8, 1 - 1.5 / 4]]))
    assert torch.allclose(mid[0], 0.5 * (texels[1, 2] + texels[1, 3]))
    # across the right edge the image repeats: between the last and the first column
    edge = lookup(texels, torch.tensor([[1.0, 1 - 0.5 / 4]]))
    assert torch.allclose(edge[0], 0.5 * (texels[0, 7] + texels[0, 0]))


def test_lookup_gradient_matches_finite_differences():
    texels = torch.rand(5, 6, 2, dtype=torch.float64, requires_grad=True)
    uv = torch.rand(17, 2, dtype=torch.float64) * 3 - 1
    assert torch.autograd.gradcheck(lambda t: lookup(t, uv), (texels,))


def test_both_sides_of_a_seam_train_their_own_texels():
    """A UV seam: the two sides look up texels at opposite ends of the map; each side's
    gradient reaches its own texels, not the other's."""
    texels = torch.zeros(8, 8, 1, dtype=torch.float64, requires_grad=True)
    left = torch.tensor([[0.2 / 8, 0.5]], dtype=torch.float64)   # island on the left edge
    right = torch.tensor([[5.5 / 8, 0.5]], dtype=torch.float64)  # the same surface, other island
    (g_left,) = torch.autograd.grad(lookup(texels, left).sum(), texels)
    (g_right,) = torch.autograd.grad(lookup(texels, right).sum(), texels)
    assert g_left[:, 0].sum() > 0 and g_right[:, 5].sum() > 0
    assert g_left[:, 5].abs().sum() == 0 and g_right[:, 0].abs().sum() == 0


def test_splat_is_the_adjoint_of_lookup():
    uv = [torch.rand(40, 2, dtype=torch.float64)]
    values = [torch.rand(40, 3, dtype=torch.float64)]
    grid = torch.rand(4, 4, 3, dtype=torch.float64)
    lhs = (lookup(grid, uv[0]) * values[0]).sum()
    rhs = (splat(uv, values, 4) * grid).sum()
    assert torch.allclose(lhs, rhs)
    w = texel_weights(uv, 4)
    assert abs(float(w.sum()) - 40) < 1e-4  # each point's bilinear weights sum to 1


# --- regularizers and filling ----------------------------------------------------------------

def test_total_variation_is_zero_on_flat_maps_and_grows_with_edges():
    flat = torch.full((16, 16, 1), 0.3, requires_grad=True)
    tv = total_variation(flat)
    assert float(tv.detach()) == pytest.approx(0.0, abs=1e-7)
    (g,) = torch.autograd.grad(tv, flat)
    assert torch.isfinite(g).all()
    step = torch.zeros(16, 16, 1)
    step[:, 8:] = 1.0
    two = step.clone()
    two[:, 4:] = 1.0
    two[:, 12:] = 0.0
    assert float(total_variation(two)) > float(total_variation(step)) > 0.05


def test_a_normal_maps_height_gives_its_slopes_without_curl_at_every_pyramid_level():
    """The fit's normal-map variable is a height field (texel units): its slopes are the
    derivatives (p = -dh/du, q = -dh/dv, +v up the image), curl-free, and a pyramid step
    keeps them (the height scales with the texels)."""
    size, k, amp = 64, 3, 2.0
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = cols + 0.5, size - (rows + 0.5)  # texel units, y along v (up)
    h = amp * np.sin(2 * np.pi * k * x / size) * np.cos(2 * np.pi * k * y / size)
    w = 2 * np.pi * k / size
    p_true = -amp * w * np.cos(w * x) * np.cos(w * y)
    q_true = amp * w * np.sin(w * x) * np.sin(w * y)
    pq = slopes(torch.as_tensor(h)[..., None]).numpy()
    assert np.abs(pq[..., 0] - p_true).max() < 0.02 * np.abs(p_true).max()
    assert np.abs(pq[..., 1] - q_true).max() < 0.02 * np.abs(q_true).max()
    rng = np.random.default_rng(0)
    p, q = np.moveaxis(slopes(torch.as_tensor(rng.normal(size=(32, 32, 1)))).numpy(), -1, 0)
    dp_dv = (np.roll(p, 1, 0) - np.roll(p, -1, 0)) / 2  # central differences, v up
    dq_du = (np.roll(q, -1, 1) - np.roll(q, 1, 1)) / 2
    assert np.abs(dp_dv - dq_du).max() < 1e-12  # no curl: a height field's slopes
    finer = slopes(pyramid(torch.as_tensor(h)[..., None], 2 * size, "normal")).numpy()
    coarse_at_fine = pyramid(torch.as_tensor(pq), 2 * size).numpy()
    assert np.abs(finer - coarse_at_fine)[4:-4, 4:-4].max() < 0.05 * np.abs(p_true).max()
    # the encoded map is the normalized (p, q, 1)
    enc = map_values("normal", torch.as_tensor(h)[..., None], None).numpy() * 2 - 1
    n = np.stack([pq[..., 0], pq[..., 1], np.ones_like(h)], -1)
    assert np.allclose(enc, n / np.linalg.norm(n, axis=-1, keepdims=True), atol=1e-6)


def test_the_maps_regularizers_smooth_pull_to_the_prior_and_split_metal_from_paint():
    from pbrfit.texture_fit import METALLIC_EITHER_OR, NORMAL_PRIOR, NORMAL_SMOOTHNESS, regularizer
    from pbrfit.textures import TextureSettings

    settings = TextureSettings(maps=("roughness", "metallic", "normal"), tv_weight=0.1, prior_weight=0.05)
    w = torch.full((8, 8, 1), 0.5)
    flat = torch.full((8, 8, 1), 0.3)
    assert float(regularizer("roughness", flat, flat, w, settings)) == 0.0
    edged = flat.clone()
    edged[:, 4:] = 0.8
    tv = float(regularizer("roughness", edged, edged, torch.zeros_like(w), settings))
    assert tv > 0 and float(regularizer("roughness", edged, flat, w, settings)) > tv  # the prior adds its pull
    # metallic: 0 and 1 cost nothing beyond TV, 0.5 the most, and only at the full resolution
    for m, cost in ((0.0, 0.0), (1.0, 0.0), (0.5, METALLIC_EITHER_OR * 0.25)):
        t = torch.full((8, 8, 1), m)
        assert abs(float(regularizer("metallic", t, t, w, settings)) - cost) < 1e-6
    half = torch.full((8, 8, 1), 0.5)
    assert float(regularizer("metallic", half, half, w, settings, full_resolution=False)) == 0.0
    # a normal map's slopes: the total variation weighs NORMAL_SMOOTHNESS times more, the prior
    # NORMAL_PRIOR times more
    s = torch.zeros(8, 8, 2)
    s[:, 4:] = 0.5
    no_prior = torch.zeros_like(w)
    ratio = float(regularizer("normal", s, s, no_prior, settings)) / float(
        regularizer("roughness", s, s, no_prior, settings))
    assert abs(ratio - NORMAL_SMOOTHNESS) < 1e-4
    smooth = torch.full((8, 8, 2), 0.5)
    ratio = float(regularizer("normal", smooth, torch.zeros_like(s), w, settings)) / float(
        regularizer("roughness", smooth, torch.zeros_like(s), w, settings))
    assert abs(ratio - NORMAL_PRIOR) < 1e-4


def test_fill_unseen_grows_islands_and_defaults_the_rest():
    values = np.zeros((8, 8, 3), np.float32)
    seen = np.zeros((8, 8), bool)
    values[2:4, 2:4] = [0.2, 0.4, 0.6]
    seen[2:4, 2:4] = True
    filled = fill_unseen(values, seen, [1.0, 1.0, 1.0])
    assert np.allclose(filled, [0.2, 0.4, 0.6], atol=1e-6)
    nothing = fill_unseen(values, np.zeros((8, 8), bool), [0.5, 0.5, 0.5])
    assert np.allclose(nothing, 0.5)


def test_fill_unseen_gives_island_edges_near_and_means_far():
    """Two islands of different values on a map mostly unseen: the rings next to an island
    take its edge (what a bilinear lookup across its border reads), the seen texels keep their
    values, and the texels far from both (the push-pull pyramid's) lie between the two."""
    size = 64
    values = np.zeros((size, size, 1), np.float32)
    seen = np.zeros((size, size), bool)
    values[8:16, 8:16], seen[8:16, 8:16] = 0.2, True
    values[40:56, 40:56], seen[40:56, 40:56] = 0.8, True
    filled = fill_unseen(values, seen, [0.5])[..., 0]
    assert np.allclose(filled[seen], values[seen][..., 0])
    assert np.allclose(filled[6:18, 6:18], 0.2)  # FILL_RINGS = 2 rings around the first island
    assert np.allclose(filled[38:58, 38:58], 0.8)
    far = filled[28, 28]
    assert 0.2 < far < 0.8
    assert filled.min() >= 0.2 - 1e-6 and filled.max() <= 0.8 + 1e-6
    # smooth away from the islands: neighbouring far texels differ little
    assert np.abs(np.diff(filled[24:34, 24:34], axis=0)).max() < 0.1


# --- renderers --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def uv_job(tmp_path_factory) -> Path:
    return synthetic.write_job(tmp_path_factory.mktemp("uvjob"), uvs=True, size=24)


def _material(values):
    space = ParameterSpace(normalize_material(values), [])
    return space.material(space.initial_vector())


def test_a_uniform_map_renders_exactly_as_its_scalar(uv_job):
    scene = load_job(uv_job).scene
    m = _material({"base_color": [0.6, 0.3, 0.2], "roughness": 0.3, "coat_weight": 0.5, "metallic": 0.2})
    mapped = dict(m, base_color=m["base_color"].reshape(1, 1, 3).expand(4, 8, 3).clone(),
                  roughness=m["roughness"].reshape(1, 1, 1).expand(4, 4, 1).clone())
    raster = RasterRenderer(scene, SampleCounts(8, 2, 4, 2))
    assert np.abs(raster.render_image(0, m) - raster.render_image(0, mapped)).max() < 1e-5
    path = PathRenderer(scene, PathSettings(2, 3))
    assert np.abs(path.render_image(0, m) - path.render_image(0, mapped)).max() < 1e-5
    # with subsurface the walks read the maps at their entry points (a wax with a printed label)
    wax = _material({"base_color": [0.6, 0.3, 0.2], "roughness": 0.3, "subsurface_weight": 1.0,
                     "subsurface_scale": 0.1, "specular_ior_level": 0.7})
    wax_mapped = dict(wax, base_color=wax["base_color"].reshape(1, 1, 3).expand(4, 8, 3).clone(),
                      specular_ior_level=wax["specular_ior_level"].reshape(1, 1, 1).expand(4, 4, 1).clone())
    assert np.abs(path.render_image(0, wax) - path.render_image(0, wax_mapped)).max() < 1e-5


def test_the_base_colour_stand_in_renders_a_map_as_the_raster_renderer_does(uv_job):
    """texture_fit's fast path for a base colour map (S + D * b per pixel) gives the raster
    renderer's own values and gradients, on a dielectric with every other lobe (sheen, coat,
    specular tint); never used on a metal, whose Fresnel is not affine in base colour."""
    from pbrfit.texture_fit import _AffineInBaseColor

    scene = load_job(uv_job).scene
    m = _material({"base_color": [0.6, 0.3, 0.2], "roughness": 0.3, "coat_weight": 0.4,
                   "sheen_weight": 0.3, "specular_tint": [0.9, 0.8, 0.7]})
    raster = RasterRenderer(scene, SampleCounts(8, 2, 4, 2), max_loss_pixels=1 << 40)
    raster.prepare(0)
    stand_in = _AffineInBaseColor([raster], [0], m)
    assert _AffineInBaseColor.applies(("base_color",), m)
    assert not _AffineInBaseColor.applies(("base_color", "roughness"), m)
    assert not _AffineInBaseColor.applies(("base_color",), dict(m, subsurface_weight=torch.tensor([0.5])))
    assert not _AffineInBaseColor.applies(("base_color",), dict(m, metallic=torch.tensor([0.1])))
    texels = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    q = raster.train_subsets[0]
    want = raster.shade(0, dict(m, base_color=texels), q)
    got = stand_in.shade(0, dict(m, base_color=texels), q)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    (g_want,) = torch.autograd.grad(want.sum(), texels)
    (g_got,) = torch.autograd.grad(got.sum(), texels)
    assert torch.allclose(g_got, g_want, rtol=1e-4, atol=1e-6)
    # its terms are the train pixels': any other pixel is refused, not rendered black
    few = RasterRenderer(scene, SampleCounts(8, 2, 4, 2), max_loss_pixels=20)
    few.prepare(0)
    other = np.setdiff1d(np.arange(len(few.prepare(0).geometry.pixels)), few.train_subsets[0])[:3]
    with pytest.raises(ValueError, match="no terms"):
        _AffineInBaseColor([few], [0], m).shade(0, m, other)


def test_the_base_colour_stand_in_is_exact_through_the_pixel_filter_beside_a_held_normal_map(uv_job):
    """Through the pixel filter (a normal map's fit) the stand-in's terms are the taps'
    centres, each looked up at its own texel: a colour map beside a bumpy normal map renders as
    the filtered raster renderer renders it (the palette snap's look-ups), and with the filter
    off it gives those centres (the colours' least squares)."""
    from pbrfit.texture_fit import _AffineInBaseColor, _centres_only

    scene = load_job(uv_job).scene
    bumps = torch.rand(4, 4, 1, generator=torch.Generator().manual_seed(3)) * 0.6 - 0.3
    m = dict(_material({"base_color": [0.6, 0.3, 0.2], "roughness": 0.3, "sheen_weight": 0.3}),
             normal=map_values("normal", bumps, None))
    assert _AffineInBaseColor.exact_for(m) and not _AffineInBaseColor.applies(("base_color", "normal"), m)
    assert not _AffineInBaseColor.exact_for(dict(m, metallic=torch.tensor([0.1])))
    raster = RasterRenderer(scene, SampleCounts(8, 2, 4, 2), max_loss_pixels=1 << 40, filter_pixels=True)
    raster.prepare(0)
    stand_in = _AffineInBaseColor([raster], [0], m)
    texels = dict(m, base_color=torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(1)))
    q = raster.train_subsets[0]
    want = raster.shade(0, texels, q)
    assert torch.allclose(stand_in.shade(0, texels, q), want, rtol=1e-4, atol=1e-6)
    need = raster.filter_taps(0, q)[0]
    assert len(need) > len(q)  # the taps reach beyond the loss pixels
    with _centres_only([stand_in], True):
        centres = stand_in.shade(0, texels, need)
    assert torch.allclose(centres, raster.shade_centres(0, texels, need), rtol=1e-4, atol=1e-6)
    assert (raster.shade_centres(0, texels, q) - want).abs().max() > 1e-3  # the filter does average


def test_one_least_squares_pass_of_the_base_colour_is_enough_for_a_dielectric_with_a_normal_map(uv_job):
    """The colours' least squares is exact where the render is affine in the base colour (a
    dielectric, whatever its normal map): a second pass, which a metal needs, gives the same."""
    from pbrfit.objective import Objective
    from pbrfit.texture_fit import _AffineInBaseColor, _base_color_least_squares, _Layout

    scene = load_job(uv_job).scene
    raster = RasterRenderer(scene, SampleCounts(8, 2, 4, 2), max_loss_pixels=1 << 40, filter_pixels=True)
    objective = Objective(raster, [0, 1], {"de2000": 1.0})
    space = ParameterSpace(normalize_material({"base_color": [0.5, 0.5, 0.5], "roughness": 0.4}), [])
    layout = _Layout(space, ("base_color", "normal"), 4, {"base_color": (0.0, 1.0), "normal": None})
    bumps = torch.rand(4, 4, 1, generator=torch.Generator().manual_seed(3)) * 0.6 - 0.3
    u = layout.pack(space.initial_vector(), {"base_color": torch.zeros(4, 4, 3), "normal": bumps})
    assert _AffineInBaseColor.exact_for(layout.material(u))
    once = _base_color_least_squares(objective, layout, u, (0.0, 1.0))
    twice = _base_color_least_squares(objective, layout, once, (0.0, 1.0))
    first = layout.material(once)["base_color"]
    assert float((first - layout.material(u)["base_color"]).abs().max()) > 0.05  # it did move
    assert torch.allclose(layout.material(twice)["base_color"], first, atol=2e-3)
    # a metal's Fresnel is not affine in its base colour: there a second pass still moves it
    metal = ParameterSpace(normalize_material({"base_color": [0.5, 0.5, 0.5], "roughness": 0.4, "metallic": 0.5}), [])
    metal_layout = _Layout(metal, ("base_color", "normal"), 4, {"base_color": (0.0, 1.0), "normal": None})
    u = metal_layout.pack(metal.initial_vector(), {"base_color": torch.zeros(4, 4, 3), "normal": bumps})
    assert not _AffineInBaseColor.exact_for(metal_layout.material(u))
    once = _base_color_least_squares(objective, metal_layout, u, (0.0, 1.0))
    twice = _base_color_least_squares(objective, metal_layout, once, (0.0, 1.0))
    assert not torch.allclose(metal_layout.material(twice)["base_color"], metal_layout.material(once)["base_color"],
                              atol=2e-3)


def test_the_roughness_table_renders_maps_as_the_raster_renderer_does(uv_job):
    """texture_fit's stand-in for roughness and metallic maps: exact in metallic (the raster
    estimator is affine in it), at a roughness node exact in both; between the nodes close,
    with the gradients of both maps; a metallic map alone needs no roughness table."""
    from pbrfit.texture_fit import ROUGHNESS_NODES, _TabulatedInRoughness

    scene = load_job(uv_job).scene
    m = _material({"base_color": [0.9, 0.6, 0.3], "roughness": 0.3, "coat_weight": 0.3,
                   "specular_tint": [0.9, 0.8, 0.7]})
    raster = RasterRenderer(scene, SampleCounts(8, 2, 4, 2), max_loss_pixels=1 << 40)
    raster.prepare(0)
    q = raster.train_subsets[0]
    assert _TabulatedInRoughness.applies(("roughness", "metallic"), m)
    assert _TabulatedInRoughness.applies(("metallic",), m)
    assert not _TabulatedInRoughness.applies(("roughness", "base_color"), m)
    assert not _TabulatedInRoughness.applies(("roughness",), dict(m, subsurface_weight=torch.tensor([0.5])))
    g = torch.Generator().manual_seed(2)
    node = 1.0 / (ROUGHNESS_NODES - 1)
    metal = torch.rand(8, 8, 1, generator=g, requires_grad=True)
    on_node = torch.full((8, 8, 1), 5 * node)  # every pixel at a node
    stand_in = _TabulatedInRoughness([raster], [0], dict(m, roughness=on_node, metallic=metal), (0.0, 1.0))
    want = raster.shade(0, dict(m, roughness=on_node, metallic=metal), q)
    got = stand_in.shade(0, dict(m, roughness=on_node, metallic=metal), q)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    (g_want,) = torch.autograd.grad(want.sum(), metal)
    (g_got,) = torch.autograd.grad(got.sum(), metal)
    assert torch.allclose(g_got, g_want, rtol=1e-3, atol=1e-4)
    # between the nodes (the first and last segments too, and a metal at low roughness, where
    # radiance changes fastest): close to the renderer, whose own noise moves with the roughness,
    # and the slope in roughness that of the renderer over a node's width
    white = raster.white(0)
    for metallic in (metal.detach(), torch.ones(8, 8, 1)):
        for r in (0.03, 0.1, 0.4333, 0.97):  # 0.45, 1.5, 6.5 and 14.55 nodes
            rough = torch.full((8, 8, 1), r, requires_grad=True)
            want = raster.shade(0, dict(m, roughness=rough.detach(), metallic=metallic), q)
            got = stand_in.shade(0, dict(m, roughness=rough, metallic=metallic), q)
            (g_r,) = torch.autograd.grad(got.sum(), rough)
            lo, hi = (raster.shade(0, dict(m, roughness=torch.full((8, 8, 1), x), metallic=metallic), q).sum()
                      for x in (max(r - node / 2, 0.0), min(r + node / 2, 1.0)))
            slope = float(hi - lo) / (min(r + node / 2, 1.0) - max(r - node / 2, 0.0))
            assert abs(float((got - want).detach().mean())) / white < 0.002, r
            assert float((got - want).detach().abs().mean()) / white < 0.02, r
            if r >= 0.1:  # below the first node the radiance is nearly flat; the cubic may dip there
                assert abs(float(g_r.sum()) - slope) <= 0.25 * abs(slope), (r, float(g_r.sum()), slope)
    # progress after each column, and a cancel stops the build
    ticks, checks = [], []

    def cancel_at_the_fifth():
        checks.append(1)
        if len(checks) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _TabulatedInRoughness([raster], [0], dict(m, roughness=on_node, metallic=metal), (0.0, 1.0),
                              check=cancel_at_the_fifth, tick=lambda: ticks.append(1))
    assert len(ticks) == 4
    # a metallic map on a held roughness: two renders, exact everywhere
    only = _TabulatedInRoughness([raster], [0], dict(m, metallic=metal), (0.0, 1.0))
    assert torch.allclose(only.shade(0, dict(m, metallic=metal), q),
                          raster.shade(0, dict(m, metallic=metal), q), rtol=1e-4, atol=1e-5)


def test_roughness_and_metallic_maps_fit_through_the_table_and_without_it(tmp_path, monkeypatch):
    """A whole fit of roughness and metallic maps (paint patches on metal, raster references)
    through the roughness table finds the paint and the metal; with the table over its memory
    limit the steps render instead, and find the same."""
    from pbrfit import texture_fit
    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.textures import TextureSettings

    res = 16
    v, u = np.mgrid[0:res, 0:res]
    band = (v >= res // 4) & (v < 3 * res // 4) & (u < res // 2)
    truth = {"metallic": np.where(band, 0.0, 1.0)[..., None].astype(np.float32),
             "roughness": np.where(band, 0.57, 0.23)[..., None].astype(np.float32)}  # between nodes
    job = synthetic.write_job(tmp_path / "worn", uvs=True, size=48, cameras=4)
    synthetic.render_references(job, {"base_color": [0.45, 0.45, 0.46], "metallic": 1.0, "roughness": 0.23},
                                maps=truth)
    scene = load_job(job).scene
    built = []
    real = texture_fit._TabulatedInRoughness.__init__

    def counted(self, *args, **kwargs):
        built.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(texture_fit._TabulatedInRoughness, "__init__", counted)
    fitted = {}
    limits = (0, texture_fit.TABLE_MEMORY)  # the steps rendering, then through the table
    for limit in limits:
        monkeypatch.setattr(texture_fit, "TABLE_MEMORY", limit)
        before = len(built)
        opts = FitOptions(parameters=["base_color", "metallic", "roughness"], iterations=10, backend="raster",
                          textures=TextureSettings(maps=("roughness", "metallic"), resolution=res, iterations=16))
        result = fit_material(scene, opts)
        assert (len(built) > before) is (limit > 0)
        maps = {m: result.textures[m].texels[..., 0] for m in ("roughness", "metallic")}
        seen = result.textures["metallic"].weight >= 4
        assert (seen & band).sum() > 8 and (seen & ~band).sum() > 8
        assert np.median(maps["metallic"][seen & band]) < 0.2 and np.median(maps["metallic"][seen & ~band]) > 0.8
        assert abs(np.median(maps["roughness"][seen & band]) - 0.57) < 0.1
        assert abs(np.median(maps["roughness"][seen & ~band]) - 0.23) < 0.06
        fitted[limit] = {(m, part): float(np.median(maps[m][seen & b])) for m in maps
                         for part, b in (("paint", band), ("metal", ~band))}
    for key, value in fitted[limits[0]].items():  # the palette snap gives both the same materials
        assert abs(fitted[limits[1]][key] - value) < 0.03, (key, fitted)


def test_both_renderers_differentiate_through_a_map(uv_job):
    scene = load_job(uv_job).scene
    m = _material({"base_color": [0.5, 0.5, 0.5], "roughness": 0.4})
    for renderer in (RasterRenderer(scene, SampleCounts(8, 2, 4, 2)), PathRenderer(scene, PathSettings(2, 2))):
        texels = torch.full((8, 8, 3), 0.5, requires_grad=True)
        renderer.prepare(0)
        out = renderer.shade(0, dict(m, base_color=texels), renderer.train_subsets[0])
        (g,) = torch.autograd.grad(out.sum(), texels)
        assert float(g.sum()) > 0
        assert int((g.abs().sum(-1) > 0).sum()) > 4  # many texels get a gradient, not one


def test_a_flat_normal_map_changes_nothing_and_a_bumpy_one_has_finite_gradients(uv_job):
    scene = load_job(uv_job).scene
    m = _material({"base_color": [0.6, 0.3, 0.2], "roughness": 0.3, "coat_weight": 0.3})
    flat = torch.tensor([0.5, 0.5, 1.0]).expand(4, 4, 3).clone()
    for renderer in (RasterRenderer(scene, SampleCounts(8, 2, 4, 2)), PathRenderer(scene, PathSettings(2, 3))):
        assert np.abs(renderer.render_image(0, m) - renderer.render_image(0, dict(m, normal=flat))).max() < 1e-5
        tilted = torch.tensor([0.7, 0.5, 0.9]).expand(4, 4, 3)
        assert np.abs(renderer.render_image(0, m) - renderer.render_image(0, dict(m, normal=tilted))).mean() > 1e-3
        # the fit's variable: a height per texel, flat at 0, where normalizing has a kink
        height = torch.zeros(4, 4, 1, requires_grad=True)
        renderer.prepare(0)
        out = renderer.shade(0, dict(m, normal=map_values("normal", height, None)), renderer.train_subsets[0])
        (g,) = torch.autograd.grad(out.sum(), height)
        assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


def test_held_directions_render_the_same_and_their_gradient_agrees_on_average(uv_job):
    """The texture steps' gradient with the BSDF-sampled directions held: the same render, and
    over many seeds the same mean gradient in a normal map's heights as the gradient through
    the sampled directions (both are unbiased; only their noise differs)."""
    scene = load_job(uv_job).scene
    m = _material({"base_color": [0.6, 0.3, 0.2], "roughness": 0.25, "coat_weight": 0.3})
    gradients = {False: [], True: []}
    for seed in range(48):
        renderer = RasterRenderer(scene, SampleCounts(2, 1, 4, 2), seed=seed)
        renderer.prepare(0)
        rows = renderer.train_subsets[0]
        renders = {}
        for held in (False, True):
            renderer.held_directions = held
            height = torch.linspace(-0.3, 0.3, 16).reshape(4, 4, 1).clone().requires_grad_(True)
            out = renderer.shade(0, dict(m, normal=map_values("normal", height, None)), rows)
            (g,) = torch.autograd.grad(out.sum(), height)
            renders[held] = out.detach()
            gradients[held].append(g.flatten())
        assert torch.allclose(renders[False], renders[True])
    full, held = (torch.stack(gradients[k]) for k in (False, True))
    spread = ((full.var(0) + held.var(0)) / len(full)).sqrt()
    difference = (full.mean(0) - held.mean(0)).abs()
    strong = full.mean(0).abs() > 3 * spread  # texels whose gradient the seeds determine
    assert int(strong.sum()) >= 4
    assert bool((difference[strong] < 4 * spread[strong]).all()), (difference / spread)[strong]
    # a held gradient is a real one: not zero where the full one is strong
    assert bool((torch.sign(held.mean(0)[strong]) == torch.sign(full.mean(0)[strong])).all())
    assert float(held.var(0).sum()) < float(full.var(0).sum())  # and less noisy here (a 0.25-rough lobe)


def test_a_fit_recovers_a_normal_map(tmp_path):
    """Raster references of a sphere with a bumpy tangent-space normal map (a height field's):
    the fitted normals are much closer to the truth than a flat map."""
    res = 32
    n = synthetic.bump_normals(res)
    job = synthetic.write_job(tmp_path / "bumps", uvs=True, size=48, cameras=4,
                              extra=f'[textures]\nmaps = ["normal"]\nresolution = {res}\niterations = 48')
    synthetic.render_references(job, {"base_color": [0.6, 0.5, 0.4], "roughness": 0.3},
                                maps={"normal": ((n + 1) / 2).astype(np.float32)})
    out = tmp_path / "out"
    r = _run(["fit", str(job), "--out", str(out), "--fit", "base_color,roughness", "--iterations", "15",
              "--backend", "raster", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "material.json").read_text())
    assert "normal" not in doc["parameters"] and doc["textures"]["normal"]["colorspace"] == "raw"
    fitted, _ = read_image(out / "textures" / "normal.exr")
    seen = read_image(out / "textures" / "normal_observed.png")[0][..., 0] > 0.5
    nf = fitted * 2 - 1
    nf /= np.linalg.norm(nf, axis=-1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip((nf * n).sum(-1), -1, 1)))[seen].mean()
    flat = np.degrees(np.arccos(np.clip(n[..., 2], -1, 1)))[seen].mean()
    assert angle < 0.6 * flat, (angle, flat)
    assert "normalmap" in (out / "material.mtlx").read_text()


@pytest.mark.parametrize("bumpy", [False, True], ids=["smooth part", "bumpy part"])
def test_a_normal_map_is_kept_only_where_it_beats_a_flat_one_on_the_validation_views(tmp_path, bumpy):
    """A normal map asked for on a smooth part is fitted to the photos' noise: the validation
    views (another lighting) do not prefer it to a flat map, so it is written flat and a note
    says why; on a bumpy part it is kept."""
    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.texture_fit import LEVEL_TOLERANCE
    from pbrfit.textures import FLAT_NORMAL, TextureSettings

    res = 16
    job = synthetic.write_job(tmp_path / "part", uvs=True, size=40, cameras=4, validate_env="val.exr")
    truth_maps = {"normal": ((synthetic.bump_normals(res) + 1) / 2).astype(np.float32)} if bumpy else None
    synthetic.render_references(job, {"base_color": [0.6, 0.5, 0.4], "roughness": 0.3}, maps=truth_maps)
    options = FitOptions(parameters=["base_color", "roughness"], iterations=15, backend="raster",
                         textures=TextureSettings(maps=("normal",), resolution=res, iterations=24))
    result = fit_material(load_job(job).scene, options)
    gate = next(level["flat_normals"] for level in result.texture_log if "flat_normals" in level)
    flat = bool(np.abs(result.textures["normal"].texels - np.asarray(FLAT_NORMAL)).max() < 1e-4)
    noted = [n["message"] for n in result.notes if n["about"] == "normal"]
    assert gate["kept"] is (not bumpy) and flat is (not bumpy), gate
    assert (gate["validate_de2000"] <= gate["before_de2000"] * (1 + LEVEL_TOLERANCE)) is (not bumpy)
    assert bool(noted) is (not bumpy) and all("written flat" in m for m in noted)


def test_a_level_is_checked_on_the_validation_views_as_it_goes_and_stopped_when_worse(tmp_path, monkeypatch):
    """A level whose steps render every pixel measures the validation views every
    LEVEL_CHECK_EVERY steps: where the checks do not fall behind the best level it runs all its
    steps; a check worse than the best level (here every check, the tolerance made negative)
    ends the climb there and the best level's maps are written."""
    from pbrfit import texture_fit
    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.textures import TextureSettings

    res = 16  # levels 8 and 16, 12 steps each, both rendering every pixel
    job = synthetic.write_job(tmp_path / "part", uvs=True, size=40, cameras=4, validate_env="val.exr")
    synthetic.render_references(job, {"base_color": [0.6, 0.5, 0.4], "roughness": 0.3},
                                maps={"normal": ((synthetic.bump_normals(res) + 1) / 2).astype(np.float32)})
    options = FitOptions(parameters=["base_color", "roughness"], iterations=10, backend="raster",
                         textures=TextureSettings(maps=("normal",), resolution=res, iterations=24))
    scene = load_job(job).scene
    tolerance_used = texture_fit.LEVEL_TOLERANCE
    logs = []
    for every, tolerance in ((1000, tolerance_used), (4, tolerance_used), (4, -0.5)):
        monkeypatch.setattr(texture_fit, "LEVEL_CHECK_EVERY", every)
        monkeypatch.setattr(texture_fit, "LEVEL_TOLERANCE", tolerance)
        logs.append(fit_material(scene, options).texture_log)
    unchecked, climbed, stopped = logs
    assert "checks" not in unchecked[1]
    # the checks only measure: the level's steps and its end are as without them
    assert climbed[1]["validate_de2000"] == unchecked[1]["validate_de2000"]
    assert [level["resolution"] for level in climbed] == [8, 16]
    assert "checks" not in climbed[0]  # nothing to beat yet
    assert [c["steps"] for c in climbed[1]["checks"]] == [4, 8] and climbed[1]["steps"] == 12
    assert all(c["validate_de2000"] <= climbed[0]["validate_de2000"] * (1 + tolerance_used)
               for c in climbed[1]["checks"])
    same = ("resolution", "steps", "validate_de2000")
    assert [stopped[0][k] for k in same] == [climbed[0][k] for k in same]  # the same first level
    assert stopped[1]["steps"] == 4 and [c["steps"] for c in stopped[1]["checks"]] == [4]
    assert stopped[1]["validate_de2000"] == stopped[1]["checks"][0]["validate_de2000"]
    # the best level's maps went on (the flat-map gate is recorded on the level it judged)
    assert "flat_normals" in stopped[0] and "flat_normals" not in stopped[1]


def test_a_map_fitted_coarser_than_asked_is_upsampled_as_it_was_fitted():
    """_upsampled: texels bilinear (a normal map's normals renormalized, encoded again), each
    texel observed where its coarse texel was, the weights shared out (their sum kept)."""
    from pbrfit.texture_fit import MapResult, _upsampled

    rng = np.random.default_rng(3)
    colour = rng.uniform(0.1, 0.9, (4, 4, 3)).astype(np.float32)
    n = rng.normal(0, 0.3, (4, 4, 3)) + [0, 0, 1]
    n = ((n / np.linalg.norm(n, axis=-1, keepdims=True) + 1) / 2).astype(np.float32)
    observed = rng.uniform(size=(4, 4)) > 0.3
    weight = rng.uniform(0, 3, (4, 4)).astype(np.float32) * observed
    for name, texels in (("base_color", colour), ("normal", n)):
        up = _upsampled(MapResult(name, texels, observed, weight), 16)
        assert up.texels.shape == (16, 16, 3) and up.name == name
        assert np.array_equal(up.observed, np.kron(observed, np.ones((4, 4), bool)))
        assert up.weight.sum() == pytest.approx(weight.sum(), rel=1e-5)
        expected = torch.nn.functional.interpolate(torch.as_tensor(texels * 2 - 1 if name == "normal" else texels)
                                                   .permute(2, 0, 1)[None].double(), size=(16, 16), mode="bilinear",
                                                   align_corners=False)[0].permute(1, 2, 0).numpy()
        if name == "normal":
            decoded = up.texels * 2 - 1
            assert np.allclose(np.linalg.norm(decoded, axis=-1), 1, atol=1e-5)
            expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
            assert np.allclose(decoded, expected, atol=1e-5)
        else:
            assert np.allclose(up.texels, expected, atol=1e-6)
        assert _upsampled(up, 16) is up  # already at the resolution asked for


def test_the_maps_are_fitted_at_the_finest_resolution_the_photos_resolve(tmp_path, monkeypatch):
    """Texels the train pixels see less than MIN_LEVEL_PIXELS each (median) are not fitted: the
    pyramid (1/8 .. 1) climbs to the finest resolution whose texels they resolve, the maps are
    written at the resolution asked for, the resolutions left out are logged and a note says
    so; with the rule off the pyramid climbs to the resolution asked for."""
    from pbrfit import texture_fit
    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.textures import TextureSettings

    res = 64
    job = synthetic.write_job(tmp_path / "part", uvs=True, size=40, cameras=2,
                              extra=f'[textures]\nmaps = ["base_color"]\nresolution = {res}\niterations = 8')
    synthetic.render_references(job, {"base_color": [0.6, 0.5, 0.4], "roughness": 0.3})
    scene = load_job(job).scene
    renderer = RasterRenderer(scene, max_loss_pixels=1 << 40)  # every loss pixel, as the map fit
    uvs = [renderer.prepare(vi).geometry.uv[renderer.train_subsets[vi]] for vi in range(len(scene.views))]
    seen_by = {size: texture_fit._pixels_per_texel(uvs, size) for size in (8, 16, 32, 64)}
    top = max(size for size in seen_by if seen_by[size] >= texture_fit.MIN_LEVEL_PIXELS)
    assert top < res and all(seen_by[s] < texture_fit.MIN_LEVEL_PIXELS for s in seen_by if s > top), seen_by
    out = tmp_path / "out"
    r = _run(["fit", str(job), "--out", str(out), "--fit", "base_color,roughness", "--iterations", "5",
              "--backend", "raster"], tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "material.json").read_text())
    log = doc["texture_levels"]
    left_out = [size for size in (8, 16, 32, 64) if size > top]
    assert [level["resolution"] for level in log if not level.get("skipped")] == TextureSettings(
        maps=("base_color",), resolution=top).levels()
    assert [(level["resolution"], level["steps"]) for level in log if level.get("skipped") == "unresolved"] == [
        (size, 0) for size in left_out]
    assert [level["pixels_per_texel"] for level in log if level.get("skipped")] == pytest.approx(
        [seen_by[size] for size in left_out], abs=1e-3)
    assert doc["textures"]["base_color"]["resolution"] == res
    assert read_image(out / doc["textures"]["base_color"]["file"])[0].shape[:2] == (res, res)
    noted = [n["message"] for n in doc["notes"] if n["about"] == "textures"]
    assert len(noted) == 1 and f"fitted at {top}x{top}" in noted[0] and f"written at {res}x{res}" in noted[0]
    assert f"maps: base_color {res}x{res}" in r.stdout and f"note: textures: maps fitted at {top}x{top}" in r.stdout

    settings = TextureSettings(maps=("base_color",), resolution=res, iterations=8)
    options = FitOptions(parameters=["base_color", "roughness"], iterations=5, backend="raster", textures=settings)
    monkeypatch.setattr(texture_fit, "MIN_LEVEL_PIXELS", 0.0)
    every = fit_material(scene, options)
    assert [level["resolution"] for level in every.texture_log] == settings.levels()
    assert not [n for n in every.notes if n["about"] == "textures"]


@pytest.mark.parametrize("scalars_stepped", [False, True])
def test_each_variables_adam_step_is_its_own_rate_times_the_shared_one(scalars_stepped):
    """Under one gradient for every variable, each Adam step moves each variable by its rate
    times the level's step size (Adam's first steps are unit steps): the normal map's by
    NORMAL_RATE, the base colour's by 1, the scalars' by SCALAR_RATE where they are stepped
    (else not at all), the step ramped up over the first ``warmup`` steps."""
    from types import SimpleNamespace

    from pbrfit import texture_fit
    from pbrfit.texture_fit import _adam_steps, _Layout, _step_rates
    from pbrfit.textures import TextureSettings, normalized

    size, lr, warmup = 4, 0.05, 4
    space = ParameterSpace(normalize_material({"base_color": [0.5, 0.5, 0.5], "roughness": 0.4}), ["roughness"])
    maps = ("base_color", "normal")
    layout = _Layout(space, maps, size, {"base_color": (0.0, 1.0), "normal": None})
    settings = TextureSettings(maps=maps, resolution=size, tv_weight=0.0, prior_weight=0.0, learning_rate=lr)
    u = torch.zeros(layout.dim)
    k = 0 if scalars_stepped else space.dim
    u_s, u_g = u[:k].clone(), u[k:].clone().requires_grad_(True)

    class EveryVariableAlike:
        def loss_and_grad(self, material, u, stride, phase):
            return 1.0, 1.0, torch.ones_like(u)

    run = SimpleNamespace(check_cancel=lambda: None, out_of_time=lambda: False, record=lambda *a: None)
    centre = {n: normalized(n, layout.grid(u, n)) for n in maps}
    opt = torch.optim.Adam([u_g], lr=lr)
    steps = 40
    assert _adam_steps(run, settings, layout, steps, opt, u_s, u_g, EveryVariableAlike(), centre,
                       torch.zeros(size, size, 1), size, 1, last=2, rates=_step_rates(layout, k, u_g),
                       warmup=warmup) == 2
    # two steps under the same gradient: Adam's unit steps, the first a quarter, the second
    # half the step size (the ramp), on the cosine decay's first two steps
    decay = [0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * i / steps)) for i in range(2)]
    unit = -lr * (decay[0] * 1 / warmup + decay[1] * 2 / warmup)
    moved = torch.cat([u_s, u_g.detach()])
    colour, normal = moved[layout.slices["base_color"]], moved[layout.slices["normal"]]
    assert torch.allclose(colour, torch.full_like(colour, unit), rtol=1e-3)
    assert torch.allclose(normal, torch.full_like(normal, unit * texture_fit.NORMAL_RATE), rtol=1e-3)
    scalar_rate = texture_fit.SCALAR_RATE if scalars_stepped else 0.0
    assert torch.allclose(moved[:space.dim], torch.full((space.dim,), unit * scalar_rate), rtol=1e-3, atol=1e-9)
    only_colour = _Layout(space, ("base_color",), size, {"base_color": (0.0, 1.0)})
    assert _step_rates(only_colour, space.dim, u_g) is None


def test_a_coarse_levels_stride_keeps_about_step_pixels_per_texel():
    """The levels coarser than half the final resolution take every stride-th pixel, the
    stride the median train pixels per seen texel over STEP_PIXELS (at least COARSE_STRIDE);
    from half the resolution on, every pixel."""
    from pbrfit import texture_fit
    from pbrfit.texture_fit import _stride

    side = 256  # a view's pixels evenly over the UV square: 256² pixels
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    uvs = [torch.stack(torch.meshgrid(centres, centres, indexing="xy"), -1).reshape(-1, 2)]
    for size in (8, 16, 32, 64):
        per_texel = (side / size) ** 2  # 1024, 256, 64, 16 pixels a texel
        want = max(texture_fit.COARSE_STRIDE, int(per_texel // texture_fit.STEP_PIXELS))
        assert _stride(uvs, size, 512) == want
    assert _stride(uvs, 8, 512) > texture_fit.COARSE_STRIDE  # the rule, not the floor, decided
    assert _stride(uvs, 256, 512) == 1
    assert _stride(uvs, 512, 512) == 1
    # a second view seeing the same texels: twice the pixels a texel, twice the stride
    assert _stride(uvs * 2, 16, 512) == int(2 * 256 // texture_fit.STEP_PIXELS)


def test_with_colour_and_normal_maps_the_fine_levels_hold_the_inks_while_the_normals_move(tmp_path, monkeypatch):
    """A base colour map fitted beside a normal map: each level at half the resolution or finer
    starts from the colour snapped to its inks and, for COLOUR_FIRST_SHARE of its steps, holds
    it (here all of them) while the normal map moves; the coarser levels and a fit without a
    normal map do neither."""
    from pbrfit import texture_fit
    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.textures import TextureSettings

    res = 32  # levels 8, 16 and 32
    colour = np.zeros((res, res, 3), np.float32)
    colour[:] = [0.7, 0.1, 0.1]
    colour[:, res // 2:] = [0.1, 0.3, 0.8]
    job = synthetic.write_job(tmp_path / "part", uvs=True, size=32, cameras=2)
    bumps = ((synthetic.bump_normals(res) + 1) / 2).astype(np.float32)
    synthetic.render_references(job, {"base_color": [0.5, 0.5, 0.5], "roughness": 0.3},
                                maps={"base_color": colour, "normal": bumps})
    monkeypatch.setattr(texture_fit, "COLOUR_FIRST_SHARE", 1.0)
    snapped, steps = [], []
    snap_colours, adam_steps = texture_fit._snap_colours, texture_fit._adam_steps

    def spy_snap(objective, layout, u, uvs, out_of_time=None):
        snapped.append(layout.size)
        return snap_colours(objective, layout, u, uvs, out_of_time)

    def spy_steps(run, settings, layout, n, opt, u_s, u_g, *args, **kwargs):
        k = len(u_s)
        before = u_g.detach().clone()
        done = adam_steps(run, settings, layout, n, opt, u_s, u_g, *args, **kwargs)
        moved = (u_g.detach() - before).abs()
        most = {m: float(moved[v.start - k:v.stop - k].max()) for m, v in layout.slices.items()}
        steps.append((layout.size, kwargs.get("held") is not None, most["base_color"], most.get("normal", 0.0)))
        return done

    monkeypatch.setattr(texture_fit, "_snap_colours", spy_snap)
    monkeypatch.setattr(texture_fit, "_adam_steps", spy_steps)
    scene = load_job(job).scene
    for maps in (("base_color", "normal"), ("base_color",)):
        snapped.clear(), steps.clear()
        fit_material(scene, FitOptions(parameters=["roughness"], iterations=3, backend="raster",
                                       textures=TextureSettings(maps=maps, resolution=res, iterations=9)))
        levels = sorted({size for size, *_ in steps})
        if "normal" in maps:
            assert levels == [8, 16, 32] and snapped[:2] == [16, 32], (levels, snapped)
            assert all(held is (size >= 16) for size, held, *_ in steps)
            assert all(c == 0.0 and n > 0 for size, held, c, n in steps if held), steps
            assert any(c > 0 for size, held, c, n in steps if not held), steps
        else:
            assert snapped == [levels[-1]] and not any(held for _, held, *_ in steps), (snapped, steps)


def test_normal_maps_are_wired_through_decoders(tmp_path):
    textures = {"normal": {"file": "textures/normal.exr", "colorspace": "raw", "channels": 3, "uv": "st"}}
    doc = materialx_document({"base_color": [0.5, 0.2, 0.1]}, textures=textures)
    assert doc.validate()[0]
    for shader_name, key in (("pbrfit_material_openpbr_shader", "geometry_normal"),
                             ("pbrfit_material_standard_surface_shader", "normal")):
        decode = doc.getNode(shader_name).getInput(key).getConnectedNode()
        assert decode.getCategory() == "normalmap"
        assert decode.getInput("in").getConnectedNode().getInputValue("file") == "textures/normal.exr"
    path = tmp_path / "m.usda"
    write_usd_material({"base_color": [0.5, 0.2, 0.1]}, path, textures=textures)
    stage = Usd.Stage.Open(str(path))
    preview = UsdShade.Shader(stage.GetPrimAtPath("/pbrfit/pbrfit_material/PreviewSurface"))
    tex = UsdShade.Shader(preview.GetInput("normal").GetConnectedSources()[0][0].source.GetPrim())
    assert tuple(tex.GetInput("scale").Get()) == (2, 2, 2, 1) and tuple(tex.GetInput("bias").Get()) == (-1, -1, -1, 0)
    omni = UsdShade.Shader(stage.GetPrimAtPath("/pbrfit/pbrfit_material/OmniPBR"))
    assert omni.GetInput("normalmap_texture").Get().path == "textures/normal.exr"
    openpbr = UsdShade.Shader(stage.GetPrimAtPath("/pbrfit/pbrfit_material/OpenPBR"))
    decode = UsdShade.Shader(openpbr.GetInput("geometry_normal").GetConnectedSources()[0][0].source.GetPrim())
    assert decode.GetIdAttr().Get() == "ND_normalmap_float"


# --- bad inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("table, says", [
    ({"maps": ["albedo"]}, "'albedo' is not a parameter"),
    ({"maps": ["ior"]}, "'ior' cannot be fitted as a map"),
    ({"maps": []}, "give a list of parameter names"),
    ({"maps": ["base_color"], "resolution": 100}, "power of two"),
    ({"maps": ["base_color"], "resolution": 16384}, "power of two from 8 to 8192"),
    ({"maps": ["base_color"], "resolution": True}, "power of two"),
    ({"maps": ["base_color"], "colour": 1}, "unknown key(s) colour"),
    ({"maps": ["base_color"], "uv": "my uv"}, "texCoord2f primvar"),
    ({"maps": ["base_color"], "tv_weight": -1}, "tv_weight"),
    ({"maps": ["base_color"], "iterations": 0}, "iterations"),
])
def test_bad_textures_tables_name_the_key(table, says):
    with pytest.raises(InputError, match=None) as e:
        check_textures(table, "job x.toml: [textures]")
    assert says in str(e.value) and str(e.value).startswith("job x.toml: [textures]")


def _run(args, cwd):
    return subprocess.run(PBRFIT + args, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_a_mesh_without_uvs_or_a_missing_primvar_is_one_clear_line(tmp_path):
    plain = synthetic.write_job(tmp_path / "plain", size=16, extra='[textures]\nmaps = ["base_color"]')
    out = tmp_path / "out"
    r = _run(["fit", str(plain), "--out", str(out)], tmp_path)
    assert r.returncode == 2 and not out.exists()
    assert "has no texture coordinates" in r.stderr and "/World/Part" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    named = synthetic.write_job(tmp_path / "named", size=16, uvs=True,
                                extra='[textures]\nmaps = ["base_color"]\nuv = "UVMap2"')
    r = _run(["fit", str(named), "--out", str(out)], tmp_path)
    assert r.returncode == 2 and not out.exists()
    assert "no primvar 'UVMap2'" in r.stderr and "st" in r.stderr


def test_subsurface_is_left_out_of_the_default_with_maps_and_refused_when_named(tmp_path):
    from pbrfit.options import FitOptions, fitted_parameters
    from pbrfit.params import DEFAULT_FIT
    from pbrfit.textures import TextureSettings

    with_maps = FitOptions(textures=TextureSettings(maps=("base_color",)))
    assert "subsurface_weight" in DEFAULT_FIT
    assert not {"subsurface_weight", "subsurface_scale"} & set(fitted_parameters(with_maps))
    assert set(fitted_parameters(with_maps)) == set(DEFAULT_FIT) - {"subsurface_weight", "subsurface_scale"}
    job = synthetic.write_job(tmp_path / "job", size=16, uvs=True, extra='[textures]\nmaps = ["base_color"]')
    before = sorted(p.name for p in (tmp_path / "job").rglob("*"))
    out = tmp_path / "out"
    r = _run(["fit", str(job), "--out", str(out), "--fit", "roughness,subsurface_weight"], tmp_path)
    assert r.returncode == 2 and not out.exists(), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "subsurface cannot be fitted together with texture maps" in r.stderr and "--fit" in r.stderr
    assert sorted(p.name for p in (tmp_path / "job").rglob("*")) == before


# --- exporters ----------------------------------------------------------------------------------

_TEXTURES = {
    "base_color": {"file": "textures/base_color.exr", "colorspace": "lin_rec709", "channels": 3, "uv": "st"},
    "roughness": {"file": "textures/roughness.exr", "colorspace": "raw", "channels": 1, "uv": "st"},
    "specular_ior_level": {"file": "textures/specular_ior_level.exr", "colorspace": "raw", "channels": 1,
                           "uv": "st"},
}


def test_materialx_wires_image_nodes_and_validates():
    doc = materialx_document({"base_color": [0.5, 0.2, 0.1], "roughness": 0.3}, textures=_TEXTURES)
    text = mx.writeToXmlString(doc)
    again = mx.createDocument()
    mx.readFromXmlString(again, text)
    again.setDataLibrary(doc.getDataLibrary())
    ok, msg = again.validate()
    assert ok, msg
    for shader_name, key in (("pbrfit_material_openpbr_shader", "specular_roughness"),
                             ("pbrfit_material_standard_surface_shader", "specular_roughness")):
        shader = again.getNode(shader_name)
        image = shader.getInput("base_color").getConnectedNode()
        assert image.getCategory() == "image" and image.getType() == "color3"
        assert image.getInputValue("file") == "textures/base_color.exr"
        assert image.getInput("file").getColorSpace() == "lin_rec709"
        assert shader.getInput(key).getConnectedNode().getInputValue("file") == "textures/roughness.exr"
    # a map no input carries unchanged is reported, not silently dropped
    assert "specular_ior_level map" in text


def test_usd_wires_preview_omnipbr_and_openpbr(tmp_path):
    path = tmp_path / "m.usda"
    lines = write_usd_material({"base_color": [0.5, 0.2, 0.1], "roughness": 0.3}, path, textures=_TEXTURES)
    assert any("specular_ior_level map" in line for line in lines)
    stage = Usd.Stage.Open(str(path))
    mat = UsdShade.Material(stage.GetPrimAtPath("/pbrfit/pbrfit_material"))
    preview = UsdShade.Shader(stage.GetPrimAtPath("/pbrfit/pbrfit_material/PreviewSurface"))
    src = preview.GetInput("diffuseColor").GetConnectedSources()[0][0]
    tex = UsdShade.Shader(src.source.GetPrim())
    assert tex.GetIdAttr().Get() == "UsdUVTexture" and src.sourceName == "rgb"
    assert tex.GetInput("file").Get().path == "textures/base_color.exr"
    assert tex.GetInput("sourceColorSpace").Get() == "raw"
    reader = UsdShade.Shader(tex.GetInput("st").GetConnectedSources()[0][0].source.GetPrim())
    assert reader.GetIdAttr().Get() == "UsdPrimvarReader_float2" and reader.GetInput("varname").Get() == "st"
    rough = preview.GetInput("roughness").GetConnectedSources()[0][0]
    assert rough.sourceName == "r"
    omni = UsdShade.Shader(stage.GetPrimAtPath("/pbrfit/pbrfit_material/OmniPBR"))
    assert omni.GetInput("diffuse_texture").Get().path == "textures/base_color.exr"
    assert omni.GetInput("reflectionroughness_texture").Get().path == "textures/roughness.exr"
    assert omni.GetInput("reflection_roughness_texture_influence").Get() == 1.0
    openpbr = UsdShade.Shader(stage.GetPrimAtPath("/pbrfit/pbrfit_material/OpenPBR"))
    node = UsdShade.Shader(openpbr.GetInput("base_color").GetConnectedSources()[0][0].source.GetPrim())
    assert node.GetIdAttr().Get() == "ND_image_color3"
    assert mat.GetSurfaceOutput().HasConnectedSource()


# --- a fit ----------------------------------------------------------------------------------------

def test_a_fit_recovers_a_printed_label(tmp_path):
    """Raster references of a red sphere with a blue label band: the fitted base colour map
    finds the band (far closer to the truth than any uniform colour), the maps are written
    and wired, and the validation views are better than the uniform fit's."""
    res = 32
    truth = np.zeros((res, res, 3), np.float32)
    truth[:] = [0.7, 0.1, 0.1]
    truth[res // 4: 3 * res // 4, : res // 2] = [0.1, 0.3, 0.8]
    job = synthetic.write_job(tmp_path / "label", uvs=True, size=40, cameras=4, validate_env="val.exr",
                              extra=f'[textures]\nmaps = ["base_color"]\nresolution = {res}\niterations = 40')
    synthetic.render_references(job, {"base_color": [0.5, 0.5, 0.5], "roughness": 0.35}, maps={"base_color": truth})
    out = tmp_path / "out"
    r = _run(["fit", str(job), "--out", str(out), "--preset", "plastic", "--iterations", "15",
              "--backend", "raster"], tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "material.json").read_text())
    entry = doc["textures"]["base_color"]
    assert f"maps: base_color {res}x{res}" in r.stdout and "-> textures/base_color.exr" in r.stdout
    assert entry["resolution"] == res and entry["uv"] == "st" and 0.3 < entry["observed_share"] <= 1.0
    fitted, _ = read_image(out / entry["file"])
    observed, _ = read_image(out / "textures" / "base_color_observed.png")
    seen = observed[..., 0] > 0.5
    err_map = np.sqrt(((fitted - truth)[seen] ** 2).mean())
    err_uniform = np.sqrt(((truth[seen] - truth[seen].mean(0)) ** 2).mean())
    assert err_map < 0.5 * err_uniform, (err_map, err_uniform)
    # the blue band is blue and the red body red, where seen
    band = np.zeros((res, res), bool)
    band[res // 4 + 2: 3 * res // 4 - 2, 2: res // 2 - 2] = True
    assert fitted[band & seen][:, 2].mean() > fitted[band & seen][:, 0].mean() + 0.3
    body = np.zeros((res, res), bool)
    body[:res // 4 - 2] = True
    assert fitted[body & seen][:, 0].mean() > fitted[body & seen][:, 2].mean() + 0.3
    assert "textures/base_color.exr" in (out / "material.mtlx").read_text()
    assert "textures/base_color.exr" in (out / "material.usda").read_text()
    html = (out / "report.html").read_text()
    assert "<h2>Texture maps</h2>" in html and 'alt="fitted base_color map"' in html
    assert 'alt="visibility of the base_color map"' in html
    assert doc["metrics"]["validate"]["mean"]["de2000_mean"] < 4.0
    # pbrfit validate renders the maps too: the same validation metrics as the fit's own
    again = tmp_path / "again"
    r = _run(["validate", str(job), "--material", str(out / "material.json"), "--backend", "raster",
              "--out", str(again)], tmp_path)
    assert r.returncode == 0, r.stderr
    redo = json.loads((again / "material.json").read_text())
    assert redo["textures"]["base_color"]["resolution"] == res
    assert abs(redo["metrics"]["validate"]["mean"]["de2000_mean"]
               - doc["metrics"]["validate"]["mean"]["de2000_mean"]) < 0.05
    # a material.json whose map file is gone: one line naming it, exit 2
    (out / "textures" / "base_color.exr").unlink()
    r = _run(["validate", str(job), "--material", str(out / "material.json")], tmp_path)
    assert r.returncode == 2 and "base_color.exr does not exist" in r.stderr


def test_usd_write_back_writes_maps_beside_the_edit_layer_and_undo_removes_them(tmp_path):
    from pxr import Sdf

    from pbrfit.texture_fit import MapResult
    from pbrfit.writeback_usd import undo, write_back

    synthetic.write_stage(tmp_path, uvs=True)
    stage = Usd.Stage.Open(str(tmp_path / "scene.usda"))
    seen = np.ones((8, 8), bool)
    maps = {"base_color": MapResult("base_color", np.full((8, 8, 3), 0.3, np.float32), seen, seen.astype(float)),
            "roughness": MapResult("roughness", np.full((8, 8, 1), 0.6, np.float32), seen, seen.astype(float))}
    before = (tmp_path / "scene.usda").read_text()
    record = write_back(stage, "/World/Part", {"base_color": [0.3, 0.3, 0.3], "roughness": 0.6}, maps=maps)
    layer = Path(record.edit_layer_file)
    assert layer.name == "scene.pbrfit.usda" and len(record.map_files) == 2
    omni = UsdShade.Shader(stage.GetPrimAtPath(f"{record.material_path}/OmniPBR"))
    asset = omni.GetInput("diffuse_texture").Get()
    resolved = Path(Sdf.ComputeAssetPathRelativeToLayer(Sdf.Layer.FindOrOpen(str(layer)), asset.path))
    assert resolved.is_file() and resolved.parent.name == "scene.pbrfit_textures"
    pixels, _ = read_image(resolved)
    assert np.allclose(pixels, 0.3, atol=1e-6)
    assert omni.GetInput("reflectionroughness_texture").Get().path.endswith("_roughness.exr")
    undo(stage, record)
    assert not resolved.exists() and not layer.exists()
    assert (tmp_path / "scene.usda").read_text() == before  # the user's root file is untouched


def _worn_sphere(tmp_path, metallic: np.ndarray, roughness: np.ndarray, start_roughness: float):
    """(objective, train uvs, layout, space) of a metal sphere whose (16, 16) maps are
    ``metallic`` / ``roughness``, seen by 4 raster references of 64 px; the layout holds
    roughness and metallic maps, the space's roughness starts at ``start_roughness``."""
    from pbrfit.objective import Objective
    from pbrfit.texture_fit import _Layout

    maps = {"metallic": metallic[..., None].astype(np.float32), "roughness": roughness[..., None].astype(np.float32)}
    job = synthetic.write_job(tmp_path / "worn", uvs=True, size=64, cameras=4)
    synthetic.render_references(job, {"base_color": [0.45, 0.45, 0.46], "metallic": 1.0, "roughness": 0.2},
                                maps=maps)
    scene = load_job(job).scene
    renderer = RasterRenderer(scene, SampleCounts(16, 4, 8, 4), max_loss_pixels=1 << 40)
    views = list(range(len(scene.views)))
    objective = Objective(renderer, views, {"de2000": 1.0, "l1": 10.0})
    uvs = [renderer.prepare(vi).geometry.uv[renderer.train_subsets[vi]] for vi in views]
    values = normalize_material({"base_color": [0.45, 0.45, 0.46], "metallic": 1.0, "roughness": start_roughness})
    space = ParameterSpace(values, [])
    layout = _Layout(space, ("roughness", "metallic"), metallic.shape[0],
                     {"roughness": (0.0, 1.0), "metallic": (0.0, 1.0)})
    return objective, uvs, layout, space


def test_the_texel_search_finds_paint_on_metal_where_the_gradient_does_not(tmp_path, monkeypatch):
    """A metal sphere (roughness 0.2) with one half painted (metallic 0, roughness 0.6), seen
    by raster references: from the scalar start (all metal, roughness 0.45) the palette search
    finds the two materials, moves the painted texels to the paint and the metal's to the metal;
    Adam from the same start, on its own, kept paint as metal (worn metal benchmark, synthetic
    and Cycles)."""
    from pbrfit import texture_fit
    from pbrfit.texture_fit import _texel_search
    from pbrfit.textures import initial_grid, texel_weights

    res = 16
    paint = np.zeros((res, res), bool)
    paint[:, : res // 2] = True  # u < 0.5
    objective, uvs, layout, space = _worn_sphere(tmp_path, np.where(paint, 0.0, 1.0), np.where(paint, 0.6, 0.2),
                                                 0.45)
    grids = {n: initial_grid(n, v, res, layout.bounds[n]) for n, v in (("roughness", 0.45), ("metallic", 1.0))}
    weight = texel_weights(uvs, res).numpy()
    unseen = torch.as_tensor(weight < 1.0)
    assert bool(unseen.any())  # the poles
    grids["roughness"][unseen] = -9.0  # beyond what a value can round-trip to: must stay as it is
    u = layout.pack(space.initial_vector(), grids)
    searched, record = _texel_search(objective, layout, u, uvs)
    assert bool((layout.grid(searched, "roughness")[unseen] == -9.0).all())
    # two materials, each near its truth (the grid's nearest are 0.14 / 0.56 and 0.02 / 0.98)
    assert len(record["materials"]) == 2, record
    metal, painted = sorted(record["materials"], key=lambda m: -m["metallic"])
    assert metal["metallic"] > 0.9 and abs(metal["roughness"] - 0.2) < 0.05, record
    assert painted["metallic"] < 0.1 and abs(painted["roughness"] - 0.6) < 0.08, record
    found = layout.material(searched)
    seen = weight >= 16
    metallic, roughness = found["metallic"][..., 0].numpy(), found["roughness"][..., 0].numpy()
    assert (seen & paint).sum() > 8 and (seen & ~paint).sum() > 8
    assert record["texels_moved"] >= seen.sum()
    assert np.median(metallic[seen & paint]) < 0.1, metallic
    assert abs(np.median(roughness[seen & paint]) - 0.6) < 0.08, roughness
    assert np.median(metallic[seen & ~paint]) > 0.9, metallic
    assert abs(np.median(roughness[seen & ~paint]) - 0.2) < 0.05, roughness  # moved from 0.45
    # every third pixel (a coarse level's subsample): the same two materials
    monkeypatch.setattr(texture_fit, "SEARCH_PIXELS", 8.0)
    _, strided = _texel_search(objective, layout, u, uvs)
    assert strided["pixel_stride"] > 1
    for a, b in zip(sorted(strided["materials"], key=lambda m: -m["metallic"]), (metal, painted)):
        assert abs(a["roughness"] - b["roughness"]) < 0.03 and abs(a["metallic"] - b["metallic"]) < 0.05, strided
    # out of time: nothing rendered, nothing moved
    assert _texel_search(objective, layout, u, uvs, out_of_time=lambda: True) == (u, None)
    # a cancel reaches the search between its renders (it renders the views ~50 times a level)
    class Cancelled(Exception):
        pass

    checks = []

    def cancel():
        checks.append(1)
        if len(checks) > 2:
            raise Cancelled

    objective.check = cancel
    with pytest.raises(Cancelled):
        _texel_search(objective, layout, u, uvs)
    assert len(checks) == 3


def test_the_snap_gives_noisy_texels_their_palette_material_and_keeps_what_the_palette_lacks(tmp_path):
    """Maps as Adam leaves them (the truth plus per-texel noise in roughness) on a half-painted
    metal sphere with a third material (a rougher metal block) the palette does not have: the
    snap sets the noisy paint and metal texels to their palette materials (refined toward the
    truth from a start 0.05 off), keeps the block's own values, and leaves unseen texels as
    they were."""
    from pbrfit.params import to_unconstrained
    from pbrfit.texture_fit import _snap_to_palette
    from pbrfit.textures import texel_weights

    res = 16
    paint = np.zeros((res, res), bool)
    paint[:, : res // 2] = True  # u < 0.5
    block = np.zeros((res, res), bool)
    block[5:11, 11:15] = True  # rows are v: a rougher metal the palette lacks
    metallic = np.where(paint, 0.0, 1.0)
    roughness = np.where(paint, 0.6, np.where(block, 0.5, 0.2))
    objective, uvs, layout, space = _worn_sphere(tmp_path, metallic, roughness, 0.2)
    noisy = np.clip(roughness + np.random.default_rng(3).normal(0.0, 0.08, roughness.shape), 0.05, 0.95)
    grids = {n: to_unconstrained(n, torch.as_tensor(v[..., None]), layout.bounds[n]).float()
             for n, v in (("roughness", noisy), ("metallic", np.clip(metallic, 0.01, 0.99)))}
    weight = texel_weights(uvs, res).numpy()
    unseen = weight < 1.0
    assert unseen.any()  # the poles
    u = layout.pack(space.initial_vector(), grids)
    palette = [{"roughness": 0.25, "metallic": 0.98}, {"roughness": 0.55, "metallic": 0.05}]
    snapped, record = _snap_to_palette(objective, layout, u, uvs, palette)
    assert record["texels_snapped"] > 0 and record["texels_kept"] > 0, record
    metal_found, paint_found = sorted(record["materials"], key=lambda m: -m["metallic"])
    assert abs(metal_found["roughness"] - 0.2) < 0.03 and abs(paint_found["roughness"] - 0.6) < 0.05, record
    before = layout.material(u)["roughness"][..., 0].numpy()
    after = layout.material(snapped)["roughness"][..., 0].numpy()
    assert np.array_equal(after[unseen], before[unseen])
    seen = weight >= 16
    inner = seen & ~np.roll(block, 1, 1) & ~np.roll(block, -1, 1) & ~np.roll(block, 1, 0) & ~np.roll(block, -1, 0)
    inner &= paint == np.roll(paint, 1, 1)
    inner &= paint == np.roll(paint, -1, 1)
    plain_metal, plain_paint = inner & ~paint & ~block, inner & paint
    assert plain_metal.sum() > 8 and plain_paint.sum() > 8
    # the noise is gone where the palette explains the photos
    # most noisy texels take their material (this renderer's 16 samples leave the metal's
    # material 0.02 rough of the truth, so some texels still fit their pixels better)
    assert np.isclose(after[plain_metal], metal_found["roughness"], atol=1e-4).mean() > 0.5, after[plain_metal]
    assert np.isclose(after[plain_paint], paint_found["roughness"], atol=1e-4).mean() > 0.8, after[plain_paint]
    assert np.abs(after[plain_metal] - 0.2).mean() < 0.75 * np.abs(before[plain_metal] - 0.2).mean()
    assert np.abs(after[plain_paint] - 0.6).mean() < 0.5 * np.abs(before[plain_paint] - 0.6).mean()
    # the block's rougher metal is not one of the palette's: its texels keep their own values
    core = seen & block & np.roll(block, 1, 0) & np.roll(block, -1, 0) & np.roll(block, 1, 1)
    assert core.sum() > 4 and np.mean(after[core] == before[core]) > 0.6, (after[core], before[core])
    assert after[core].mean() > 0.4, after[core]  # 0.5 rough, not the metal's 0.2
    # nothing to snap to, or out of time: nothing moves
    assert _snap_to_palette(objective, layout, u, uvs, []) == (u, None)
    assert _snap_to_palette(objective, layout, u, uvs, palette, out_of_time=lambda: True) == (u, None)


def test_colour_clusters_find_the_inks_of_a_noisy_label():
    from pbrfit.texture_fit import _colour_clusters

    rng = np.random.default_rng(0)
    inks = torch.tensor([[0.55, 0.04, 0.03], [0.8, 0.8, 0.78], [0.03, 0.08, 0.45]])
    counts = [300, 120, 30]  # a small blue stripe still gets its own cluster
    colours = torch.cat([ink + 0.02 * torch.as_tensor(rng.normal(size=(n, 3)), dtype=torch.float32)
                         for ink, n in zip(inks, counts)]).clamp_min(0)
    centres = _colour_clusters(colours, torch.ones(len(colours)), k=3)
    assert centres.shape == (3, 3)
    for ink in inks:
        assert float((centres - ink).abs().max(1).values.min()) < 0.02, (ink, centres)
    assert torch.equal(centres, _colour_clusters(colours, torch.ones(len(colours)), k=3))  # deterministic
    # fewer distinct colours than clusters asked for: no duplicate centres
    assert len(_colour_clusters(inks[:2].repeat(5, 1), torch.ones(10), k=6)) == 2


def test_the_colour_snap_gives_a_noisy_label_its_inks(tmp_path):
    """A printed label fitted texel by texel (the truth plus per-texel noise): the colour snap
    finds the label's four inks (a yellow line seen by few pixels among them, which saves too
    little of the total to join on that alone), sets the noisy texels to them and leaves
    unseen texels as they were."""
    from pbrfit.objective import Objective
    from pbrfit.params import to_unconstrained
    from pbrfit.texture_fit import _AffineInBaseColor, _Layout, _snap_colours
    from pbrfit.textures import texel_weights

    res = 16
    truth = np.empty((res, res, 3), np.float32)
    truth[:] = (0.55, 0.04, 0.03)
    truth[4:12, 2:8] = (0.8, 0.8, 0.78)
    truth[7:9, 3:7] = (0.03, 0.08, 0.45)
    truth[13] = (0.8, 0.6, 0.05)  # a yellow line all around, seen at a grazing angle
    job = synthetic.write_job(tmp_path / "label", uvs=True, size=64, cameras=4)
    synthetic.render_references(job, {"base_color": [0.5, 0.5, 0.5], "roughness": 0.35}, maps={"base_color": truth})
    scene = load_job(job).scene
    renderer = RasterRenderer(scene, SampleCounts(16, 4, 8, 4), max_loss_pixels=1 << 40)
    views = list(range(len(scene.views)))
    objective = Objective(renderer, views, {"de2000": 1.0, "l1": 10.0})
    uvs = [renderer.prepare(vi).geometry.uv[renderer.train_subsets[vi]] for vi in views]
    space = ParameterSpace(normalize_material({"base_color": [0.5, 0.5, 0.5], "roughness": 0.35}), [])
    layout = _Layout(space, ("base_color",), res, {"base_color": (0.0, 1.0)})
    noisy = np.clip(truth + np.random.default_rng(5).normal(0.0, 0.05, truth.shape), 0.01, 0.99)
    u = layout.pack(space.initial_vector(),
                    {"base_color": to_unconstrained("base_color", torch.as_tensor(noisy), (0.0, 1.0)).float()})
    snapped, record = _snap_colours(objective, layout, u, uvs)
    assert len(record["colours"]) == 4, record
    for ink, within in (((0.55, 0.04, 0.03), 0.03), ((0.8, 0.8, 0.78), 0.03), ((0.03, 0.08, 0.45), 0.03),
                        ((0.8, 0.6, 0.05), 0.06)):
        assert min(np.abs(np.array(c) - ink).max() for c in record["colours"]) < within, (ink, record)
    weight = texel_weights(uvs, res).numpy()
    seen, unseen = weight >= 16, weight == 0
    assert unseen.any() and seen.sum() > 40
    assert 0 < weight[13].max() < 16  # the yellow line's texels are seen, by a few pixels each
    before = layout.material(u)["base_color"].numpy()
    after = layout.material(snapped)["base_color"].numpy()
    assert np.array_equal(after[unseen], before[unseen])
    assert record["texels_snapped"] > 0.8 * seen.sum(), record
    assert np.abs(after - truth)[seen].mean() < 0.4 * np.abs(before - truth)[seen].mean()
    # texels seen by less than a pixel take inks too (their own colours are the least
    # determined; which ink, their few pixels' neighbours decide: at this grazing line, some
    # take the wrong one, as they would with any colour)
    faint = (weight > 0) & (weight < 1)
    inks = np.array(record["colours"], np.float32)
    assert faint.any() and all(np.abs(inks - c).max(1).min() < 1e-3 for c in after[faint]), after[faint]
    assert _snap_colours(objective, layout, u, uvs, out_of_time=lambda: True) == (u, None)
    # through the base-colour stand-in (as the fit snaps, at the kept level's scalars): the same snap
    stand_in = Objective(_AffineInBaseColor([renderer], views, layout.material(u)), views, {"de2000": 1.0, "l1": 10.0})
    fast, fast_record = _snap_colours(stand_in, layout, u, uvs)
    assert fast_record["texels_snapped"] == record["texels_snapped"], (fast_record, record)
    assert np.allclose(fast_record["colours"], record["colours"], atol=2e-3), (fast_record, record)
    assert torch.allclose(fast, snapped, atol=1e-3)


def test_the_scalar_search_judges_each_candidate_with_its_own_colours(tmp_path):
    """A two-colour map solved under a specular level of 0.02 takes the missing reflection into
    its colours, and under those colours the scalar search keeps 0.02; with the colours solved
    again for each candidate (as the fit does where a normal map is fitted beside the colour
    map) it finds the truth's 0.5, and the colours come back toward the truth's."""
    from pbrfit.objective import Objective
    from pbrfit.texture_fit import _base_color_least_squares, _Layout, _scalar_search

    res = 16
    inks = np.array([(0.06, 0.1, 0.32), (0.62, 0.5, 0.28)], np.float32)  # a navy and ochre weave
    truth = inks[np.broadcast_to(((np.arange(res) // 8) % 2)[None, :], (res, res))]
    job = synthetic.write_job(tmp_path / "weave", uvs=True, size=48, cameras=4)
    synthetic.render_references(job, {"base_color": [0.5, 0.5, 0.5], "roughness": 0.5, "specular_ior_level": 0.5},
                                maps={"base_color": truth})
    scene = load_job(job).scene
    renderer = RasterRenderer(scene, SampleCounts(16, 4, 8, 4), max_loss_pixels=1 << 40)
    views = list(range(len(scene.views)))
    objective = Objective(renderer, views, {"de2000": 1.0, "l1": 10.0})
    uvs = [renderer.prepare(vi).geometry.uv[renderer.train_subsets[vi]] for vi in views]
    start = normalize_material({"base_color": [0.5, 0.5, 0.5], "roughness": 0.5, "specular_ior_level": 0.02})
    space = ParameterSpace(start, ["specular_ior_level"])
    layout = _Layout(space, ("base_color",), res, {"base_color": (0.0, 1.0)})

    def solved(t):
        return _base_color_least_squares(objective, layout, t, (0.0, 1.0))

    def level(t):
        return float(space.values(t[: space.dim].double())["specular_ior_level"])

    def colour_error(t):
        seen = texel_weights(uvs, res).numpy() > 4
        return float(np.abs(layout.material(t)["base_color"].numpy() - truth)[seen].mean())

    u = solved(solved(layout.pack(space.initial_vector(), {"base_color": torch.zeros(res, res, 3)})))
    assert level(_scalar_search(objective, layout, u)) == pytest.approx(0.02, abs=1e-6)
    searched = _scalar_search(objective, layout, u, solved)
    assert level(searched) == pytest.approx(0.5, abs=1e-6)
    assert colour_error(searched) < 0.6 * colour_error(u), (colour_error(searched), colour_error(u))


def _searched(name: str, start: float, loss, grid: bool = True) -> float:
    """The value of scalar ``name`` (started at ``start``) that the texture levels' scalar search
    (with its ``grid``, or the simplest values only) picks under the loss ``loss(value)``."""
    from pbrfit.texture_fit import _Layout, _scalar_search

    space = ParameterSpace(normalize_material({"base_color": [0.5, 0.5, 0.5], name: start}), [name])
    layout = _Layout(space, ("base_color",), 2, {"base_color": (0.0, 1.0)})
    u = layout.pack(space.initial_vector(), {"base_color": torch.zeros(2, 2, 3)})
    found = _scalar_search(lambda material: (loss(float(material[name])),), layout, u, grid=grid)
    return float(space.values(found[: space.dim].double())[name])


def test_the_scalar_search_keeps_blenders_default_specular_level_unless_another_clearly_pays():
    """A loss that prefers specular level 0.9 by under PRUNE_TOLERANCE over 0.5 (the simplest
    value, as the scalar fit's pruning has it) gets 0.5, from either side; a loss that clearly
    prefers 0.9 gets the grid value nearest it, from 0.5."""
    from pbrfit.layers import PRUNE_TOLERANCE
    from pbrfit.warm_start import grid_values

    nearest = min(grid_values("specular_ior_level", 0.0, 1.0), key=lambda v: abs(v - 0.9))

    def gentle(v):
        return 1.0 + 0.01 * (v - 0.9) ** 2

    def steep(v):
        return 1.0 + 10.0 * (v - 0.9) ** 2

    assert gentle(0.5) <= (1 + PRUNE_TOLERANCE) * gentle(nearest)
    assert steep(0.5) > (1 + PRUNE_TOLERANCE) * steep(nearest)
    assert _searched("specular_ior_level", 0.98, gentle) == pytest.approx(0.5, abs=1e-4)
    assert _searched("specular_ior_level", 0.02, gentle) == pytest.approx(0.5, abs=1e-4)
    assert _searched("specular_ior_level", 0.5, steep) == pytest.approx(nearest, abs=1e-4)
    # a fine level's search: the simplest value against the current one, no grid
    assert _searched("specular_ior_level", 0.93, gentle, grid=False) == pytest.approx(0.5, abs=1e-4)
    assert _searched("specular_ior_level", 0.93, steep, grid=False) == pytest.approx(0.93, abs=1e-4)
    assert _searched("specular_ior_level", 0.3, steep, grid=False) == pytest.approx(0.5, abs=1e-4)
    assert _searched("roughness", 0.3, lambda v: (v - 0.8) ** 2, grid=False) == pytest.approx(0.3, abs=1e-4)
    # nothing to try on a fine level (the specular level at its simplest already): nothing rendered
    from pbrfit.texture_fit import _Layout, _scalar_search

    space = ParameterSpace(normalize_material({"base_color": [0.5, 0.5, 0.5], "specular_ior_level": 0.5}),
                           ["specular_ior_level"])
    layout = _Layout(space, ("base_color",), 2, {"base_color": (0.0, 1.0)})
    u = layout.pack(space.initial_vector(), {"base_color": torch.zeros(2, 2, 3)})
    rendered = []
    assert torch.equal(_scalar_search(lambda m: rendered.append(m) or (1.0,), layout, u, grid=False), u)
    assert not rendered
    # at the simplest value already, a grid value that pays under 2% met before it does not win
    assert _searched("specular_ior_level", 0.5, lambda v: 1.0 + 0.01 * (v - 0.3) ** 2) == pytest.approx(0.5, abs=1e-4)


def test_the_scalar_search_tries_both_simplest_metallics():
    """Metallic has two simplest values (0 and 1), neither on the search grid: a loss nearly flat
    toward 1 and high below 0.5 gets 1, though the search started nearer 0."""
    def loss(v):
        return 1.0 + (5.0 if v < 0.5 else 1e-4 * (1.0 - v))

    assert _searched("metallic", 0.3, loss) == pytest.approx(1.0, abs=1e-4)
    assert _searched("metallic", 0.3, lambda v: 1.0 + 5.0 * v) == pytest.approx(0.0, abs=1e-4)


def test_a_coarse_levels_colours_solved_on_every_fourth_pixel_match_those_on_every_pixel(tmp_path):
    """The per-texel least squares of the base colour on a strided pixel subset (a coarse
    level, each texel seen by many pixels) lands where the solve on every pixel does, and
    renders only the subset."""
    from pbrfit.objective import Objective
    from pbrfit.texture_fit import _base_color_least_squares, _Layout

    res = 4
    inks = np.array([(0.06, 0.1, 0.32), (0.62, 0.5, 0.28)], np.float32)
    truth = inks[np.broadcast_to(((np.arange(res) // 2) % 2)[None, :], (res, res))]
    job = synthetic.write_job(tmp_path / "coarse", uvs=True, size=48, cameras=2)
    synthetic.render_references(job, {"base_color": [0.5, 0.5, 0.5], "roughness": 0.5}, maps={"base_color": truth})
    scene = load_job(job).scene
    renderer = RasterRenderer(scene, SampleCounts(16, 4, 8, 4), max_loss_pixels=1 << 40)
    views = list(range(len(scene.views)))
    objective = Objective(renderer, views, {"de2000": 1.0})
    space = ParameterSpace(normalize_material({"base_color": [0.5, 0.5, 0.5], "roughness": 0.5}), [])
    layout = _Layout(space, ("base_color",), res, {"base_color": (0.0, 1.0)})
    u = layout.pack(space.initial_vector(), {"base_color": torch.zeros(res, res, 3)})
    shaded = []
    shade = renderer.shade
    renderer.shade = lambda vi, material, q: shaded.append(len(q)) or shade(vi, material, q)
    every = layout.material(_base_color_least_squares(objective, layout, u, (0.0, 1.0)))["base_color"]
    full = sum(shaded)
    shaded.clear()
    fourth = layout.material(_base_color_least_squares(objective, layout, u, (0.0, 1.0), 4))["base_color"]
    assert sum(shaded) <= full / 4 + 2 * len(views)
    seen = texel_weights([renderer.prepare(vi).geometry.uv[renderer.train_subsets[vi]] for vi in views], res) > 20
    assert seen.sum() >= 4
    error = (fourth - every).abs()[seen]
    assert float(error.max()) < 0.02, error

    def off(colours):  # from the truth (one pass: an ink's edge texels blend their neighbours)
        return float((colours - torch.as_tensor(truth)).abs()[seen].mean())

    assert off(fourth) < off(every) + 0.005


def test_the_palette_keeps_the_materials_the_texels_need_and_drops_a_compromise():
    """Facility location on a loss table: texels of two materials, a compromise candidate best
    on average (chosen first, then made redundant), and a variant of one that would save less
    than the gain threshold (never added)."""
    from pbrfit.texture_fit import PALETTE_GAIN, _joint_grid, _palette

    texels_a, texels_b = torch.arange(10) < 5, torch.arange(10) >= 5
    metal = torch.where(texels_a, 1.0, 10.0)  # right on the first five texels
    paint = torch.where(texels_b, 1.0, 10.0)
    compromise = torch.full((10,), 4.0)  # best single material: 40 against 55
    variant = paint.clone()
    variant[9], variant[5] = 1.0 - 10 * PALETTE_GAIN / 2, 2.0  # worse in sum; would save half the gain
    losses = torch.stack([metal, compromise, paint, variant])
    assert sorted(_palette(losses)) == [0, 2]
    assert _palette(torch.stack([compromise, compromise + 1])) == [0]
    # the variant listed before the material it varies: still not taken (a tie would have been)
    assert sorted(_palette(torch.stack([metal, compromise, variant, paint]))) == [0, 3]
    # nothing to explain (every loss 0, or no texel): one material, no duplicates, no error
    assert _palette(torch.zeros(3, 4)) == [0]
    assert _palette(torch.zeros(3, 0)) == [0]
    # a small distinct material (the last texel's, saving under the gain in total but most of
    # its texel's loss) joins only when ``distinct`` asks for it; a near-duplicate of the paint
    # that takes the noise of two texels (saving 5.7% of the total, 30% on them) never does
    metal = torch.where(texels_a, 1.0, 10.0)
    paint = torch.tensor([10.0] * 5 + [1.0] * 4 + [1.5])
    ink = torch.tensor([10.0] * 9 + [0.5])
    near = torch.tensor([10.0] * 5 + [0.7, 0.7, 1.4, 1.4, 1.5])
    losses = torch.stack([metal, paint, ink, near])
    assert sorted(_palette(losses)) == [0, 1]
    assert sorted(_palette(losses, distinct=0.5)) == [0, 1, 2]
    assert sorted(_palette(torch.stack([metal, paint, near]), distinct=0.5)) == [0, 1]
    grid = _joint_grid(["roughness", "metallic"], {"roughness": (0.0, 1.0), "metallic": (0.0, 1.0)})
    assert grid.shape == (35, 2)  # 7 roughnesses x 5 metallics: under the limit, untouched
    thinned = _joint_grid(["roughness", "metallic", "coat_weight"], {n: (0.0, 1.0) for n in
                                                                     ("roughness", "metallic", "coat_weight")})
    assert len(thinned) <= 40 and thinned[:, 0].min() < 0.2 and thinned[:, 0].max() > 0.9  # ends kept
