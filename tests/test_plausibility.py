"""Plausibility flags: quiet for real materials, firing for crafted implausible ones."""

from __future__ import annotations

import math

import pytest

from pbrfit.errors import InputError
from pbrfit.material_mapping import effective_ior, f0_from_ior, ior_from_f0
from pbrfit.params import DEFAULT_FIT, PRESETS, default_material
from pbrfit.plausibility import Flag, check, luminance

# Measured F0 (linear RGB) of metals, Hoffman's table as printed in Real-Time Rendering 4th
# ed., table 9.2.
GOLD_F0 = (1.000, 0.782, 0.344)
SILVER_F0 = (0.972, 0.960, 0.915)
ALUMINIUM_F0 = (0.913, 0.922, 0.924)
TITANIUM_F0 = (0.542, 0.497, 0.449)

GOOD = {
    "red plastic": ({"base_color": (0.45, 0.03, 0.02), "roughness": 0.35, "specular_ior_level": 0.55},
                    PRESETS["plastic"]),
    "gold": ({"base_color": GOLD_F0, "metallic": 1.0, "roughness": 0.25, "specular_tint": (1.0, 0.93, 0.72)},
             PRESETS["metal"]),
    "clear-coated paint": ({"base_color": (0.05, 0.10, 0.40), "roughness": 0.45, "coat_weight": 1.0,
                            "coat_roughness": 0.03, "coat_ior": 1.5}, PRESETS["coated_paint"]),
    "brushed aluminium": ({"base_color": ALUMINIUM_F0, "metallic": 1.0, "roughness": 0.3, "anisotropic": 0.6,
                           "anisotropic_rotation": 0.25}, PRESETS["brushed_metal"]),
    "titanium": ({"base_color": TITANIUM_F0, "metallic": 1.0, "roughness": 0.2}, PRESETS["metal"]),
    "silver": ({"base_color": SILVER_F0, "metallic": 1.0, "roughness": 0.1}, PRESETS["metal"]),
    "velvet": ({"base_color": (0.3, 0.02, 0.05), "roughness": 0.8, "sheen_weight": 0.8, "sheen_roughness": 0.4,
                "sheen_tint": (1.0, 0.8, 0.8)}, PRESETS["fabric"]),
    "oil film on glass-like base": ({"base_color": (0.02, 0.02, 0.025), "roughness": 0.05,
                                     "thin_film_thickness": 450.0, "thin_film_ior": 1.45, "ior": 1.52},
                                    PRESETS["thin_film"]),
    "Blender default, fitted by default": (default_material(), DEFAULT_FIT),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_real_materials_raise_no_flags(name):
    material, fitted = GOOD[name]
    assert check(material, fitted) == []


# (material, fitted, expected parameter, expected severity)
BAD = {
    "half metal": ({"metallic": 0.5, "base_color": (0.8, 0.8, 0.8)}, ["metallic"], "metallic", "warning"),
    "dielectric brighter than snow": ({"base_color": (0.96, 0.95, 0.97)}, ["base_color"], "base_color", "warning"),
    "dielectric blacker than charcoal": ({"base_color": (0.016, 0.014, 0.018)}, ["base_color"], "base_color",
                                         "warning"),
    "dark metal": ({"metallic": 1.0, "base_color": (0.25, 0.25, 0.25)}, ["base_color"], "base_color", "warning"),
    "ior unusual": ({"ior": 2.8}, ["ior"], "ior", "warning"),
    "ior beyond dielectrics": ({"ior": 3.4}, [], "ior", "error"),
    "ior below vacuum": ({"ior": 0.9}, [], "ior", "error"),
    "coat ior unusual": ({"coat_weight": 1.0, "coat_ior": 2.2}, ["coat_ior"], "coat_ior", "warning"),
    "thick film": ({"thin_film_thickness": 1300.0}, ["thin_film_thickness"], "thin_film_thickness", "warning"),
    "film ior unusual": ({"thin_film_thickness": 300.0, "thin_film_ior": 1.1}, ["thin_film_ior"], "thin_film_ior",
                         "warning"),
    "invisible film": ({"thin_film_thickness": 300.0, "thin_film_ior": 1.5, "ior": 1.5},
                       ["thin_film_thickness", "thin_film_ior"], "thin_film_ior", "warning"),
    "rough coat over smooth base": ({"roughness": 0.1, "coat_weight": 1.0, "coat_roughness": 0.4},
                                    ["coat_roughness"], "coat_roughness", "warning"),
    "sheen on metal": ({"metallic": 1.0, "base_color": SILVER_F0, "sheen_weight": 0.5}, ["sheen_weight"],
                       "sheen_weight", "warning"),
    "specular level too low": ({"specular_ior_level": 0.1}, ["specular_ior_level"], "specular_ior_level",
                               "warning"),
    "no specular at all": ({"specular_ior_level": 0.0}, [], "specular_ior_level", "error"),
    "specular level beyond diamond": ({"ior": 2.2, "specular_ior_level": 1.0}, [], "specular_ior_level",
                                      "error"),
    "roughness at upper bound": ({"roughness": 0.997}, ["roughness"], "roughness", "warning"),
    "colour channel clipped at 0": ({"base_color": (0.5, 0.2, 0.0)}, ["base_color"], "base_color", "warning"),
    "log-scaled parameter at bound": ({"subsurface_weight": 1.0, "subsurface_scale": 1.05e-4},
                                      ["subsurface_scale"], "subsurface_scale", "warning"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_implausible_materials_are_flagged(name):
    material, fitted, parameter, severity = BAD[name]
    flags = check(material, fitted)
    assert [(f.parameter, f.severity) for f in flags] == [(parameter, severity)], flags
    message = flags[0].message
    assert "\n" not in message and message.startswith(parameter)


def test_pinned_respects_user_bounds_and_natural_ends():
    # Metal fully on is a legitimate answer, not clipping...
    assert check({"metallic": 1.0, "base_color": GOLD_F0}, ["metallic"]) == []
    # ...but a user-narrowed bound is never natural.
    flags = check({"metallic": 0.05}, ["metallic"], bounds={"metallic": (0.0, 0.05)})
    assert [(f.parameter, "pinned" in f.message) for f in flags] == [("metallic", True)]
    flags = check({"roughness": 0.6}, ["roughness"], bounds={"roughness": (0.2, 0.6)})
    assert [f.parameter for f in flags] == ["roughness"] and "upper bound 0.6" in flags[0].message
    # Not fitted: a value at a bound is the user's choice, not a fit running into a wall.
    assert check({"roughness": 1.0}, []) == []
    # A layer that is off makes its own parameters irrelevant.
    assert check({"coat_weight": 0.0, "coat_roughness": 1.0, "coat_ior": 2.9}, ["coat_roughness"]) == []


def test_flags_order_errors_first_and_say_where_values_came_from():
    flags = check({"metallic": 0.5, "ior": 3.5}, ["metallic"])
    assert [f.severity for f in flags] == ["error", "warning"]
    assert "(given, not fitted)" in flags[0].message and "(fitted)" in flags[1].message
    assert flags[0].as_dict() == {"parameter": "ior", "severity": "error", "message": flags[0].message}
    assert isinstance(flags[0], Flag)


def test_effective_ior_follows_cycles_specular_ior_level():
    # Cycles: F0 = ((n - 1) / (n + 1))^2 * 2 * level, then n' = (1 + sqrt F0) / (1 - sqrt F0).
    assert effective_ior(1.5, 0.5) == 1.5
    f0 = 0.04 * 2 * 0.25
    assert math.isclose(effective_ior(1.5, 0.25), (1 + math.sqrt(f0)) / (1 - math.sqrt(f0)), rel_tol=1e-12)
    assert math.isclose(effective_ior(1.33, 0.5), 1.33)
    assert math.isclose(f0_from_ior(1.5), 0.04)
    assert math.isclose(ior_from_f0(0.04), 1.5)
    assert effective_ior(1.5, 0.0) == 1.0


def test_luminance_uses_bt709_weights():
    assert math.isclose(luminance((1, 1, 1)), 1.0)
    assert math.isclose(luminance((0, 1, 0)), 0.7152)
    # The darkest common metal sits just above the metal threshold.
    assert 0.45 < luminance(TITANIUM_F0) < 0.55


def test_unknown_parameter_is_an_input_error():
    with pytest.raises(InputError, match="unknown parameter 'shininess'"):
        check({"shininess": 1.0}, [])
