"""Write-back of a fitted material onto a USD stage (pbrfit.writeback_usd) and the CLI's
--write-back: what is authored, where, that the user's root layer file stays byte-identical,
undo, and that a failure leaves no half-written stage."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pxr import Sdf, Usd, UsdShade
from synthetic import render_references, write_job, write_stage

import pbrfit.writeback_usd as wb
from pbrfit.errors import InputError
from pbrfit.params import normalize_material

MATERIAL = {"base_color": [0.2, 0.45, 0.7], "roughness": 0.3, "metallic": 0.1}
COATED = {**MATERIAL, "coat_weight": 0.6, "coat_roughness": 0.15}

# Re-read a stage in a fresh process, as on another machine: the root from disk, the edit
# layer (if given) composed in as its strongest sublayer.
_REREAD = r"""
import json, sys
from pxr import Usd, UsdShade, Sdf
from pbrfit.usd_stage import read_stage
root, extra, target = sys.argv[1], sys.argv[2], sys.argv[3]
layer = Sdf.Layer.FindOrOpen(root)
if extra:
    layer.subLayerPaths.insert(0, extra)
stage = Usd.Stage.Open(layer)
prim = stage.GetPrimAtPath(target)
mat, _ = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()
out = {"bound": str(mat.GetPath()) if mat else "", "has_api": prim.HasAPI(UsdShade.MaterialBindingAPI)}
if mat:
    mdl = mat.ComputeSurfaceSource("mdl")[0]
    out["mdl_asset"] = mdl.GetSourceAsset("mdl").path
    out["mdl_sub"] = mdl.GetSourceAssetSubIdentifier("mdl")
    out["mdl_inputs"] = {i.GetBaseName(): (list(v) if hasattr(v, "__len__") else v)
                         for i in mdl.GetInputs() for v in [i.Get()]}
    prev = mat.ComputeSurfaceSource()[0]
    out["preview_id"] = prev.GetIdAttr().Get()
    out["preview_base"] = list(prev.GetInput("diffuseColor").Get())
    mtlx = mat.ComputeSurfaceSource("mtlx")[0]
    out["mtlx_id"] = mtlx.GetIdAttr().Get()
    out["principled"] = {k: (list(v) if hasattr(v, "__len__") else v)
                         for k, v in mat.GetPrim().GetCustomDataByKey("pbrfit")["principled"].items()}
    c = read_stage(stage, target=target)
    out["read"] = c.material
    out["read_source"] = c.material_source
print(json.dumps(out))
"""


def reread(root, extra, target="/World/Part") -> dict:
    r = subprocess.run([sys.executable, "-c", _REREAD, str(root), str(extra or ""), target],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def scene(tmp_path):
    path = write_stage(tmp_path / "s", cameras=1)
    return path, path.read_bytes()


def test_default_write_back_authors_a_new_sublayer_and_keeps_the_root_file(scene):
    path, before = scene
    stage = Usd.Stage.Open(str(path))
    rec = wb.write_back(stage, "/World/Part", COATED)
    sub = path.with_name("scene.pbrfit.usda")
    assert rec.edit_layer_file == str(sub) and rec.created_file and rec.saved and sub.is_file()
    assert rec.material_path == "/World/Looks/pbrfit_Part" and rec.sublayer_entry == "./scene.pbrfit.usda"
    assert stage.GetRootLayer().subLayerPaths[0] == "./scene.pbrfit.usda"
    assert path.read_bytes() == before  # the user's root layer file is untouched
    assert not Sdf.Layer.FindOrOpen(str(sub)).dirty

    out = reread(path, sub)
    assert out["bound"] == "/World/Looks/pbrfit_Part" and out["has_api"]
    assert out["mdl_asset"] == "OmniPBR_ClearCoat.mdl" and out["mdl_sub"] == "OmniPBR_ClearCoat"
    assert out["mdl_inputs"]["enable_clearcoat"] is True
    assert out["mdl_inputs"]["diffuse_color_constant"] == pytest.approx(COATED["base_color"], abs=1e-6)
    assert out["mdl_inputs"]["reflection_roughness_constant"] == pytest.approx(0.3, abs=1e-6)
    assert out["preview_id"] == "UsdPreviewSurface"
    assert out["preview_base"] == pytest.approx(COATED["base_color"], abs=1e-6)
    assert out["mtlx_id"] == "ND_open_pbr_surface_surfaceshader"
    exact = normalize_material(COATED)
    for k, v in exact.items():
        assert out["principled"][k] == pytest.approx(v, abs=1e-6), k
    assert "OpenPBR" in out["read_source"]
    for k in ("base_color", "roughness", "metallic", "coat_weight", "coat_roughness"):
        assert out["read"][k] == pytest.approx(exact[k], abs=1e-5), k
    # on disk without the sublayer nothing changed
    assert reread(path, "")["bound"] == ""


def test_no_coat_gives_plain_omnipbr(scene):
    path, _ = scene
    stage = Usd.Stage.Open(str(path))
    rec = wb.write_back(stage, "/World", MATERIAL, material_path="/World/Looks/Fitted")  # ancestor of the Mesh
    assert rec.target_path == "/World/Part"
    out = reread(path, rec.edit_layer_file)
    assert out["bound"] == "/World/Looks/Fitted"
    assert out["mdl_asset"] == "OmniPBR.mdl" and out["mdl_sub"] == "OmniPBR"


def test_undo_removes_everything(scene):
    path, before = scene
    stage = Usd.Stage.Open(str(path))
    rec = wb.write_back(stage, "/World/Part", MATERIAL)
    assert stage.GetPrimAtPath(rec.material_path)
    wb.undo(stage, rec)
    assert not stage.GetPrimAtPath("/World/Looks")
    assert list(stage.GetRootLayer().subLayerPaths) == []
    assert not Path(rec.edit_layer_file).exists()
    assert not UsdShade.MaterialBindingAPI(stage.GetPrimAtPath("/World/Part")).GetDirectBinding().GetMaterialPath()
    assert path.read_bytes() == before
    # redo after undo works (what Kit's redo does)
    rec2 = wb.write_back(stage, "/World/Part", MATERIAL)
    assert Path(rec2.edit_layer_file).is_file() and stage.GetPrimAtPath(rec2.material_path)


def test_existing_edit_layer_keeps_its_content_and_undo_restores_it(scene, tmp_path):
    path, before = scene
    edit = path.with_name("mine.usda")
    layer = Sdf.Layer.CreateNew(str(edit))
    Sdf.CreatePrimInLayer(layer, "/World/Keep").specifier = Sdf.SpecifierOver
    layer.Save()
    edit_before = edit.read_bytes()
    stage = Usd.Stage.Open(str(path))
    rec = wb.write_back(stage, "/World/Part", MATERIAL, edit_layer=edit)
    assert not rec.created_file and rec.sublayer_entry == "./mine.usda"
    text = edit.read_text()
    assert "Keep" in text and "pbrfit_Part" in text
    wb.undo(stage, rec)
    assert edit.read_bytes() == edit_before
    assert path.read_bytes() == before


def test_root_layer_is_rewritten_only_when_asked(scene):
    path, before = scene
    stage = Usd.Stage.Open(str(path))
    rec = wb.write_back(stage, "/World/Part", MATERIAL, edit_layer=path)
    assert rec.sublayer_entry is None and rec.edit_layer_file == str(path)
    assert path.read_bytes() != before and b"pbrfit_Part" in path.read_bytes()
    assert not path.with_name("scene.pbrfit.usda").exists()
    wb.undo(stage, rec)
    assert b"pbrfit_Part" not in path.read_bytes()


def test_failure_during_authoring_leaves_no_half_written_stage(scene, monkeypatch):
    path, before = scene
    stage = Usd.Stage.Open(str(path))
    root_text = stage.GetRootLayer().ExportToString()

    def broken_bind(*args):  # fault injection: fail after the material was authored
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(wb, "_bind", broken_bind)
    with pytest.raises(RuntimeError, match="disk on fire"):
        wb.write_back(stage, "/World/Part", COATED)
    assert not stage.GetPrimAtPath("/World/Looks")
    assert stage.GetRootLayer().ExportToString() == root_text
    assert list(stage.GetRootLayer().subLayerPaths) == []
    assert stage.GetEditTarget().GetLayer() == stage.GetRootLayer()
    assert not path.with_name("scene.pbrfit.usda").exists()
    assert path.read_bytes() == before
    monkeypatch.undo()
    rec = wb.write_back(stage, "/World/Part", COATED)  # and the stage is still usable
    assert stage.GetPrimAtPath(rec.material_path)


def test_bad_inputs_are_one_line_input_errors(scene):
    path, before = scene
    stage = Usd.Stage.Open(str(path))
    for target, needle in (("/World/Nope", "/World/Nope not found"), ("/World/Cam0", "not a Mesh"),
                           ("World/Part", "not an absolute prim path")):
        with pytest.raises(InputError, match=needle) as e:
            wb.write_back(stage, target, MATERIAL)
        assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="must end in"):
        wb.write_back(stage, "/World/Part", MATERIAL, edit_layer=path.with_name("x.txt"))
    with pytest.raises(InputError, match="does not exist"):
        wb.write_back(stage, "/World/Part", MATERIAL, edit_layer=path.parent / "nodir" / "x.usda")
    with pytest.raises(InputError, match="valid USD prim path|absolute prim path"):
        wb.write_back(stage, "/World/Part", MATERIAL, material_path="not a path")
    # a Material there whose shader pbrfit did not author is not clobbered
    mat = UsdShade.Material.Define(stage, "/World/Looks/Theirs")
    shader = UsdShade.Shader.Define(stage, "/World/Looks/Theirs/Custom")
    shader.SetSourceAsset(Sdf.AssetPath("Custom.mdl"), "mdl")
    mat.CreateSurfaceOutput("mdl").ConnectToSource(shader.CreateOutput("out", Sdf.ValueTypeNames.Token))
    with pytest.raises(InputError, match="pbrfit did not author"):
        wb.write_back(stage, "/World/Part", MATERIAL, material_path="/World/Looks/Theirs")
    assert not path.with_name("scene.pbrfit.usda").exists() and path.read_bytes() == before


def test_cli_write_back_round_trip(tmp_path):
    job = write_job(tmp_path / "job", size=32, cameras=1)
    render_references(job, MATERIAL, seed=3)
    scene = job.parent / "scene.usda"
    before = scene.read_bytes()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pbrfit.cli", "fit", str(job), "--out", str(out), "--preset", "plastic",
           "--iterations", "3", "--samples", "4", "--backend", "raster", "--quiet",
           "--write-back"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    sub = job.parent / "scene.pbrfit.usda"
    assert sub.is_file() and "scene.pbrfit.usda" in r.stdout
    assert scene.read_bytes() == before
    fitted = json.loads((out / "material.json").read_text())["parameters"]
    got = reread(scene, sub)
    assert got["bound"] == "/World/Looks/pbrfit_Part"
    assert got["principled"]["base_color"] == pytest.approx(fitted["base_color"], abs=1e-6)
    assert got["principled"]["roughness"] == pytest.approx(fitted["roughness"], abs=1e-6)
    # --edit-layer names another file; without --write-back it is an input error
    other = tmp_path / "edits.usda"
    r = subprocess.run(cmd + ["--edit-layer", str(other)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert other.is_file() and reread(scene, other)["bound"] == "/World/Looks/pbrfit_Part"
    r = subprocess.run(cmd[:-1] + ["--edit-layer", str(other)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "--edit-layer needs --write-back" in r.stderr
    assert scene.read_bytes() == before
