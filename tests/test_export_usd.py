"""USD material export: OmniPBR (MDL), UsdPreviewSurface fallback, OpenPBR network.

Checked by re-reading the written layer with pxr, against USD's own UsdPreviewSurface shader
definition (Sdr registry) and the MaterialX node definitions of the OpenPBR network, and
against the reflectance formulas of Cycles, OmniPBR.mdl (F0 = 0.08 * specular_level) and the
UsdPreviewSurface reference graph (F0 from ior; specular workflow F0 = specularColor).
"""

from __future__ import annotations

import os

import MaterialX as mx
import pytest
from pxr import Gf, Sdf, Sdr, Usd, UsdShade

from pbrfit.errors import InputError
from pbrfit.export.usd_material import author_material, write_usd_material
from pbrfit.material_mapping import (
    from_omnipbr,
    from_usd_preview_surface,
    to_omnipbr,
    to_usd_preview_surface,
)
from pbrfit.params import normalize_material

COATED = {
    "base_color": [0.7, 0.1, 0.1],
    "metallic": 0.0,
    "roughness": 0.4,
    "ior": 1.5,
    "specular_ior_level": 0.5,
    "coat_weight": 0.9,
    "coat_roughness": 0.05,
    "coat_ior": 1.55,
    "coat_tint": [1.0, 1.0, 1.0],
    "sheen_weight": 0.25,
    "anisotropic": 0.4,
    "anisotropic_rotation": 0.25,
    "thin_film_thickness": 500.0,
}
PLAIN = {"base_color": [0.2, 0.5, 0.3], "metallic": 0.0, "roughness": 0.6, "ior": 1.45, "specular_ior_level": 0.6}


def f0(ior):
    return ((ior - 1.0) / (ior + 1.0)) ** 2


def cycles_f0(ior, level):
    return f0(ior) * 2.0 * level


@pytest.fixture
def coated_stage(tmp_path):
    path = tmp_path / "coated.usda"
    losses = write_usd_material(COATED, path, name="paint")
    stage = Usd.Stage.Open(str(path))
    return stage, losses, path


def shader_of(material: UsdShade.Material, context: str) -> UsdShade.Shader:
    out = material.GetSurfaceOutput(context) if context else material.GetSurfaceOutput()
    sources, _ = out.GetConnectedSources()
    assert len(sources) == 1
    return UsdShade.Shader(sources[0].source.GetPrim())


def test_omnipbr_clearcoat_shader(coated_stage):
    stage, _, _ = coated_stage
    assert stage.GetDefaultPrim().GetPath() == Sdf.Path("/pbrfit")
    mat = UsdShade.Material(stage.GetPrimAtPath("/pbrfit/paint"))
    assert mat
    mdl = shader_of(mat, "mdl")
    assert mdl.GetImplementationSource() == "sourceAsset"
    assert mdl.GetSourceAsset("mdl").path == "OmniPBR_ClearCoat.mdl"
    assert mdl.GetSourceAssetSubIdentifier("mdl") == "OmniPBR_ClearCoat"
    inp = mdl.GetInput("diffuse_color_constant")
    assert inp.GetTypeName() == Sdf.ValueTypeNames.Color3f
    assert inp.Get() == Gf.Vec3f(0.7, 0.1, 0.1)
    assert mdl.GetInput("enable_clearcoat").GetTypeName() == Sdf.ValueTypeNames.Bool
    assert mdl.GetInput("enable_clearcoat").Get() is True
    assert mdl.GetInput("clearcoat_weight").Get() == pytest.approx(0.9)
    assert mdl.GetInput("clearcoat_ior").Get() == pytest.approx(1.55)
    assert mdl.GetInput("clearcoat_reflection_roughness").Get() == pytest.approx(0.05)
    assert mdl.GetInput("clearcoat_tint").GetTypeName() == Sdf.ValueTypeNames.Color3f
    assert mdl.GetInput("reflection_roughness_constant").GetTypeName() == Sdf.ValueTypeNames.Float
    assert mdl.GetInput("reflection_roughness_constant").Get() == pytest.approx(0.4)
    # ior 1.5, level 0.5 -> F0 0.04 -> OmniPBR specular_level 0.5 (0.08 * 0.5)
    assert mdl.GetInput("specular_level").Get() == pytest.approx(0.5, rel=1e-6)
    # the context-specific output resolves to this shader
    src, _, _ = mat.ComputeSurfaceSource("mdl")
    assert src.GetPath() == mdl.GetPath()


def test_plain_omnipbr_without_coat(tmp_path):
    path = tmp_path / "plain.usda"
    write_usd_material(PLAIN, path)
    stage = Usd.Stage.Open(str(path))
    mat = UsdShade.Material(stage.GetPrimAtPath("/pbrfit/pbrfit_material"))
    mdl = shader_of(mat, "mdl")
    assert mdl.GetSourceAsset("mdl").path == "OmniPBR.mdl"
    assert mdl.GetSourceAssetSubIdentifier("mdl") == "OmniPBR"
    assert not mdl.GetInput("enable_clearcoat")
    # OmniPBR reflects 0.08 * specular_level at normal incidence: equal to Cycles' F0
    assert 0.08 * mdl.GetInput("specular_level").Get() == pytest.approx(cycles_f0(1.45, 0.6), rel=1e-6)


def test_preview_surface_fallback(coated_stage):
    stage, _, _ = coated_stage
    mat = UsdShade.Material(stage.GetPrimAtPath("/pbrfit/paint"))
    prev = shader_of(mat, "")
    assert prev.GetIdAttr().Get() == "UsdPreviewSurface"
    src, _, _ = mat.ComputeSurfaceSource("")
    assert src.GetPath() == prev.GetPath()
    assert prev.GetInput("diffuseColor").Get() == Gf.Vec3f(0.7, 0.1, 0.1)
    assert prev.GetInput("roughness").Get() == pytest.approx(0.4)
    assert prev.GetInput("clearcoat").Get() == pytest.approx(0.9)
    assert prev.GetInput("clearcoatRoughness").Get() == pytest.approx(0.05)
    assert f0(prev.GetInput("ior").Get()) == pytest.approx(cycles_f0(1.5, 0.5), rel=1e-5)
    # every input is declared by USD's own UsdPreviewSurface definition, with its Sdf type
    node = Sdr.Registry().GetShaderNodeByIdentifier("UsdPreviewSurface")
    for inp in prev.GetInputs():
        decl = node.GetShaderInput(inp.GetBaseName())
        assert decl is not None, inp.GetBaseName()
        assert decl.GetTypeAsSdfType().GetSdfType() == inp.GetTypeName(), inp.GetBaseName()


def test_openpbr_network(coated_stage):
    stage, _, _ = coated_stage
    mat = UsdShade.Material(stage.GetPrimAtPath("/pbrfit/paint"))
    op = shader_of(mat, "mtlx")
    assert op.GetIdAttr().Get() == "ND_open_pbr_surface_surfaceshader"
    assert op.GetInput("thin_film_thickness").Get() == pytest.approx(0.5)  # 500 nm in micrometres
    assert op.GetInput("thin_film_weight").Get() == pytest.approx(1.0)
    assert op.GetInput("fuzz_weight").Get() == pytest.approx(0.25)
    assert op.GetInput("base_color").GetTypeName() == Sdf.ValueTypeNames.Color3f
    # inputs match the MaterialX node definition (names and types)
    lib = mx.createDocument()
    mx.loadLibraries(mx.getDefaultDataLibraryFolders(), mx.getDefaultDataSearchPath(), lib)
    mx_to_sdf = {"float": Sdf.ValueTypeNames.Float, "color3": Sdf.ValueTypeNames.Color3f,
                 "vector3": Sdf.ValueTypeNames.Float3, "string": Sdf.ValueTypeNames.String}
    graph = [op] + [UsdShade.Shader(p) for p in mat.GetPrim().GetChildren()
                    if p.GetName().startswith("OpenPBR_")]
    assert len(graph) == 5  # rotation 0.25 turn -> tangent, normal, rotate3d, normalize
    for shader in graph:
        nd = lib.getNodeDef(shader.GetIdAttr().Get())
        assert nd is not None, shader.GetIdAttr().Get()
        for inp in shader.GetInputs():
            decl = nd.getActiveInput(inp.GetBaseName())
            assert decl is not None, inp.GetBaseName()
            assert mx_to_sdf[decl.getType()] == inp.GetTypeName(), inp.GetBaseName()
    rotate = UsdShade.Shader(stage.GetPrimAtPath("/pbrfit/paint/OpenPBR_tangent_rotate"))
    assert rotate.GetInput("amount").Get() == pytest.approx(-90.0)
    tangent_src = op.GetInput("geometry_tangent").GetConnectedSources()[0][0].source.GetPrim()
    assert tangent_src.GetName() == "OpenPBR_tangent_normalize"


def test_no_openpbr_when_disabled(tmp_path):
    path = tmp_path / "m.usda"
    losses = write_usd_material(COATED, path, openpbr=False)
    stage = Usd.Stage.Open(str(path))
    mat = UsdShade.Material(stage.GetPrimAtPath("/pbrfit/pbrfit_material"))
    out = mat.GetSurfaceOutput("mtlx")
    assert not out or not out.HasConnectedSource()
    assert not stage.GetPrimAtPath("/pbrfit/pbrfit_material/OpenPBR")
    assert not any(l.startswith("open_pbr_surface") for l in losses)


def test_losses_noted_in_layer_and_returned(coated_stage):
    stage, losses, path = coated_stage
    layer = stage.GetRootLayer()
    data = layer.customLayerData["pbrfit"]
    per_target = data["losses"]
    assert set(per_target) == {"OmniPBR_ClearCoat", "UsdPreviewSurface", "open_pbr_surface"}
    dropped = "UsdPreviewSurface: sheen_weight dropped: UsdPreviewSurface has no sheen lobe"
    assert dropped in per_target["UsdPreviewSurface"]
    assert any(l.startswith("OmniPBR_ClearCoat: thin_film_thickness dropped") for l in per_target["OmniPBR_ClearCoat"])
    assert any(l.startswith("UsdPreviewSurface: anisotropic dropped") for l in per_target["UsdPreviewSurface"])
    flat = [l for t in per_target for l in per_target[t]]
    assert sorted(flat) == sorted(losses)
    assert "UsdPreviewSurface: thin_film_thickness dropped" in layer.documentation
    # the material keeps Blender's exact values
    principled = stage.GetPrimAtPath("/pbrfit/paint").GetCustomDataByKey("pbrfit")["principled"]
    want = normalize_material(COATED)
    assert principled["thin_film_thickness"] == want["thin_film_thickness"]
    assert tuple(principled["base_color"]) == pytest.approx(want["base_color"])


def test_author_material_on_existing_stage_reauthors_cleanly():
    stage = Usd.Stage.CreateInMemory()
    mat = UsdShade.Material.Define(stage, "/World/Looks/paint")
    keep = UsdShade.Shader.Define(stage, "/World/Looks/paint/UserTexture")
    mat_back, losses = author_material(stage, "/World/Looks/paint", COATED)
    assert mat_back.GetPath() == mat.GetPath()
    assert shader_of(mat_back, "mdl").GetSourceAssetSubIdentifier("mdl") == "OmniPBR_ClearCoat"
    # write back a fit without coat and without OpenPBR
    _, losses = author_material(stage, "/World/Looks/paint", PLAIN, openpbr=False)
    mdl = shader_of(mat_back, "mdl")
    assert mdl.GetSourceAsset("mdl").path == "OmniPBR.mdl"
    assert not mdl.GetInput("enable_clearcoat")  # no stale inputs from the coated version
    assert not mat_back.GetSurfaceOutput("mtlx").HasConnectedSource()
    assert not stage.GetPrimAtPath("/World/Looks/paint/OpenPBR")
    assert stage.GetPrimAtPath(keep.GetPath())
    assert shader_of(mat_back, "").GetInput("diffuseColor").Get() == Gf.Vec3f(0.2, 0.5, 0.3)
    with pytest.raises(InputError):
        author_material(stage, "relative/path", PLAIN)


def test_author_material_refuses_non_material_prim():
    stage = Usd.Stage.CreateInMemory()
    stage.DefinePrim("/World/Mesh", "Mesh")
    with pytest.raises(InputError, match="not a Material"):
        author_material(stage, "/World/Mesh", PLAIN)


# --- mappings: reflectance checks and round trips ----------------------------------------


def test_preview_specular_workflow_for_tinted_dielectric():
    mat = {"ior": 1.5, "specular_ior_level": 0.5, "specular_tint": [1.0, 0.5, 0.25]}
    tm = to_usd_preview_surface(mat)
    assert tm.inputs["useSpecularWorkflow"] == 1
    # reference graph: specular workflow F0 = specularColor, F90 = 1 (Blender: F0 * tint, F90 = 1)
    assert tm.inputs["specularColor"] == pytest.approx((0.04, 0.02, 0.01), rel=1e-9)
    assert tm.losses == []
    tinted_metal = to_usd_preview_surface(dict(mat, metallic=1.0))
    assert tinted_metal.dropped == ["specular_tint"]


def test_omnipbr_specular_level_clipped_and_noted():
    tm = to_omnipbr({"ior": 2.5, "specular_ior_level": 0.8})
    assert tm.inputs["specular_level"] == 1.0
    assert any("clipped" in l.reason for l in tm.losses if l.param == "specular_ior_level")


def test_round_trip_preview_surface():
    for original in (PLAIN, dict(PLAIN, specular_tint=[1.0, 0.8, 0.6]), dict(PLAIN, metallic=1.0),
                     dict(PLAIN, coat_weight=0.5, coat_roughness=0.2, coat_ior=1.5, ior=1.5, specular_ior_level=0.5)):
        tm = to_usd_preview_surface(original)
        back = from_usd_preview_surface(tm.inputs)
        o = normalize_material(original)
        for n in ("base_color", "metallic", "roughness", "specular_tint", "coat_weight", "coat_roughness"):
            assert back[n] == pytest.approx(o[n], rel=1e-9), n
        assert cycles_f0(back["ior"], back["specular_ior_level"]) == pytest.approx(
            cycles_f0(o["ior"], o["specular_ior_level"]), rel=1e-9)
        if o["coat_weight"] > 0:
            assert back["coat_ior"] == pytest.approx(o["coat_ior"])


def test_round_trip_omnipbr():
    original = dict(PLAIN, coat_weight=0.7, coat_roughness=0.1, coat_ior=1.5, coat_tint=[0.9, 0.9, 1.0])
    tm = to_omnipbr(original)
    assert tm.target == "OmniPBR_ClearCoat"
    back = from_omnipbr(tm.inputs)
    o = normalize_material(original)
    for n in ("base_color", "metallic", "roughness", "coat_weight", "coat_roughness", "coat_ior", "coat_tint"):
        assert back[n] == pytest.approx(o[n], rel=1e-9), n
    assert cycles_f0(back["ior"], back["specular_ior_level"]) == pytest.approx(
        cycles_f0(o["ior"], o["specular_ior_level"]), rel=1e-9)


# --- failures ----------------------------------------------------------------------------


def test_missing_directory_raises_and_leaves_nothing(tmp_path):
    target = tmp_path / "missing" / "m.usda"
    with pytest.raises(InputError, match="does not exist"):
        write_usd_material(PLAIN, target)
    assert os.listdir(tmp_path) == []


def test_bad_extension_and_name(tmp_path):
    with pytest.raises(InputError, match="must end in"):
        write_usd_material(PLAIN, tmp_path / "m.txt")
    with pytest.raises(InputError, match="not a valid identifier"):
        write_usd_material(PLAIN, tmp_path / "m.usda", name="1 bad")
    assert os.listdir(tmp_path) == []


def test_failed_export_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.usda"
    write_usd_material(PLAIN, path)
    before = path.read_text()
    monkeypatch.setattr(Sdf.Layer, "Export", lambda self, *a, **k: False)
    with pytest.raises(RuntimeError):
        write_usd_material(COATED, path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["m.usda"]
