"""Environment map: frame convention, sampling pdf, prefiltering."""

import math

import numpy as np
import pytest
import torch

from pbrfit.envmap import EnvironmentMap, directions_to_uv, uv_to_directions
from pbrfit.scene import Environment


def _env(h=64, w=128, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.gamma(0.5, 1.0, size=(h, w, 3)).astype(np.float32)
    img[5:8, 30:34] += 200.0  # a sun
    return Environment(img)


def test_dome_frame_convention():
    # +Y pole at the top row, image centre toward +Z, u = 0.25 toward +X, 0.75 toward -X
    d = torch.tensor([[0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0], [-1.0, 0, 0], [0, -1.0, 0]])
    uv = directions_to_uv(d)
    assert uv[0, 1] < 1e-3 and uv[4, 1] > 1 - 1e-3
    assert torch.allclose(uv[1:4, 0], torch.tensor([0.5, 0.25, 0.75]), atol=1e-6)
    back = uv_to_directions(directions_to_uv(torch.nn.functional.normalize(torch.randn(100, 3), dim=-1)))
    assert torch.allclose(uv_to_directions(uv[1:4]), d[1:4], atol=1e-5)
    assert torch.allclose(back.norm(dim=-1), torch.ones(100), atol=1e-5)


def test_radiance_lookup_reads_the_right_texel():
    img = np.zeros((32, 64, 3), np.float32)
    img[16, 16] = [1, 2, 3]  # u = (16.5)/64 ~ 0.258 (toward +X), v = 16.5/32 (just below the horizon)
    env = EnvironmentMap(Environment(img))
    uv = torch.tensor([[16.5 / 64, 16.5 / 32]], dtype=torch.float64)
    d = uv_to_directions(uv).float()
    assert torch.allclose(env.radiance(d)[0], torch.tensor([1.0, 2.0, 3.0]), atol=1e-4)
    assert d[0, 0] > 0.99  # +X


def test_rotation_moves_the_lookup():
    img = np.zeros((32, 64, 3), np.float32)
    img[:, 31:33] = 1.0  # the image centre column: +Z in the dome frame
    r = np.array([[0, 0, 1.0], [0, 1, 0], [-1.0, 0, 0]])  # world = R dome: dome +Z -> world +X
    env = EnvironmentMap(Environment(img, world_from_dome=r))
    assert env.radiance(torch.tensor([[1.0, 0, 0]]))[0, 0] > 0.9
    assert env.radiance(torch.tensor([[0, 0, 1.0]]))[0, 0] < 1e-3


def test_sampling_pdf_is_normalized_and_matches_density():
    env = EnvironmentMap(_env())
    g = torch.Generator().manual_seed(1)
    d, pdf = env.sample(200_000, g)
    assert torch.allclose(d.norm(dim=-1), torch.ones(len(d)), atol=1e-4)
    # E[1/pdf] = 4 pi (the sphere's solid angle)
    assert abs(float((1.0 / pdf.double()).mean()) - 4 * math.pi) < 0.1
    # the estimator of the mean radiance from importance samples agrees with the average
    est = (env.radiance(d).double() / pdf[:, None].double()).mean(0) / (4 * math.pi)
    assert np.allclose(est.numpy(), env.mean_radiance, rtol=0.03)


def test_prefiltered_levels_keep_the_mean():
    env = EnvironmentMap(_env())
    g = torch.Generator().manual_seed(2)
    d = torch.nn.functional.normalize(torch.randn(50_000, 3, generator=g), dim=-1)
    l0 = env.radiance(d).mean(0)
    l3 = env.radiance(d, 3.0).mean(0)
    assert torch.allclose(l0, l3, rtol=0.1)


def test_one_environment_map_per_content():
    """Views lit by the same HDRI share one EnvironmentMap (built once per process), a
    different rotation or scale gets its own."""
    from pbrfit.envmap import environment_map

    a, b = _env(seed=3), _env(seed=3)  # equal content, different objects
    assert environment_map(a) is environment_map(b)
    turned = Environment(a.image, world_from_dome=np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]]))
    brighter = Environment(a.image, scale=np.array([2.0, 2.0, 2.0]))
    assert environment_map(turned) is not environment_map(a)
    assert environment_map(brighter) is not environment_map(a)
    assert environment_map(brighter).mean_luminance == pytest.approx(2 * environment_map(a).mean_luminance)
