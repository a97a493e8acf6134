"""The path backend: agrees with the raster backend where both are exact, its path-replay
gradients are the gradients of its own estimator, runs reproduce, and subsurface light
really travels under the surface."""

import numpy as np
import pytest
import torch
from synthetic import render_references, write_job

from pbrfit import losses as L
from pbrfit.job import load_job
from pbrfit.params import ParameterSpace, normalize_material
from pbrfit.pathtrace import PathRenderer, PathSettings
from pbrfit.render import RasterRenderer, SampleCounts
from pbrfit.subsurface_walk import SubsurfaceWalk

MATERIALS = {
    "plastic": {"base_color": [0.05, 0.2, 0.6], "roughness": 0.3},
    "metal": {"base_color": [1.0, 0.77, 0.33], "metallic": 1.0, "roughness": 0.3},
    "anisotropic_metal": {"base_color": [0.91, 0.92, 0.92], "metallic": 1.0, "roughness": 0.4,
                          "anisotropic": 0.8, "anisotropic_rotation": 0.1},
    "coat": {"base_color": [0.5, 0.03, 0.03], "roughness": 0.5, "coat_weight": 1.0, "coat_roughness": 0.1},
    "sheen": {"base_color": [0.15, 0.2, 0.45], "roughness": 0.9, "sheen_weight": 1.0, "sheen_roughness": 0.35},
    "thin_film": {"base_color": [0.05, 0.05, 0.05], "roughness": 0.25, "thin_film_thickness": 350.0},
}


@pytest.fixture(scope="module")
def sphere(tmp_path_factory):
    """A tessellated sphere (convex: no interreflection) under a sky with a sun."""
    d = tmp_path_factory.mktemp("path_sphere")
    job = write_job(d, size=40, cameras=1)
    render_references(job, {"base_color": [0.5, 0.5, 0.5]})
    return load_job(job).scene


def _material(values):
    space = ParameterSpace(normalize_material(values), [])
    return space.material(space.initial_vector())


@pytest.mark.parametrize("name", sorted(MATERIALS))
def test_path_agrees_with_raster_on_a_convex_part(sphere, name):
    """Mean ΔE2000 between the backends stays below 0.5 beyond Monte Carlo noise; the noise
    is measured as the ΔE2000 between two path renders with independent seeds."""
    m = _material(MATERIALS[name])
    raster = RasterRenderer(sphere, SampleCounts(256, 32, 128, 64), seed=0)
    path = PathRenderer(sphere, PathSettings(spp=256, max_depth=3), seed=0)
    geo = raster.prepare(0).geometry
    white = raster.environment(0).mean_luminance
    q = geo.loss_pixels
    a = raster.shade(0, m, q).detach() / white
    b1 = path.shade(0, m, q).detach() / white
    path.next_iteration()
    b2 = path.shade(0, m, q).detach() / white
    noise = float(L.de2000(b1, b2))
    diff = float(L.de2000(a, 0.5 * (b1 + b2)))
    # the average of two renders carries about half the noise of the pair's difference
    assert diff < 0.5 + 0.5 * noise, (name, diff, noise)
    assert abs(float(a.mean()) / float(b1.mean()) - 1) < 0.03, name


def test_path_replay_gradient_is_the_gradient_of_the_estimator():
    """PRB (constant memory) must equal torch's autograd through the whole recorded path
    computation (memory growing with depth) for the same paths."""
    import json
    from pathlib import Path

    case = Path(__file__).resolve().parents[1] / "examples" / "demo"
    scene = load_job(case / "job.toml").scene  # Suzanne: paths bounce off the part
    truth = json.loads((case / "truth.json").read_text())["material"]
    names = ["base_color", "roughness", "specular_ior_level", "metallic"]
    space = ParameterSpace(normalize_material(dict(truth, metallic=0.3)), names)
    r = PathRenderer(scene, PathSettings(spp=8, max_depth=4), seed=3)
    q = r.prepare(0).geometry.loss_pixels[::10]
    w = torch.rand(len(q), 3, generator=torch.Generator().manual_seed(0))
    seed = r.seeds(0)[0]
    r.seeds = lambda vi: (seed, seed)  # same paths for the image and its gradient

    u = space.initial_vector().clone().requires_grad_(True)
    (r.shade(0, space.material(u), q) * w).sum().backward()
    prb = u.grad.clone()

    u2 = space.initial_vector().clone().requires_grad_(True)
    paths = r.path_radiance(0, space.material(u2), q, seed, attached=True)
    (paths.reshape(len(q), 8, 3).mean(1) * w).sum().backward()
    assert torch.allclose(prb, u2.grad, rtol=1e-3, atol=1e-4 * float(u2.grad.abs().max())), (prb, u2.grad)
    assert float(prb.abs().sum()) > 0
    # interreflection is there: more depth, more light
    direct = PathRenderer(scene, PathSettings(spp=8, max_depth=1), seed=3)
    m = space.material(space.initial_vector())
    assert float(r.shade(0, m, q).mean()) > 1.01 * float(direct.shade(0, m, q).mean())


def test_seed_schedule_reproduces_and_decorrelates(sphere):
    m = _material(MATERIALS["plastic"])
    a, b = PathRenderer(sphere, PathSettings(8, 2), seed=5), PathRenderer(sphere, PathSettings(8, 2), seed=5)
    q = a.prepare(0).geometry.loss_pixels
    assert torch.equal(a.shade(0, m, q), b.shade(0, m, q))
    primal, adjoint = a.seeds(0)
    assert primal != adjoint
    first = a.shade(0, m, q)
    a.next_iteration()
    assert not torch.equal(first, a.shade(0, m, q))
    assert a.seeds(0) != b.seeds(0)


def test_block_subsets_are_whole_blocks_and_errors_compare_their_means(sphere):
    """A renderer with ``block`` picks whole blocks of loss pixels, at most max_loss_pixels of
    them; the unbiased error then has one term per block, of the blocks' mean radiances, and
    the references' noise in a block mean is smaller than in its pixels."""
    from pbrfit.objective import Objective, unbiased_relative_errors
    from pbrfit.scene_renderer import pixel_blocks

    r = PathRenderer(sphere, PathSettings(4, 2), seed=3, max_loss_pixels=128, block=4)
    geo = r.prepare(0).geometry
    q = r.train_subsets[0]
    blocks, counts = np.unique(pixel_blocks(geo, q, 4), return_counts=True)
    assert len(q) == 128 and (counts == 16).all() and len(blocks) == 8
    assert set(q) <= set(geo.loss_pixels)
    y, x = geo.pixels[q] // geo.width, geo.pixels[q] % geo.width
    assert all(len(set(zip(y[k] // 4, x[k] // 4))) == 1 for k in np.split(np.argsort(pixel_blocks(geo, q, 4)), 8))
    obj = Objective(r, [0], {"de2000": 1.0})
    truth = _material({"base_color": [0.5, 0.5, 0.5]})
    (terms,) = unbiased_relative_errors(obj, truth)
    assert terms.shape == (8, 3)
    # by hand: two path sets' block means against the references' block means
    white = obj.whites[0]
    means = []
    r.iteration = 0
    a = r.shade(0, truth, q).numpy() / white
    r.iteration = 1
    b = r.shade(0, truth, q).numpy() / white
    ref = obj.refs[0].numpy()
    order = np.argsort(pixel_blocks(geo, q, 4), kind="stable")
    for x in (a, b, ref):
        means.append(x[order].reshape(8, 16, 3).mean(1))
    expected = (means[0] - means[2]) * (means[1] - means[2]) / (means[2] ** 2 + 0.05 ** 2)
    np.testing.assert_allclose(terms.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_subsurface_light_travels_under_the_surface(sphere):
    """With a long mean free path, light entering the lit side comes out on the shadowed
    side: the random walk lowers the contrast between the sun-facing and the shadowed pixels."""
    base = {"base_color": [0.8, 0.8, 0.8], "roughness": 0.5}
    # mean free path 0.5 (Cycles' radius x scale / 4 pi)
    sss = dict(base, subsurface_weight=1.0, subsurface_radius=[1.0, 1.0, 1.0], subsurface_scale=2 * np.pi)
    r = PathRenderer(sphere, PathSettings(spp=64, max_depth=3), seed=0)
    q = r.prepare(0).geometry.loss_pixels
    lam = r.shade(0, _material(base), q).detach()
    walk = r.shade(0, _material(sss), q).detach()
    y = lam.mean(-1)
    dark, bright = y < torch.quantile(y, 0.25), y > torch.quantile(y, 0.75)

    def contrast(img):
        return float(img[bright].mean()) / float(img[dark].mean())

    assert contrast(walk) < 0.95 * contrast(lam), (contrast(walk), contrast(lam))
    # the single-scattering albedo inversion: a thick slab reflects about Base Color
    sigma_t, alpha, _ = SubsurfaceWalk.coefficients({"base_color": torch.tensor([0.2, 0.5, 0.8]),
                                                      "subsurface_radius": torch.tensor([1.0, 1.0, 1.0]),
                                                      "subsurface_scale": torch.tensor([0.1])})
    assert torch.allclose(sigma_t, torch.full((3,), 40 * np.pi))  # 1 / (0.1 / (4 pi))
    assert bool((alpha[1:] > alpha[:-1]).all()) and float(alpha.max()) < 1.0


def test_walks_enter_by_refraction_as_cycles_random_walk():
    """Every walk enters by refraction through the GGX interface (Cycles' Random Walk; the 50 %
    cosine entry is Random Walk (Skin)'s): on a near-smooth part seen at 60 degrees all walks
    take Snell's direction, with the IOR that Specular IOR Level sets, as Cycles' eta."""
    from pbrfit.microfacet import F0_from_ior, ior_from_sqrt_F0

    n = 4096
    frame = torch.eye(3).expand(n, 3, 3)
    theta = np.radians(60.0)
    wo = torch.tensor([np.sin(theta), 0.0, np.cos(theta)], dtype=torch.float32).expand(n, 3)
    u = torch.rand(n, 2, generator=torch.Generator().manual_seed(0))
    for level, ior in ((0.5, 1.5), (0.8, float(ior_from_sqrt_F0(F0_from_ior(torch.tensor(1.5)).mul(1.6).sqrt())))):
        m = {"ior": torch.tensor(1.5), "roughness": torch.tensor(0.0), "specular_ior_level": torch.tensor(level)}
        d = SubsurfaceWalk._entry(m, frame, wo, u)
        assert (d[:, 2] < 0).all()
        sin_t = np.sin(theta) / ior
        expected = np.array([-sin_t, 0.0, -np.sqrt(1 - sin_t ** 2)])
        dev = np.linalg.norm(d - expected, axis=-1)  # GGX's tails at alpha 1e-4: a few 1e-3
        assert np.median(dev) < 1e-4 and dev.max() < 0.01, (level, np.median(dev), dev.max())
    # a rough interface spreads the walks around that direction, still into the part
    m = {"ior": torch.tensor(1.5), "roughness": torch.tensor(0.6)}
    d = SubsurfaceWalk._entry(m, frame, wo, u)
    assert (d[:, 2] < 0).all() and d[:, 0].std() > 0.05


def test_subsurface_parameters_get_gradients(sphere):
    names = ["subsurface_weight", "subsurface_scale", "subsurface_radius"]
    values = normalize_material({"base_color": [0.8, 0.7, 0.6], "subsurface_weight": 0.8,
                                 "subsurface_radius": [1.0, 0.5, 0.25], "subsurface_scale": 0.3})
    space = ParameterSpace(values, names)
    r = PathRenderer(sphere, PathSettings(spp=8, max_depth=2), seed=1)
    q = r.prepare(0).geometry.loss_pixels
    u = space.initial_vector().clone().requires_grad_(True)
    r.shade(0, space.material(u), q).sum().backward()
    assert torch.isfinite(u.grad).all() and bool((u.grad != 0).all()), u.grad


def test_backend_options_are_checked():
    from pbrfit.errors import InputError
    from pbrfit.fit import FitOptions

    with pytest.raises(InputError, match="backend"):
        FitOptions(backend="cycles").validate()
    with pytest.raises(InputError, match="path_spp"):
        FitOptions(path_spp=64, path_max_spp=8).validate()
    with pytest.raises(InputError, match="path_iterations"):
        FitOptions(path_iterations=-1).validate()
    assert FitOptions().backend == "auto"
