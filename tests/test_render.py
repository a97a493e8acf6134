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
