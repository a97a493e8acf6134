"""Smoke test of scripts/cycles_reference.py with real Blender/Cycles (PyPI bpy).

One small case (a 32x32 sphere at 16 samples, two cameras) is rendered once per module:

* under a constant grey "HDRI" written here, with a white diffuse material and no specular
  (a white furnace): a convex Lambertian surface of albedo 1 under uniform radiance L must
  read L everywhere, which checks that the EXR is linear, unclamped, at World strength 1;
* the alpha mask's area matches the sphere's silhouette computed from the *exported* USD
  camera (pinhole, focal length and aperture from the stage), which checks the camera
  export and that alpha is coverage;
* under a black HDRI with one bright patch at u = 0.25, v = 0.5, the lit side of the sphere
  in each image points where the light direction predicted from the *exported* DomeLight
  transform (UsdLux dome frame, see core/pbrfit/scene.py) and camera projects: the stage's
  environment orientation agrees with what Cycles rendered;
* the stage opens with usd-core and holds the Mesh, Cameras and a DomeLight whose texture
  resolves to the copied HDRI; job.toml and truth.json say what they should.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest
from pxr import Gf, Usd, UsdGeom, UsdLux

from pbrfit.errors import InputError
from pbrfit.params import normalize_material

pytestmark = pytest.mark.cycles  # renders with real Cycles / runs the bpy module

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "cycles_reference.py"
GREY = 0.5  # radiance of the constant environment


def _load_script():
    spec = importlib.util.spec_from_file_location("cycles_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _read_exr(path: Path) -> np.ndarray:
    buf = oiio.ImageBuf(str(path))
    assert not buf.has_error, buf.geterror()
    return buf.get_pixels(oiio.FLOAT)


@pytest.fixture(scope="module")
def cycles_reference():
    return _load_script()


@pytest.fixture(scope="module")
def case(cycles_reference, tmp_path_factory):
    base = tmp_path_factory.mktemp("case")
    grey = oiio.ImageBuf(oiio.ImageSpec(16, 8, 3, oiio.FLOAT))
    grey.set_pixels(oiio.ROI(), np.full((8, 16, 3), GREY, np.float32))
    assert grey.write(str(base / "grey.exr")), grey.geterror()
    blob = np.zeros((32, 64, 3), np.float32)
    blob[14:18, 14:18] = 200.0  # centred on u = 0.25, v = 0.5
    buf = oiio.ImageBuf(oiio.ImageSpec(64, 32, 3, oiio.FLOAT))
    buf.set_pixels(oiio.ROI(), blob)
    assert buf.write(str(base / "blob.exr")), buf.geterror()
    spec = {
        "shape": "sphere",
        "material": {"base_color": [1.0, 1.0, 1.0], "specular_ior_level": 0.0},
        "initial_material": {"roughness": 0.7},
        "train_hdri": "grey.exr",
        "validate_hdris": ["forest", "blob.exr"],
        "cameras": 3,
        "validate_cameras": [0, 1],
        "resolution": [32, 32],
        "samples": 16,
        "out": "out",
    }
    messages = []
    result = cycles_reference.render_case(spec, base_dir=base, progress=messages.append)
    return spec, result, Path(result["out"]), messages


def test_files_and_job(case):
    spec, result, out, messages = case
    for rel in ["scene.usda", "job.toml", "truth.json", "hdri/grey.exr", "hdri/forest.exr", "hdri/blob.exr",
                "refs/grey/Cam0.exr", "refs/grey/Cam1.exr", "refs/grey/Cam2.exr", "refs/forest/Cam1.exr"]:
        assert (out / rel).is_file(), rel
    assert not (out / "refs/forest/Cam2.exr").exists()  # validate_cameras = [0, 1]
    assert len(messages) == 7 and messages[0].startswith("refs/grey/Cam0.exr")

    job = tomllib.loads((out / "job.toml").read_text())
    assert job["scene"] == "scene.usda" and job["target"] == result["target"]
    views = [(v["image"], v.get("split", "train"), v.get("environment")) for v in job["views"]]
    assert views == [(f"refs/grey/Cam{i}.exr", "train", None) for i in range(3)] + [
        (f"refs/{h}/Cam{i}.exr", "validate", f"hdri/{h}.exr") for h in ("forest", "blob") for i in range(2)]
    assert [v["camera"] for v in job["views"]] == [result["cameras"][f"Cam{i}"] for i in (0, 1, 2, 0, 1, 0, 1)]

    truth = json.loads((out / "truth.json").read_text())
    assert truth["material"] == normalize_material(spec["material"])
    assert truth["initial_material"] == normalize_material(spec["initial_material"])
    assert "out" not in truth["spec"] and truth["spec"]["shape"] == "sphere"


def test_exr_is_linear_with_coverage_alpha(case):
    _, _, out, _ = case
    img = _read_exr(out / "refs/grey/Cam0.exr")
    assert img.shape == (32, 32, 4) and img.dtype == np.float32 and np.isfinite(img).all()
    alpha = img[..., 3]
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0 + 1e-6
    assert alpha[15:17, 15:17].min() > 0.999                         # the sphere's centre
    assert max(alpha[0, 0], alpha[0, -1], alpha[-1, 0], alpha[-1, -1]) == 0.0  # background
    edge = (alpha > 0.05) & (alpha < 0.95)
    assert edge.any()                                                 # antialiased silhouette
    # White furnace: albedo-1 Lambertian, no specular, uniform radiance GREY -> GREY.
    inside = alpha > 0.999
    rgb = img[inside, :3]
    assert abs(rgb.mean() - GREY) < 0.01 * GREY
    assert np.abs(rgb - GREY).max() < 0.25 * GREY                     # 16 spp noise only
    # Premultiplied RGBA: colour over coverage is the same grey on the silhouette.
    assert abs((img[edge, :3] / alpha[edge, None]).mean() - GREY) < 0.05 * GREY


def test_stage_matches_renders(case):
    _, result, out, _ = case
    stage = Usd.Stage.Open(str(out / "scene.usda"))
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.z
    assert UsdGeom.GetStageMetersPerUnit(stage) == pytest.approx(1.0)

    mesh = UsdGeom.Mesh(stage.GetPrimAtPath(result["target"]))
    assert mesh and len(mesh.GetPointsAttr().Get()) > 1000
    assert set(mesh.GetFaceVertexCountsAttr().Get()) == {3}           # triangulated before rendering

    domes = [p for p in stage.Traverse() if p.IsA(UsdLux.DomeLight)]
    assert len(domes) == 1
    texture = UsdLux.DomeLight(domes[0]).GetTextureFileAttr().Get()
    assert not Path(texture.path).is_absolute()
    assert Path(texture.resolvedPath).resolve() == (out / "hdri/grey.exr").resolve()
    # Blender's Z-up lat-long lookup: dome +Y (pole) -> world +Z, dome +Z (centre) -> world +X.
    m = UsdGeom.Xformable(domes[0]).ComputeLocalToWorldTransform(Usd.TimeCode.Default())
    assert np.allclose(m.TransformDir(Gf.Vec3d(0, 1, 0)), (0, 0, 1), atol=1e-6)
    assert np.allclose(m.TransformDir(Gf.Vec3d(0, 0, 1)), (1, 0, 0), atol=1e-6)

    for name, path in result["cameras"].items():
        cam = UsdGeom.Camera(stage.GetPrimAtPath(path))
        assert cam, path
        gf = cam.GetCamera(Usd.TimeCode.Default())
        assert gf.focalLength == pytest.approx(0.5)                   # 50 mm in tenths of a unit
        # The unit sphere's silhouette seen from distance d is a disc of angular radius
        # asin(1/d); on a W-pixel image of half-width tan(hfov/2) its radius is known.
        d = np.linalg.norm(np.array(gf.transform.ExtractTranslation()))
        assert np.allclose(gf.frustum.ComputeViewDirection(), -np.array(gf.transform.ExtractTranslation()) / d,
                           atol=1e-5)                                 # aimed at the sphere
        half_width = gf.horizontalAperture / (2 * gf.focalLength)
        radius_px = 16 * math.tan(math.asin(1.0 / d)) / half_width
        alpha = _read_exr(out / f"refs/grey/{name}.exr")[..., 3]
        assert alpha.sum() == pytest.approx(math.pi * radius_px**2, rel=0.03), name


def test_environment_orientation_matches_stage(case):
    _, result, out, _ = case
    stage = Usd.Stage.Open(str(out / "scene.usda"))
    dome = next(p for p in stage.Traverse() if p.IsA(UsdLux.DomeLight))
    world_from_dome = UsdGeom.Xformable(dome).ComputeLocalToWorldTransform(Usd.TimeCode.Default())
    # In the UsdLux dome frame, u = 0.25 on the horizon looks toward +X.
    light = np.array(world_from_dome.TransformDir(Gf.Vec3d(1, 0, 0)))
    for name in ("Cam0", "Cam1"):
        cam = UsdGeom.Camera(stage.GetPrimAtPath(result["cameras"][name])).GetCamera(Usd.TimeCode.Default())
        right = np.array(cam.transform.TransformDir(Gf.Vec3d(1, 0, 0)))
        up = np.array(cam.transform.TransformDir(Gf.Vec3d(0, 1, 0)))
        expected = np.array([light @ right, -(light @ up)])  # image x right, y down
        img = _read_exr(out / f"refs/blob/{name}.exr")
        lum, alpha = img[..., :3].mean(-1), img[..., 3]
        ys, xs = np.mgrid[0:32, 0:32] + 0.5
        centre = np.array([(xs * alpha).sum(), (ys * alpha).sum()]) / alpha.sum()
        lit = np.array([(xs * lum).sum(), (ys * lum).sum()]) / lum.sum() - centre
        cosine = lit @ expected / (np.linalg.norm(lit) * np.linalg.norm(expected))
        assert cosine > 0.98, (name, lit, expected)


def test_bad_spec_is_an_input_error(cycles_reference, tmp_path):
    with pytest.raises(InputError, match="shape"):
        cycles_reference.render_case({"shape": "cube", "material": {}, "train_hdri": "forest", "out": "x"},
                                     base_dir=tmp_path)
    with pytest.raises(InputError, match="rough"):
        cycles_reference.render_case({"shape": "sphere", "material": {"rough": 1}, "train_hdri": "forest",
                                      "out": "x"}, base_dir=tmp_path)
    with pytest.raises(InputError, match="'max_bounces' must be at least 0"):
        cycles_reference.render_case({"shape": "sphere", "material": {}, "train_hdri": "forest", "out": "x",
                                      "max_bounces": -1}, base_dir=tmp_path)
    assert not (tmp_path / "x").exists()


def test_cli_reports_a_bad_spec_in_one_line(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"shape": "sphere", "material": {}, "train_hdri": "nowhere", "out": "x"}))
    run = subprocess.run([sys.executable, str(SCRIPT), str(spec)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.strip().count("\n") == 0 and "nowhere" in run.stderr and str(spec) in run.stderr
