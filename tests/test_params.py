"""Parameter space: bounds, reparameterization, finite gradients."""

import math

import pytest
import torch

from pbrfit.errors import InputError
from pbrfit.params import PARAMETERS, ParameterSpace, default_material, normalize_material


def test_defaults_are_blender_principled_defaults():
    d = default_material()
    assert d["base_color"] == [0.8, 0.8, 0.8] and d["roughness"] == 0.5 and d["ior"] == 1.5
    assert d["specular_ior_level"] == 0.5 and d["coat_roughness"] == 0.03 and d["thin_film_ior"] == 1.33


def test_round_trip_and_bounds():
    values = default_material() | {"roughness": 0.2, "metallic": 0.7, "base_color": [0.1, 0.5, 0.9],
                                    "subsurface_scale": 0.3, "thin_film_thickness": 400.0}
    space = ParameterSpace(values, ["roughness", "metallic", "base_color", "subsurface_scale",
                                    "thin_film_thickness"])
    back = space.values(space.initial_vector())
    for n in space.fit:
        assert back[n] == pytest.approx(values[n], rel=1e-6, abs=1e-6)
    # any unconstrained vector lands inside the bounds
    for fill in (-50.0, 50.0):
        u = torch.full((space.dim,), fill, dtype=torch.float64)
        m = space.values(u)
        for n in space.fit:
            lo, hi = space.bounds_of(n)
            vals = m[n] if isinstance(m[n], list) else [m[n]]
            assert all(lo - 1e-9 <= v <= hi + 1e-9 for v in vals)


def test_roughness_is_linear_in_alpha_and_gradient_finite_at_zero():
    space = ParameterSpace(default_material() | {"roughness": 0.0}, ["roughness"])
    u = space.initial_vector().requires_grad_(True)
    r = space.material(u, dtype=torch.float64)["roughness"]
    (r**2).sum().backward()
    assert torch.isfinite(u.grad).all() and r.item() < 0.05
    # alpha = r^2 is the sigmoid-mapped quantity
    t = torch.sigmoid(torch.tensor(0.3, dtype=torch.float64))
    roughness = space.material(torch.tensor([0.3], dtype=torch.float64), torch.float64)["roughness"].item()
    assert roughness**2 == pytest.approx(float(t))


def test_bad_names_and_values_are_input_errors():
    with pytest.raises(InputError, match="unknown parameter"):
        normalize_material({"rougness": 0.3})
    with pytest.raises(InputError, match="not finite"):
        normalize_material({"roughness": math.nan})
    with pytest.raises(InputError, match="needs 3"):
        normalize_material({"base_color": [1, 2]})
    with pytest.raises(InputError, match="bounds"):
        ParameterSpace(default_material(), ["roughness"], {"roughness": (0.6, 0.2)})


def test_every_parameter_has_a_consistent_spec():
    for n, s in PARAMETERS.items():
        assert s.lower < s.upper and len(s.default) == s.size
        assert s.lower <= min(s.default) and max(s.default) <= s.upper, n
