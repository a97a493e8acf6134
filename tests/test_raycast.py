"""The two ray engines (Embree on the CPU, Mitsuba/Dr.Jit) answer the same queries.

Embree is the CPU default because its wheel carries the library; Mitsuba's CPU backend
needs a system libLLVM >= 16. Where both run (here, with the project's setup), every
query and a whole render are compared; elsewhere the comparison is skipped and the Embree
tests still run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pbrfit.errors import InputError
from pbrfit.job import load_job
from pbrfit.params import ParameterSpace
from pbrfit.raycast import ENGINE_ENV, RayCaster, configure_drjit_llvm, default_engine

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo" / "job.toml"


def _mitsuba_cpu_available() -> bool:
    try:
        import mitsuba  # noqa: F401
    except ImportError:
        return False
    return configure_drjit_llvm() is not None


needs_mitsuba = pytest.mark.skipif(not _mitsuba_cpu_available(), reason="Mitsuba with libLLVM >= 16 not installed")


@pytest.fixture(scope="module")
def suzanne():
    """The demo's Suzanne: concave, self-occluding, 7,958 triangles."""
    return load_job(DEMO).scene


def _random_rays(mesh, n: int, seed: int = 0):
    """Rays from a shell around the part toward random points near it (hits, misses, grazing)."""
    rng = np.random.default_rng(seed)
    lo, hi = mesh.positions.min(0), mesh.positions.max(0)
    centre, radius = (lo + hi) / 2, np.linalg.norm(hi - lo)
    o = rng.normal(size=(n, 3))
    o = centre + 1.5 * radius * o / np.linalg.norm(o, axis=1, keepdims=True)
    target = lo + rng.random((n, 3)) * (hi - lo)
    d = target - o
    return o, d / np.linalg.norm(d, axis=1, keepdims=True)


def test_embree_hits_lie_on_the_mesh(suzanne):
    mesh = suzanne.mesh
    caster = RayCaster(mesh, engine="embree")
    assert caster.engine == "embree"
    o, d = _random_rays(mesh, 20000)
    hits = caster.intersect(o, d)
    assert 0.2 < hits.hit.mean() < 0.95  # the test rays both hit and miss
    p_ray = o[hits.hit] + hits.t[hits.hit, None] * d[hits.hit]
    tri = mesh.triangles[hits.triangle[hits.hit]]
    b1, b2 = hits.barycentric[hits.hit].T
    v = mesh.positions
    p_bary = (1 - b1 - b2)[:, None] * v[tri[:, 0]] + b1[:, None] * v[tri[:, 1]] + b2[:, None] * v[tri[:, 2]]
    scale = np.linalg.norm(np.ptp(v, axis=0))
    assert np.abs(p_ray - p_bary).max() < 1e-4 * scale
    assert np.all(np.isinf(hits.t[~hits.hit])) and np.all(hits.triangle[~hits.hit] == -1)
    # a ray that hits is occluded; a ray that misses is not
    np.testing.assert_array_equal(caster.occluded(o, d), hits.hit)


@pytest.mark.parametrize("engine", ["embree", pytest.param("mitsuba", marks=needs_mitsuba)])
def test_a_bounded_query_reports_the_hits_within_its_distance_and_misses_beyond(suzanne, engine):
    """``max_distance`` (a random walk's flights): the unbounded query's hit where it lies
    within the ray's distance, a miss where it lies beyond."""
    caster = RayCaster(suzanne.mesh, engine=engine)
    o, d = _random_rays(suzanne.mesh, 20000, seed=2)
    full = caster.intersect(o, d)
    far = np.where(full.hit, full.t, 10.0) * np.random.default_rng(3).uniform(0.5, 1.5, len(o))
    bounded = caster.intersect(o, d, far)
    within = full.hit & (full.t < far * (1 - 1e-5))
    beyond = ~full.hit | (full.t > far * (1 + 1e-5))
    assert within.sum() > 2000 and (full.hit & beyond).sum() > 2000  # both kinds tested
    assert bounded.hit[within].all() and not bounded.hit[beyond].any()
    np.testing.assert_array_equal(bounded.triangle[within], full.triangle[within])
    np.testing.assert_allclose(bounded.t[within], full.t[within], rtol=1e-6)
    assert np.all(np.isinf(bounded.t[beyond])) and np.all(bounded.triangle[beyond] == -1)


def test_empty_queries(suzanne):
    caster = RayCaster(suzanne.mesh, engine="embree")
    assert caster.intersect(np.zeros((0, 3)), np.zeros((0, 3))).hit.shape == (0,)
    assert caster.occluded(np.zeros((0, 3)), np.zeros((0, 3))).shape == (0,)


def test_engine_choice(monkeypatch):
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    assert default_engine("cpu") == "embree"
    import importlib.util

    real_find_spec = importlib.util.find_spec
    for installed, expected in ((True, "mitsuba"), (False, "embree")):  # with and without the mitsuba extra
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, installed=installed:
                            (object() if installed else None) if name == "mitsuba" else real_find_spec(name, *a))
        assert default_engine("cuda") == expected
        assert default_engine("cpu") == "embree"
    monkeypatch.undo()
    monkeypatch.setenv(ENGINE_ENV, "mitsuba")
    assert default_engine("cpu") == "mitsuba"
    monkeypatch.setenv(ENGINE_ENV, "optix")
    with pytest.raises(InputError, match=ENGINE_ENV):
        default_engine("cpu")


@needs_mitsuba
def test_embree_and_mitsuba_agree_ray_by_ray(suzanne):
    mesh = suzanne.mesh
    embree, mitsuba = RayCaster(mesh, engine="embree"), RayCaster(mesh, engine="mitsuba")
    o, d = _random_rays(mesh, 50000, seed=1)
    a, b = embree.intersect(o, d), mitsuba.intersect(o, d)
    # rays through a shared edge may pick either triangle (or, grazing, hit or miss): rare
    assert (a.hit != b.hit).mean() < 1e-3
    both = a.hit & b.hit
    same_tri = both & (a.triangle == b.triangle)
    assert same_tri.sum() > 0.99 * both.sum()
    np.testing.assert_allclose(a.t[both], b.t[both], rtol=1e-4, atol=1e-5)
    # barycentrics of a tiny triangle are ill-conditioned in float32: compare the points they give
    v, tri = mesh.positions, mesh.triangles[a.triangle[same_tri]]

    def point(bary):
        b1, b2 = bary[same_tri].T
        return (1 - b1 - b2)[:, None] * v[tri[:, 0]] + b1[:, None] * v[tri[:, 1]] + b2[:, None] * v[tri[:, 2]]

    scale = np.linalg.norm(np.ptp(v, axis=0))
    # within the secondary-ray offset (RayCaster.epsilon)
    assert np.abs(point(a.barycentric) - point(b.barycentric)).max() < 1e-4 * scale
    assert (embree.occluded(o, d) != mitsuba.occluded(o, d)).mean() < 1e-3


@needs_mitsuba
@pytest.mark.parametrize("backend", ["raster", "path"])
def test_embree_and_mitsuba_render_the_same_image(suzanne, monkeypatch, backend):
    from pbrfit.pathtrace import PathRenderer, PathSettings
    from pbrfit.render import RasterRenderer, SampleCounts

    values = dict(suzanne.initial_material, base_color=[0.6, 0.3, 0.2], roughness=0.35)
    space = ParameterSpace(values, [])
    material = space.material(space.initial_vector())
    images = {}
    for engine in ("embree", "mitsuba"):
        monkeypatch.setenv(ENGINE_ENV, engine)
        if backend == "raster":
            r = RasterRenderer(suzanne, SampleCounts(16, 4, 8, 4), seed=3)
        else:
            r = PathRenderer(suzanne, PathSettings(4, 3), seed=3)
        assert r.caster.engine == engine
        with torch.no_grad():
            images[engine] = r.render_image(0, material)
    a, b = images["embree"], images["mitsuba"]
    # same rays, same samples: the images differ only where a ray's hit differs (shared edges)
    differing = np.abs(a - b).max(axis=-1) > 1e-3 * max(float(a.max()), 1e-6)
    assert differing.mean() < 0.01
    assert abs(a.mean() - b.mean()) < 2e-3 * a.mean()


@needs_mitsuba
def test_embree_and_mitsuba_fit_the_same_material(tmp_path, monkeypatch):
    """The end result: a raster fit of a glossy plastic through each engine finds the same
    parameters (the renders agree to float precision; the fits must not drift apart)."""
    from synthetic import render_references, write_job

    from pbrfit.fit import FitOptions, fit_material
    from pbrfit.render import SampleCounts

    job = write_job(tmp_path, size=40, cameras=3)
    truth = {"base_color": [0.05, 0.2, 0.6], "roughness": 0.15}
    render_references(job, truth, seed=2)
    fitted = {}
    for engine in ("embree", "mitsuba"):
        monkeypatch.setenv(ENGINE_ENV, engine)
        opts = FitOptions(parameters=["base_color", "roughness", "specular_ior_level"], iterations=30,
                          backend="raster", samples=SampleCounts(32, 8, 16, 8))
        fitted[engine] = fit_material(load_job(job).scene, opts).material
    a, b = fitted["embree"], fitted["mitsuba"]
    assert np.allclose(a["base_color"], b["base_color"], atol=0.01), (a["base_color"], b["base_color"])
    assert abs(a["roughness"] - b["roughness"]) < 0.02 and abs(a["roughness"] - truth["roughness"]) < 0.04
    assert abs(a["specular_ior_level"] - b["specular_ior_level"]) < 0.05


# --- shadow rays that need no query -------------------------------------------------------


def _convex_sphere():
    """A UV sphere (convex; wound so that cross(v1 - v0, v2 - v0) points out; a collapsed
    triangle in each pole quad, its normal rounding noise) as a Mesh."""
    from synthetic import _sphere

    from pbrfit.scene import Mesh

    pts, counts, idx, _ = _sphere(stacks=12, slices=24)
    quads = np.asarray(idx).reshape(-1, 4)
    tris = np.concatenate([quads[:, [0, 2, 1]], quads[:, [0, 3, 2]]])
    return Mesh(pts.astype(np.float64), tris.astype(np.int64))


def test_supporting_sides_of_convex_flat_and_concave_parts(suzanne):
    from pbrfit.scene import Mesh

    sphere = _convex_sphere()
    sides = RayCaster(sphere).supporting_sides()
    p = sphere.positions[sphere.triangles]
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    area = np.linalg.norm(normal, axis=-1)
    assert ((normal * p.mean(1)).sum(-1) >= 0).all()  # wound outward
    assert sides[area > 1e-9, 0].all()  # every triangle but the poles' collapsed ones supports it
    assert not sides[:, 1].any()  # the inside sees the rest of the sphere
    quad = Mesh(np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]), np.array([[0, 1, 2], [0, 2, 3]]))
    assert RayCaster(quad).supporting_sides().all()  # a flat panel: both sides
    monkey = RayCaster(suzanne.mesh).supporting_sides()
    assert 0 < monkey[:, 0].mean() < 0.2 and not monkey[:, 1].any()


def test_rays_leaving_a_supporting_side_are_never_occluded(suzanne):
    """The property the shadow-ray shortcut rests on, checked by the ray engine on the concave
    Suzanne: from every triangle whose front supports the mesh, rays above it hit nothing,
    while the triangles that do not support it shadow some of theirs."""
    mesh, rng = suzanne.mesh, np.random.default_rng(4)
    caster = RayCaster(mesh, engine="embree")
    sides = caster.supporting_sides()
    p = mesh.positions[mesh.triangles]
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True).clip(1e-30)
    b = rng.dirichlet(np.ones(3), size=len(p))
    origin = (b[:, :, None] * p).sum(1) + caster.epsilon * normal
    d = rng.normal(size=(len(p), 3))
    d = np.where(((d * normal).sum(-1) < 0)[:, None], -d, d)  # above each triangle
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    blocked = caster.occluded(origin, d)
    assert not blocked[sides[:, 0]].any()
    assert blocked[~sides[:, 0]].mean() > 0.1


def test_supporting_sides_of_a_mesh_over_the_limit_are_not_tested(monkeypatch):
    from pbrfit import raycast

    monkeypatch.setattr(raycast, "SUPPORT_TEST_LIMIT", 100)
    monkeypatch.setattr(raycast, "_SIDES", {})
    assert not RayCaster(_convex_sphere()).supporting_sides().any()
