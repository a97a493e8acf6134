"""Raster backend: cameras, surface data, the estimator's normalization, determinism."""

import math

import numpy as np
import pytest
import torch
from synthetic import write_job

from pbrfit.gbuffer import camera_rays
from pbrfit.job import load_job
from pbrfit.params import ParameterSpace, default_material
from pbrfit.render import RasterRenderer, SampleCounts
from pbrfit.scene import Camera, Environment


def _material(**kw):
    s = ParameterSpace(default_material() | kw, [])
    return s.material(s.initial_vector())


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return load_job(write_job(tmp_path_factory.mktemp("render"), size=48, cameras=2))


def test_camera_rays_follow_usd_conventions():
    m = np.eye(4)
    m[:3, 3] = [1, 2, 3]
    cam = Camera(m, focal_length=50, horizontal_aperture=36, vertical_aperture=24)
    o, d = camera_rays(cam, 2, 3)
    assert np.allclose(o, [1, 2, 3])
    # centre column looks down -Z; top row points up (+Y), right column +X
    assert d[1, 2] < -0.99 and d[0, 1] > 0 and d[2, 0] > 0 and d[0, 0] < 0
    o, d = camera_rays(cam, 1, 2000)
    half_fov = math.atan(36 / 2 / 50)
    assert math.atan2(d[-1, 0], -d[-1, 2]) == pytest.approx(half_fov, rel=1e-3)


def test_sphere_surface_data(job):
    r = RasterRenderer(job.scene, SampleCounts(4, 2, 2, 0))
    geo = r.prepare(0).geometry
    # shading normals of a unit sphere at the origin are the positions
    n = geo.frame[:, 2].double().numpy()
    assert np.allclose(n, geo.position / np.linalg.norm(geo.position, axis=1, keepdims=True), atol=0.02)
    assert (geo.wo[:, 2] > -1e-3).all()  # the camera sees the front of each shading frame
    # the silhouette's area matches the projected disc (distance 4, radius 1, fov 2*atan(0.36))
    h, w = geo.coverage.shape
    half = math.tan(math.atan(18 / 50))
    disc = math.pi * (math.tan(math.asin(1 / 4)) / half * w / 2) ** 2
    assert geo.coverage.sum() == pytest.approx(disc, rel=0.08)


def test_white_furnace_through_the_renderer(job):
    """A white Lambertian (no specular) under a uniform white dome reflects exactly 1."""
    scene = job.scene
    flat = Environment(np.ones((32, 64, 3), np.float32))
    for v in scene.views:
        v.environment = flat
    r = RasterRenderer(scene, SampleCounts(16, 8, 8, 0))
    out = r.shade(0, _material(base_color=[1, 1, 1], specular_ior_level=0.0))
    assert float(out.mean()) == pytest.approx(1.0, abs=0.02)
    assert float(out.std()) < 0.08  # Monte Carlo noise of 32 samples per pixel
    metal = r.shade(0, _material(base_color=[1, 1, 1], metallic=1.0, roughness=0.6))
    assert float(metal.mean()) == pytest.approx(1.0, abs=0.05)


def test_rendering_is_deterministic_and_differentiable(job):
    a = RasterRenderer(job.scene, SampleCounts(8, 2, 4, 2), seed=3)
    b = RasterRenderer(job.scene, SampleCounts(8, 2, 4, 2), seed=3)
    m = _material(roughness=0.3)
    assert torch.equal(a.shade(1, m), b.shade(1, m))
    space = ParameterSpace(default_material(), ["base_color", "roughness", "metallic", "coat_weight"])
    u = space.initial_vector().requires_grad_(True)
    a.shade(0, space.material(u)).mean().backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


def test_loss_pixels_are_prepared_alone_and_shade_as_when_every_pixel_is(job):
    """The fixed samples are computed for the loss pixels first and for every pixel only when
    asked; a pixel's samples, and so its radiance, do not depend on which were prepared."""
    m = _material(roughness=0.3, base_color=[0.6, 0.3, 0.1])
    lazy = RasterRenderer(job.scene, SampleCounts(8, 2, 4, 2), seed=3, max_loss_pixels=50)
    pv = lazy.prepare(0)
    q = lazy.train_subsets[0]
    assert len(q) == 50 and len(pv.fixed.wi) == 50 < len(pv.geometry.pixels)
    subset_first = lazy.shade(0, m, q)
    assert len(pv.fixed.wi) == 50  # shading the loss pixels prepared nothing more
    whole = RasterRenderer(job.scene, SampleCounts(8, 2, 4, 2), seed=3, max_loss_pixels=50)
    everything = whole.shade(0, m)  # prepares every pixel
    assert len(whole.prepare(0).fixed.wi) == len(pv.geometry.pixels)
    assert np.array_equal(whole.train_subsets[0], q)
    torch.testing.assert_close(subset_first, everything[torch.as_tensor(q)], rtol=0, atol=0)
    torch.testing.assert_close(lazy.shade(0, m), everything, rtol=0, atol=0)


def test_the_fixed_samples_pdf_is_the_mixture_of_the_environments_and_the_cosines(job):
    """Each fixed direction's pdf is n_light * the environment map's pdf of it + n_cosine *
    its cosine over pi (the light samples' part taken from their warp; the directions turned
    back to the world here, so to float precision and but for a few on an environment texel's edge)."""
    n = SampleCounts(8, 2, 4, 2)
    r = RasterRenderer(job.scene, n, seed=3)
    pv = r.prepare(0)
    rows = torch.as_tensor(r.train_subsets[0], dtype=torch.long)
    d = torch.einsum("pni,pij->pnj", pv.fixed.wi, pv.geometry.frame[rows])  # back to world
    wi_cos = pv.fixed.wi[:, n.light:]
    want_cos = n.light * pv.env.pdf(d[:, n.light:]) + n.cosine * wi_cos[..., 2].clamp_min(0) / math.pi
    want_light = n.light * pv.env.pdf(d[:, :n.light]) + n.cosine * pv.fixed.wi[:, :n.light, 2].clamp_min(0) / math.pi
    for got, want in ((pv.fixed.p_fixed[:, n.light:], want_cos), (pv.fixed.p_fixed[:, :n.light], want_light)):
        close = (got - want).abs() <= 1e-4 * want.abs() + 1e-6
        assert close.float().mean() > 0.99  # a direction on an environment texel's edge may cross it


def test_neighbourhood_gives_each_pixel_the_filters_taps_over_its_covered_neighbours():
    from pbrfit.pixel_filter import image_taps, neighbourhood

    coverage = np.zeros((5, 6), bool)
    coverage[1:5, 1:5] = True
    coverage[2, 3] = False  # a hole: the pixels around it average only the part
    pixels = np.flatnonzero(coverage.reshape(-1))
    at = {int(p): i for i, p in enumerate(pixels)}
    centres = [(3, 2), (1, 1), (2, 2), (4, 4)]  # interior, corner, by the hole, on the image's last row
    sel = np.array([at[r * 6 + c] for r, c in centres])
    need, index, weights = neighbourhood(coverage, pixels, sel)
    assert np.all(np.diff(need) > 0) and np.allclose(weights.sum(1), 1.0)
    assert need.max() < len(pixels) and index.max() < len(need)
    covered_neighbours = set()
    for s, (row, col) in enumerate(centres):
        expected = image_taps().copy()
        for k, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
            r, c = row + dy, col + dx
            if not (0 <= r < 5 and 0 <= c < 6 and coverage[r, c]):
                expected[dy + 1, dx + 1] = 0.0
            else:  # the weight's row is that neighbour
                assert pixels[need[index[s, k]]] == r * 6 + c
                covered_neighbours.add(r * 6 + c)
        np.testing.assert_allclose(weights[s], (expected / expected.sum()).reshape(-1), rtol=1e-6)
    assert set(pixels[need].tolist()) == covered_neighbours  # exactly what the taps read
    assert all(len(a) == 0 for a in neighbourhood(coverage, pixels, np.zeros(0, np.int64)))
    assert image_taps()[1, 1] == pytest.approx((1 - 0.1727) ** 2)
    # the filter's variance per axis: sum of w * offset^2 over the taps
    offsets = np.array([-1.0, 0.0, 1.0])
    assert float((image_taps().sum(0) * offsets ** 2).sum()) == pytest.approx(0.1727)


def test_a_filtered_render_is_the_filter_over_the_pixel_centres_without_widened_lobes(job, monkeypatch):
    """``filter_pixels``: each pixel is the taps over its neighbours' centre radiance, rendered
    without the footprint's widening (which would count the filter twice); differentiable;
    the loss pixels' neighbours are prepared up front."""
    import torch.nn.functional as F

    from pbrfit import pixel_filter

    m = _material(roughness=0.15, metallic=1.0, base_color=[0.9, 0.6, 0.3])
    filtered = RasterRenderer(job.scene, SampleCounts(8, 2, 4, 2), seed=3, max_loss_pixels=1 << 40,
                              filter_pixels=True)
    pv = filtered.prepare(0)
    geo, q = pv.geometry, filtered.train_subsets[0]
    need = pixel_filter.neighbourhood(geo.coverage, geo.pixels, q)[0]
    assert len(need) > len(q) and np.all(pv.row_of[need] >= 0)  # the neighbours are prepared
    out = filtered.shade(0, m, q)
    assert len(pv.fixed.wi) == len(need)  # and nothing more was
    assert torch.equal(filtered.shade(0, m, q), out)  # the remembered neighbourhood
    assert torch.equal(filtered.shade(0, m, q[:100]), out[:100])  # another set's own
    assert torch.equal(filtered.shade(0, m, q[100:200]), out[100:200])  # another of the same size

    monkeypatch.setattr(pixel_filter, "footprint",
                        lambda coverage, pixels, frame, **_: np.zeros((len(pixels), 3), np.float32))
    centres = RasterRenderer(job.scene, SampleCounts(8, 2, 4, 2), seed=3, max_loss_pixels=1 << 40)
    image = torch.zeros(geo.height * geo.width, 3)
    image[geo.pixels] = centres.shade(0, m)
    taps = torch.as_tensor(pixel_filter.image_taps(), dtype=torch.float32)
    blurred = F.conv2d(image.reshape(geo.height, geo.width, 3).permute(2, 0, 1)[:, None], taps[None, None], padding=1)
    expected = blurred[:, 0].permute(1, 2, 0).reshape(-1, 3)[geo.pixels[q]]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # every covered pixel (the silhouette's too): the taps over the covered neighbours only
    mask = torch.zeros(1, 1, geo.height, geo.width)
    mask.view(-1)[torch.as_tensor(geo.pixels)] = 1.0
    share = F.conv2d(mask, taps[None, None], padding=1)[0, 0].reshape(-1)[geo.pixels]
    everywhere = blurred[:, 0].permute(1, 2, 0).reshape(-1, 3)[geo.pixels] / share[:, None]
    torch.testing.assert_close(filtered.shade(0, m), everywhere, rtol=1e-4, atol=1e-4)
    # which has teeth: on this sharp metal the footprint's widening changes the centres
    monkeypatch.undo()
    widened = RasterRenderer(job.scene, SampleCounts(8, 2, 4, 2), seed=3, max_loss_pixels=1 << 40)
    assert not torch.allclose(widened.shade(0, m, q), centres.shade(0, m, q))

    space = ParameterSpace(default_material(), ["base_color", "roughness"])
    u = space.initial_vector().requires_grad_(True)
    filtered.shade(0, space.material(u), q[:200]).mean().backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


def test_the_fixed_samples_of_a_view_in_blocks_are_those_of_the_whole_view(job, monkeypatch):
    from pbrfit import render

    whole = RasterRenderer(job.scene, SampleCounts(8, 2, 4, 2), seed=5).prepare(1).fixed
    monkeypatch.setattr(render, "FIX_BLOCK", 37)
    blocks = RasterRenderer(job.scene, SampleCounts(8, 2, 4, 2), seed=5).prepare(1).fixed
    for name in ("wi", "lv", "p_fixed", "vis"):
        assert torch.equal(getattr(whole, name), getattr(blocks, name)), name


def test_shadow_rays_of_clear_points_skip_the_part_but_not_the_known_objects(job):
    """The sphere is convex: every covered pixel is clear of it, so its shadow rays are not
    traced against it; a known ball above it still shadows them, and the visibility is the
    one tracing every ray gives."""
    import dataclasses

    from pbrfit.scene import KnownObject, Mesh

    mesh = job.scene.mesh
    ball = Mesh(mesh.positions * 0.5 + [0.0, 1.7, 0.0], mesh.triangles)
    scene = dataclasses.replace(job.scene, known=(KnownObject(ball, {}),))
    r = RasterRenderer(scene, SampleCounts(16, 4, 8, 4), seed=2)
    pv = r.prepare(0)
    geo = pv.geometry
    assert geo.clear.all()
    rows = r.train_subsets[0]
    d = torch.nn.functional.normalize(torch.randn(len(rows), 64, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    asked = []
    occluded = r.caster.occluded
    r.caster.occluded = lambda o, dd: asked.append(len(o)) or occluded(o, dd)
    unflagged = dataclasses.replace(pv, geometry=dataclasses.replace(geo, clear=None))
    traced = r._visible(unflagged, rows, d)
    assert sum(asked) > 1000  # without the flags every ray above the surface goes to the part
    asked.clear()
    skipped = r._visible(pv, rows, d)
    assert sum(asked) == 0  # with them, none
    assert torch.equal(traced, skipped)
    above = (torch.as_tensor(geo.normal_geo[rows])[:, None, :] * d.double()).sum(-1) > 0
    assert (above & (skipped < 0.5)).sum() > 100  # the ball's shadow is there
