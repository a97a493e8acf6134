"""MaterialX export and the OpenPBR / Standard Surface mappings.

Oracles are independent of pbrfit's code: the MaterialX data libraries loaded here from the
installed package (node definitions, validation), and the formulas of Cycles' Principled BSDF
(svm/closure.h) and of the MaterialX 1.39 node graphs (open_pbr_surface.mtlx,
roughness_anisotropy, rotate3d) written out below.
"""

from __future__ import annotations

import math
import os

import MaterialX as mx
import numpy as np
import pytest

from pbrfit.errors import InputError
from pbrfit.export import materialx as mtlx_mod
from pbrfit.export.materialx import materialx_document, write_materialx
from pbrfit.material_mapping import (
    TargetMapping,
    from_openpbr,
    from_standard_surface,
    to_openpbr,
    to_standard_surface,
)
from pbrfit.params import normalize_material

RICH = {
    "base_color": [0.6, 0.3, 0.1],
    "metallic": 0.0,
    "roughness": 0.35,
    "ior": 1.45,
    "specular_ior_level": 0.7,
    "specular_tint": [1.0, 0.9, 0.8],
    "anisotropic": 0.6,
    "anisotropic_rotation": 0.125,
    "coat_weight": 0.8,
    "coat_roughness": 0.1,
    "coat_ior": 1.6,
    "coat_tint": [0.9, 0.95, 1.0],
    "sheen_weight": 0.3,
    "sheen_roughness": 0.4,
    "sheen_tint": [0.5, 0.6, 0.7],
    "subsurface_weight": 0.2,
    "subsurface_radius": [2.0, 1.0, 0.5],
    "subsurface_scale": 0.1,
    "thin_film_thickness": 350.0,
    "thin_film_ior": 1.8,
}


# --- independent oracles -----------------------------------------------------------------


def fresnel_f0(ior):
    return ((ior - 1.0) / (ior + 1.0)) ** 2


def cycles_dielectric_f0(ior, level):
    """Cycles: f0 = F0_from_ior(ior) * 2 * specular_ior_level."""
    return fresnel_f0(ior) * 2.0 * level


def cycles_alphas(roughness, anisotropic):
    """Cycles Principled: aspect = sqrt(1 - 0.9 a); (r^2 / aspect, r^2 * aspect)."""
    aspect = math.sqrt(1.0 - 0.9 * anisotropic)
    return roughness**2 / aspect, roughness**2 * aspect


def openpbr_alphas(roughness, anisotropy):
    """NG_open_pbr_anisotropy in open_pbr_surface.mtlx."""
    q = 1.0 - anisotropy
    ax = roughness**2 * math.sqrt(2.0 / (1.0 + q * q))
    return ax, q * ax


def mx_roughness_anisotropy(roughness, anisotropy):
    """mx_roughness_anisotropy.glsl (used by standard_surface)."""
    r2 = min(max(roughness * roughness, 1e-6), 1.0)
    if anisotropy <= 0:
        return r2, r2
    aspect = math.sqrt(1.0 - min(anisotropy, 0.98))
    return min(r2 / aspect, 1.0), r2 * aspect


def rotate_right_handed(v, axis, angle):
    """Rodrigues (Cycles rotate_around_axis)."""
    v, k = np.asarray(v, float), np.asarray(axis, float)
    return v * math.cos(angle) + np.cross(k, v) * math.sin(angle) + k * np.dot(k, v) * (1 - math.cos(angle))


def mx_rotate3d(v, degrees, axis):
    """mx_rotate_vector3.glsl: in*c + cross(in, axis)*s + axis*dot(axis, in)*(1-c)."""
    v, k = np.asarray(v, float), np.asarray(axis, float)
    a = math.radians(degrees)
    return v * math.cos(a) + np.cross(v, k) * math.sin(a) + k * np.dot(k, v) * (1 - math.cos(a))


@pytest.fixture(scope="module")
def libraries():
    lib = mx.createDocument()
    mx.loadLibraries(mx.getDefaultDataLibraryFolders(), mx.getDefaultDataSearchPath(), lib)
    return lib


def read_back(path, libraries):
    doc = mx.createDocument()
    options = mx.XmlReadOptions()
    options.readComments = True
    mx.readFromXmlFile(doc, str(path), mx.FileSearchPath(), options)
    doc.setDataLibrary(libraries)
    return doc


def value(node, name):
    v = node.getInputValue(name)
    if isinstance(v, mx.Color3):
        return tuple(v)
    return v


# --- the written document ----------------------------------------------------------------


def test_written_document_validates_against_real_libraries(tmp_path, libraries):
    path = tmp_path / "paint.mtlx"
    losses = write_materialx(RICH, path, name="paint")
    doc = read_back(path, libraries)
    ok, message = doc.validate()
    assert ok, message
    mats = {m.getName(): m for m in doc.getMaterialNodes()}
    assert set(mats) == {"paint_openpbr", "paint_standard_surface"}
    op = doc.getNode("paint_openpbr_shader")
    ss = doc.getNode("paint_standard_surface_shader")
    assert op.getNodeDef().getName() == "ND_open_pbr_surface_surfaceshader"
    assert ss.getNodeDef().getName().startswith("ND_standard_surface_surfaceshader")
    assert mats["paint_openpbr"].getInput("surfaceshader").getNodeName() == op.getName()
    assert mats["paint_standard_surface"].getInput("surfaceshader").getNodeName() == ss.getName()
    # every authored input exists in the node definition with the same type
    for node in (op, ss):
        nd = node.getNodeDef()
        for inp in node.getInputs():
            assert nd.getActiveInput(inp.getName()).getType() == inp.getType(), inp.getName()
    assert losses and all(isinstance(l, str) for l in losses)


def test_values_reread_with_correct_units(tmp_path, libraries):
    path = tmp_path / "m.mtlx"
    iso = dict(RICH, anisotropic=0.0)
    write_materialx(iso, path)
    doc = read_back(path, libraries)
    op = doc.getNode("pbrfit_material_openpbr_shader")
    ss = doc.getNode("pbrfit_material_standard_surface_shader")
    assert doc.getColorSpace() == "lin_rec709"
    assert value(op, "base_color") == pytest.approx(RICH["base_color"], rel=1e-5)
    assert value(op, "specular_roughness") == pytest.approx(0.35, rel=1e-5)
    assert value(op, "base_metalness") == pytest.approx(0.0)
    # thin film: micrometres in OpenPBR (350 nm -> 0.35 um), enabled; nanometres in standard_surface
    assert value(op, "thin_film_thickness") == pytest.approx(0.35, rel=1e-5)
    assert value(op, "thin_film_weight") == pytest.approx(1.0)
    assert value(op, "thin_film_ior") == pytest.approx(1.8, rel=1e-5)
    assert value(ss, "thin_film_thickness") == pytest.approx(350.0, rel=1e-5)
    assert value(ss, "thin_film_IOR") == pytest.approx(1.8, rel=1e-5)
    # coat: 1:1, no coat darkening (Cycles has none)
    assert value(op, "coat_weight") == pytest.approx(0.8, rel=1e-5)
    assert value(op, "coat_roughness") == pytest.approx(0.1, rel=1e-5)
    assert value(op, "coat_ior") == pytest.approx(1.6, rel=1e-5)
    assert value(op, "coat_color") == pytest.approx(RICH["coat_tint"], rel=1e-5)
    assert value(op, "coat_darkening") == pytest.approx(0.0)
    assert value(ss, "coat") == pytest.approx(0.8, rel=1e-5)
    assert value(ss, "coat_IOR") == pytest.approx(1.6, rel=1e-5)
    # sheen -> fuzz
    assert value(op, "fuzz_weight") == pytest.approx(0.3, rel=1e-5)
    assert value(op, "fuzz_color") == pytest.approx(RICH["sheen_tint"], rel=1e-5)
    assert value(op, "fuzz_roughness") == pytest.approx(0.4, rel=1e-5)
    # subsurface: per-channel mean free path radius * scale is preserved
    mfp = np.array(RICH["subsurface_radius"]) * RICH["subsurface_scale"]
    radius = np.array(value(op, "subsurface_radius_scale")) * value(op, "subsurface_radius")
    assert radius == pytest.approx(mfp, rel=1e-5)
    assert max(value(op, "subsurface_radius_scale")) == pytest.approx(1.0)
    assert np.array(value(ss, "subsurface_radius")) * value(ss, "subsurface_scale") == pytest.approx(mfp, rel=1e-5)
    assert value(op, "subsurface_color") == pytest.approx(RICH["base_color"], rel=1e-5)


def test_thin_film_off_when_thickness_zero():
    inputs = to_openpbr(dict(RICH, thin_film_thickness=0.0)).inputs
    assert inputs["thin_film_weight"] == 0.0 and inputs["thin_film_thickness"] == 0.0


def test_losses_written_into_document(tmp_path, libraries):
    path = tmp_path / "m.mtlx"
    losses = write_materialx(RICH, path)
    text = path.read_text()
    assert "<!--" in text and "pbrfit" in text
    doc = read_back(path, libraries)
    comments = [c.getDocString() for c in doc.getChildren() if c.getCategory() == "comment"]
    assert any("specular_tint approximated" in c for c in comments)
    assert any("standard_surface: sheen_weight approximated" in c for c in comments)
    std_doc = doc.getNode("pbrfit_material_standard_surface").getDocString()
    assert "sheen_weight approximated" in std_doc
    assert any(l.startswith("open_pbr_surface: coat_tint approximated") for l in losses)
    # a plain dielectric loses nothing in OpenPBR
    assert to_openpbr({"base_color": [0.2, 0.4, 0.6], "roughness": 0.3}).losses == []


# --- the conversions against Cycles and the MaterialX graphs ------------------------------


@pytest.mark.parametrize("ior,level", [(1.5, 0.5), (1.45, 0.7), (1.33, 0.2), (2.2, 1.0), (1.5, 0.0)])
def test_specular_ior_level_gives_blenders_f0(ior, level):
    mat = {"ior": ior, "specular_ior_level": level, "metallic": 0.4}
    op = to_openpbr(mat).inputs
    ss = to_standard_surface(mat).inputs
    want = cycles_dielectric_f0(ior, level)
    # OpenPBR graph: F0 = specular_weight * F0(specular_ior); metals scaled by specular_weight
    assert op["specular_weight"] == 1.0
    assert op["specular_weight"] * fresnel_f0(op["specular_ior"]) == pytest.approx(want, abs=1e-12)
    # standard_surface: dielectric_bsdf(weight=specular, ior=specular_IOR); metal edge * specular
    assert ss["specular"] == 1.0
    assert fresnel_f0(ss["specular_IOR"]) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("rough,aniso", [(0.3, 0.2), (0.5, 0.6), (0.2, 1.0)])
def test_anisotropy_matches_cycles_alphas(rough, aniso):
    mat = {"roughness": rough, "anisotropic": aniso}
    op = to_openpbr(mat).inputs
    ss = to_standard_surface(mat).inputs
    want = cycles_alphas(rough, aniso)
    got = openpbr_alphas(op["specular_roughness"], op["specular_roughness_anisotropy"])
    assert got == pytest.approx(want, rel=1e-9)
    got = mx_roughness_anisotropy(ss["specular_roughness"], ss["specular_anisotropy"])
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("rotation", [0.125, 0.3, 0.75])
def test_anisotropic_rotation_matches_cycles_direction(rotation):
    mat = {"anisotropic": 0.5, "anisotropic_rotation": rotation}
    n = np.array([0.0, 0.0, 1.0])
    t = np.array([1.0, 0.0, 0.0])
    want = rotate_right_handed(t, n, 2 * math.pi * rotation)
    op = to_openpbr(mat)
    assert mx_rotate3d(t, op.tangent_rotation, n) == pytest.approx(want, abs=1e-12)
    ss = to_standard_surface(mat).inputs  # standard_surface: rotate3d(tangent, rotation * 360, normal)
    assert mx_rotate3d(t, ss["specular_rotation"] * 360.0, n) == pytest.approx(want, abs=1e-12)


def test_rotation_graph_in_document(libraries):
    doc = materialx_document(RICH, name="brushed")
    shader = doc.getNode("brushed_openpbr_shader")
    unit = shader.getConnectedNode("geometry_tangent")
    assert unit.getCategory() == "normalize"
    rot = unit.getConnectedNode("in")
    assert rot.getCategory() == "rotate3d"
    assert rot.getInputValue("amount") == pytest.approx(-45.0)
    assert rot.getConnectedNode("in").getCategory() == "tangent"
    assert rot.getConnectedNode("axis").getCategory() == "normal"
    assert rot.getConnectedNode("in").getInputValue("space") == "world"
    iso = materialx_document(dict(RICH, anisotropic_rotation=0.0))
    assert iso.getNode("pbrfit_material_openpbr_shader").getInput("geometry_tangent") is None


def _assert_equivalent(original, back, names):
    o, b = normalize_material(original), normalize_material(back)
    for n in names:
        assert b[n] == pytest.approx(o[n], rel=1e-9, abs=1e-12), n


REPRESENTABLE = [
    "base_color", "metallic", "roughness", "specular_tint", "anisotropic", "anisotropic_rotation",
    "coat_weight", "coat_roughness", "coat_ior", "coat_tint", "sheen_weight", "sheen_roughness",
    "sheen_tint", "subsurface_weight", "transmission_weight", "thin_film_thickness", "thin_film_ior",
]


@pytest.mark.parametrize("to,back", [
    (to_openpbr, lambda tm: from_openpbr(tm.inputs, tm.tangent_rotation)),
    (to_standard_surface, lambda tm: from_standard_surface(tm.inputs)),
])
def test_round_trip(to, back):
    original = dict(RICH, transmission_weight=0.0)
    result = back(to(original))
    _assert_equivalent(original, result, REPRESENTABLE)
    # one Blender-equivalent choice for the two-knob quantities
    o, r = normalize_material(original), result
    assert cycles_dielectric_f0(r["ior"], r["specular_ior_level"]) == pytest.approx(
        cycles_dielectric_f0(o["ior"], o["specular_ior_level"]), rel=1e-9)
    assert np.array(r["subsurface_radius"]) * r["subsurface_scale"] == pytest.approx(
        np.array(o["subsurface_radius"]) * o["subsurface_scale"], rel=1e-9)


# --- failures ----------------------------------------------------------------------------


def test_missing_directory_raises_and_leaves_nothing(tmp_path):
    target = tmp_path / "nope" / "m.mtlx"
    with pytest.raises(InputError, match="does not exist"):
        write_materialx(RICH, target)
    assert not target.parent.exists()
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.mtlx"
    write_materialx(RICH, path)
    before = path.read_text()
    with pytest.raises(InputError):
        write_materialx({"not_a_parameter": 1.0}, path)
    with pytest.raises(InputError):
        write_materialx(RICH, path, name="bad name")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("pbrfit.atomic.os.replace", boom)
    with pytest.raises(InputError, match="cannot replace"):
        write_materialx(dict(RICH, roughness=0.9), path)
    assert path.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["m.mtlx"]


def test_invalid_document_raises(monkeypatch):
    def bogus(material):
        tm = to_openpbr(material)
        return TargetMapping(tm.target, dict(tm.inputs, not_an_openpbr_input=1.0), tm.losses)

    monkeypatch.setattr(mtlx_mod, "to_openpbr", bogus)
    with pytest.raises(RuntimeError, match="does not validate"):
        materialx_document(RICH)
