"""One material mapping, both directions: what pbrfit writes is read back as the material it
wrote, and what Blender's exporter writes is read with Blender's conventions.

Oracles: the material written (write_back -> read_stage must give it back, to 1e-6), Blender
itself (its own exporter's stage against the socket values Blender reports), and the
MaterialX document parsed with MaterialX's own API. Where a format carries a material only
up to Blender-equivalent choices (the dielectric F0 as an IOR at level 0.5, the mean free
path as radius x scale) the comparison is of what Cycles renders: the effective IOR and the
mean free path.
"""

from __future__ import annotations

import math

import MaterialX as mx
import numpy as np
import pytest
import stage_builders as sb
from pxr import Usd, UsdShade

from pbrfit.export.materialx import material_names, write_materialx
from pbrfit.export.usd_material import SHADER_NAMES
from pbrfit.material_mapping import effective_ior, from_openpbr, to_openpbr
from pbrfit.params import PARAMETER_NAMES, PRESETS, normalize_material
from pbrfit.usd_stage import read_stage
from pbrfit.writeback_usd import write_back

#: One material per fit preset, with that preset's parameters away from their defaults.
PRESET_MATERIALS = {
    "plastic": {"base_color": [0.05, 0.2, 0.6], "roughness": 0.3, "ior": 1.45, "specular_ior_level": 0.6},
    "metal": {"base_color": [1.0, 0.77, 0.33], "metallic": 1.0, "roughness": 0.25,
              "specular_tint": [1.0, 0.9, 0.8]},
    "brushed_metal": {"base_color": [0.91, 0.92, 0.92], "metallic": 1.0, "roughness": 0.4,
                      "specular_tint": [0.95, 0.95, 1.0], "anisotropic": 0.8, "anisotropic_rotation": 0.1},
    "coated_paint": {"base_color": [0.5, 0.03, 0.03], "metallic": 0.2, "roughness": 0.5, "coat_weight": 0.9,
                     "coat_roughness": 0.05, "coat_ior": 1.55, "coat_tint": [0.95, 0.9, 1.0]},
    "fabric": {"base_color": [0.15, 0.2, 0.45], "roughness": 0.9, "sheen_weight": 0.8, "sheen_roughness": 0.35,
               "sheen_tint": [0.9, 0.8, 0.7]},
    "thin_film": {"base_color": [0.05, 0.05, 0.05], "roughness": 0.25, "specular_ior_level": 0.55,
                  "thin_film_thickness": 350.0, "thin_film_ior": 1.8},
    "subsurface": {"base_color": [0.8, 0.6, 0.5], "roughness": 0.45, "subsurface_weight": 0.7,
                   "subsurface_radius": [1.0, 0.4, 0.2], "subsurface_scale": 0.3},
    "all": {"base_color": [0.6, 0.3, 0.1], "metallic": 0.3, "roughness": 0.35, "ior": 1.45,
            "specular_ior_level": 0.7, "specular_tint": [1.0, 0.9, 0.8], "anisotropic": 0.6,
            "anisotropic_rotation": 0.625, "coat_weight": 0.8, "coat_roughness": 0.1, "coat_ior": 1.6,
            "coat_tint": [0.9, 0.95, 1.0], "sheen_weight": 0.3, "sheen_roughness": 0.4,
            "sheen_tint": [0.5, 0.6, 0.7], "subsurface_weight": 0.2, "subsurface_radius": [2.0, 1.0, 0.5],
            "subsurface_scale": 0.1, "thin_film_thickness": 350.0, "thin_film_ior": 1.8},
}
#: Parameters every OpenPBR reading must give back unchanged (the rest: see the module docstring).
CARRIED = [n for n in PARAMETER_NAMES
           if n not in ("ior", "specular_ior_level", "subsurface_radius", "subsurface_scale")]


def test_there_is_a_material_for_every_preset():
    assert set(PRESET_MATERIALS) == set(PRESETS)


def assert_same(read: dict, original: dict, names=PARAMETER_NAMES, rel=1e-6, abs_=1e-6):
    o = normalize_material(original)
    for n in names:
        assert np.allclose(read[n], o[n], rtol=rel, atol=abs_), (n, read[n], o[n])


def assert_renders_the_same(read: dict, original: dict, rel=1e-6, abs_=1e-6):
    """Equal where the format is exact; otherwise equal in what Cycles renders."""
    o = normalize_material(original)
    assert_same(read, o, CARRIED, rel, abs_)
    assert math.isclose(effective_ior(read["ior"], read["specular_ior_level"]),
                        effective_ior(o["ior"], o["specular_ior_level"]), rel_tol=rel), "effective ior"
    assert np.allclose(np.multiply(read["subsurface_radius"], read["subsurface_scale"]),
                       np.multiply(o["subsurface_radius"], o["subsurface_scale"]), rtol=rel, atol=abs_)


def _written_back(tmp_path, material):
    path = sb.make_stage(tmp_path / "s.usda")
    stage = Usd.Stage.Open(str(path))
    write_back(stage, "/World/Part", material)
    return stage


# --- what pbrfit writes ------------------------------------------------------------------

@pytest.mark.parametrize("preset", sorted(PRESET_MATERIALS))
def test_write_back_then_read_stage_gives_the_material_back(tmp_path, preset):
    """The exact values pbrfit stored beside the shaders win: every parameter to 1e-6."""
    stage = _written_back(tmp_path, PRESET_MATERIALS[preset])
    c = read_stage(stage)
    assert c.material_source.endswith(f"/{SHADER_NAMES['openpbr']} (OpenPBR)")
    assert_same(c.material, PRESET_MATERIALS[preset])


@pytest.mark.parametrize("preset", sorted(PRESET_MATERIALS))
def test_pbrfit_openpbr_network_alone_reads_back(tmp_path, preset):
    """Without the stored values (a tool that drops customData), the OpenPBR network is read
    with pbrfit's own conventions: anisotropy, its rotation graph, coat and thin film."""
    stage = _written_back(tmp_path, PRESET_MATERIALS[preset])
    material = stage.GetPrimAtPath("/World/Looks/pbrfit_Part")
    material.ClearCustomDataByKey("pbrfit")
    c = read_stage(stage)
    assert_renders_the_same(c.material, PRESET_MATERIALS[preset])


def test_an_edited_shader_wins_over_stale_stored_values(tmp_path):
    original = PRESET_MATERIALS["brushed_metal"]
    stage = _written_back(tmp_path, original)
    shader = UsdShade.Shader(stage.GetPrimAtPath(f"/World/Looks/pbrfit_Part/{SHADER_NAMES['openpbr']}"))
    shader.GetInput("base_color").Set((0.5, 0.25, 0.125))  # a user's edit after the write-back
    c = read_stage(stage)
    assert_same(c.material, dict(original, base_color=[0.5, 0.25, 0.125]), CARRIED)


@pytest.mark.parametrize("preset", sorted(PRESET_MATERIALS))
def test_materialx_document_reads_back(tmp_path, preset):
    """The .mtlx's open_pbr_surface inputs and tangent rotation, parsed with MaterialX's own
    API, through the one inverse mapping. MaterialX writes floats with 6 significant digits,
    so the document carries the material to 1e-5."""
    path = tmp_path / "m.mtlx"
    write_materialx(PRESET_MATERIALS[preset], path, name="m")
    doc = mx.createDocument()
    mx.readFromXmlFile(doc, str(path))
    shader = doc.getNode(material_names("m")["openpbr_shader"])
    inputs = {i.getName(): i.getValue() for i in shader.getInputs() if i.hasValueString()}
    inputs = {k: (tuple(v.asTuple()) if isinstance(v, mx.Color3) else v) for k, v in inputs.items()}
    rotate = doc.getNode("m_openpbr_tangent_rotate")
    rotation = rotate.getInputValue("amount") if rotate is not None else None
    assert (rotation is not None) == (PRESET_MATERIALS[preset].get("anisotropic_rotation", 0) != 0)
    assert_renders_the_same(from_openpbr(inputs, rotation), PRESET_MATERIALS[preset], rel=1e-5, abs_=1e-5)


# --- what others write -------------------------------------------------------------------

def test_blender_exporter_openpbr_is_read_with_blenders_conventions(blender_dir):
    """Blender's own exporter (0.7 x Anisotropic, roughness as is, rotate3d amount
    -(360 x rotation + 90)) against the socket values Blender reports."""
    folder = blender_dir
    truth = sb.truth(folder)["rich_material"]
    c = read_stage(folder / "rich.usda")
    assert c.material_source.endswith("(OpenPBR)")
    assert_same(c.material, truth, sorted(truth))


def test_another_writers_openpbr_means_what_openpbr_defines(tmp_path):
    """An OpenPBR shader neither pbrfit nor Blender wrote is read with OpenPBR's own meaning
    (Cycles' GGX alphas), which is pbrfit's inverse mapping."""
    material = PRESET_MATERIALS["brushed_metal"]
    inputs = to_openpbr(material).inputs
    path = sb.make_stage(tmp_path / "s.usda", material=dict(kind="openpbr", inputs=inputs))
    c = read_stage(path)
    assert c.material_source == "/World/Looks/Mat/Shader (OpenPBR)"
    assert_renders_the_same(c.material, dict(material, anisotropic_rotation=0.0))
