"""The Omniverse Kit extension (omniverse_ext/pbrfit.material_fit) under plain usd-core:
its controller (reference attributes, one stage reader, threaded/cancellable/asyncio fit,
write-back), the same fit from a Blender-exported Z-up metre stage and a Y-up centimetre
stage, the omni-import confinement and the extension.toml. Kit itself is not run here."""

import ast
import asyncio
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import stage_builders as sb
from pxr import Gf, Sdf, Usd, UsdGeom, UsdLux, UsdShade, Vt
from source_imports import imported_roots
from synthetic import render_references, write_job

from pbrfit.errors import FitCancelled, InputError
from pbrfit.heatmap import display_exposure, png_bytes, to_srgb8
from pbrfit.images import write_exr

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "omniverse_ext" / "pbrfit.material_fit"
sys.path.insert(0, str(EXT))

from pbrfit_material_fit import controller as C  # noqa: E402

OMNI_MODULES = {"extension.py", "window.py", "commands.py"}
TRUE = {"base_color": [0.25, 0.5, 0.3], "roughness": 0.45}


# --- structure ----------------------------------------------------------------------------

def test_omni_imports_only_in_the_kit_modules():
    files = sorted((EXT / "pbrfit_material_fit").glob("*.py"))
    assert {f.name for f in files} >= OMNI_MODULES | {"__init__.py", "controller.py"}
    for f in files:
        uses = bool(imported_roots(f) & {"omni", "carb"})
        if f.name in OMNI_MODULES:
            assert "omni" in imported_roots(f), f.name
        else:
            assert not uses, f"{f.name} imports omni/carb; only {sorted(OMNI_MODULES)} may"
    # and importing the package in plain Python pulls in no omni module
    assert not [m for m in sys.modules if m.split(".")[0] in ("omni", "carb")]


def test_extension_toml_parses_and_names_existing_modules():
    assert EXT.name == "pbrfit.material_fit"  # Kit names an extension after its folder
    cfg = tomllib.loads((EXT / "config" / "extension.toml").read_text())
    pkg = cfg["package"]
    assert pkg["title"] and pkg["version"].count(".") == 2 and pkg["description"]
    assert {"omni.ui", "omni.kit.commands", "omni.usd", "omni.kit.pipapi"} <= set(cfg["dependencies"])
    modules = [m["name"] for m in cfg["python"]["module"] if "name" in m]
    assert modules == ["pbrfit_material_fit"]
    for name in modules:
        assert (EXT / name.replace(".", "/") / "__init__.py").is_file()
    # the engine travels inside the built extension, on sys.path through a path-only module entry
    assert [m["path"] for m in cfg["python"]["module"] if "path" in m] == ["engine"]
    # [[test]] is backed by tests in the package, for Kit's runner
    assert cfg["test"] and (EXT / "pbrfit_material_fit" / "tests" / "test_material_fit.py").is_file()
    for doc in (pkg["readme"], pkg["changelog"]):
        assert (EXT / doc).is_file()
    # the Kit modules are at least valid Python, and the extension class is where __init__ says
    ext = ast.parse((EXT / "pbrfit_material_fit" / "extension.py").read_text())
    assert any(isinstance(n, ast.ClassDef) and n.name == "MaterialFitExtension" for n in ext.body)
    cmds = ast.parse((EXT / "pbrfit_material_fit" / "commands.py").read_text())
    cls = next(n for n in cmds.body if isinstance(n, ast.ClassDef))
    assert {f.name for f in cls.body if isinstance(f, ast.FunctionDef)} >= {"do", "undo"}
    ast.parse((EXT / "pbrfit_material_fit" / "window.py").read_text())
    ast.parse((EXT / "pbrfit_material_fit" / "tests" / "test_material_fit.py").read_text())


def test_pipapi_requirements_are_the_engines_without_usd_core():
    """Kit installs core/pyproject.toml's dependencies except usd-core: Kit has its own pxr."""
    from pbrfit import __version__

    core = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())["project"]["dependencies"]
    cfg = tomllib.loads((EXT / "config" / "extension.toml").read_text())
    assert cfg["python"]["pipapi"]["requirements"] == [d for d in core if not d.startswith("usd-core")]
    assert cfg["package"]["version"] == __version__


def test_missing_engine_dependencies_are_one_line_not_a_traceback():
    code = (f"import sys; sys.path.insert(0, {str(EXT)!r}); sys.modules['torch'] = None; "
            "import pbrfit_material_fit; from pbrfit_material_fit.dependencies import problem; print(problem())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("pbrfit needs torch") and "[python.pipapi]" in line and "\n" not in line


def test_the_packages_own_kit_checks_pass_here():
    """The checks Kit's runner calls (pbrfit_material_fit/tests), run under usd-core."""
    from pbrfit_material_fit.tests import checks

    checks.check_engine_runs_here()
    result = checks.check_fit_recovers_the_colour()
    assert result.fitted == ["base_color"]


# --- a small synthetic case -----------------------------------------------------------------

@pytest.fixture(scope="module")
def case(tmp_path_factory):
    job = write_job(tmp_path_factory.mktemp("omni"), size=32, cameras=2)
    render_references(job, TRUE, seed=7)
    return job.parent


def _stage_with_refs(folder: Path) -> Usd.Stage:
    stage = Usd.Stage.Open(str(folder / "scene.usda"))
    stage.SetEditTarget(stage.GetSessionLayer())  # keep the root layer clean
    C.set_reference(stage, "/World/Cam0", "refs/cam0.exr")
    C.set_reference(stage, "/World/Cam1", str(folder / "refs" / "cam1.exr"), split="train")
    return stage


def _opts(**kw):
    kw = {"iterations": 4, "samples": 4, **kw}
    return C.make_options("plastic", **kw)


def test_reference_attributes_round_trip(case, tmp_path):
    stage = Usd.Stage.Open(str(case / "scene.usda"))
    C.set_reference(stage, "/World/Cam0", "refs/cam0.exr", mask="refs/cam0.exr", split="validate")
    prim = stage.GetPrimAtPath("/World/Cam0")
    attr = prim.GetAttribute(C.REFERENCE_IMAGE_ATTR)
    assert attr.GetTypeName() == Sdf.ValueTypeNames.Asset and attr.IsCustom()
    assert prim.GetAttribute(C.SPLIT_ATTR).GetTypeName() == Sdf.ValueTypeNames.Token
    ref = C.get_reference(stage, "/World/Cam0")
    assert ref["image"] == str(case / "refs" / "cam0.exr") and ref["image_asset"] == "refs/cam0.exr"
    assert ref["mask"] == str(case / "refs" / "cam0.exr") and ref["split"] == "validate"
    # stored in the layer, readable by anyone with pxr
    text = stage.GetRootLayer().ExportToString()
    assert "custom asset pbrfit:referenceImage = @refs/cam0.exr@" in text
    assert C.get_reference(stage, "/World/Cam1") is None
    C.set_reference(stage, "/World/Cam0", "refs/cam0.exr")  # mask=None clears it
    assert C.get_reference(stage, "/World/Cam0")["mask"] is None
    C.clear_reference(stage, "/World/Cam0")
    assert C.get_reference(stage, "/World/Cam0") is None
    with pytest.raises(InputError, match="not a Camera"):
        C.set_reference(stage, "/World/Part", "refs/cam0.exr")
    with pytest.raises(InputError, match="split"):
        C.set_reference(stage, "/World/Cam0", "refs/cam0.exr", split="test")


def test_scene_is_the_cli_scene(case):
    """The controller's scene equals the job reader's for the same views (one reader)."""
    from pbrfit.job import load_job

    (case / "job_refs.toml").write_text((case / "job.toml").read_text())
    job = load_job(case / "job_refs.toml")
    scene, files = C.build_fit_scene(_stage_with_refs(case), "/World/Part")
    assert [v.name for v in scene.views] == [v.name for v in job.scene.views]
    for a, b in zip(scene.views, job.scene.views):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_allclose(a.camera.world_from_camera, b.camera.world_from_camera)
        np.testing.assert_allclose(a.environment.world_from_dome, b.environment.world_from_dome)
    np.testing.assert_array_equal(scene.mesh.positions, job.scene.mesh.positions)
    assert scene.target == job.scene.target == "/World/Part"
    assert str(case / "refs" / "cam0.exr") in files


def test_bad_prims_and_missing_references_are_input_errors(case, tmp_path):
    stage = _stage_with_refs(case)
    for target, needle in (("/World/Nope", "/World/Nope not found"), ("/World/Cam0", "not a Mesh")):
        with pytest.raises(InputError, match=needle) as e:
            C.FitSession(stage, target, _opts()).start()
        assert "\n" not in str(e.value)
    C.set_reference(stage, "/World/Cam1", "refs/gone.exr")
    with pytest.raises(InputError, match=r"/World/Cam1.*gone\.exr.*not found") as e:
        C.FitSession(stage, "/World/Part", _opts()).start()
    assert str(case / "refs" / "gone.exr") in str(e.value)
    C.set_reference(stage, "/World/Cam1", "refs/cam1.exr", mask="refs/nomask.png")
    with pytest.raises(InputError, match="referenceMask.*nomask.png"):
        C.build_fit_scene(stage, "/World/Part")
    bare = Usd.Stage.Open(str(case / "scene.usda"))
    with pytest.raises(InputError, match="no camera on the stage has a pbrfit:referenceImage"):
        C.build_fit_scene(bare, "/World/Part")
    with pytest.raises(InputError, match="preset"):
        C.make_options("shiny")
    with pytest.raises(InputError, match="backend"):
        C.make_options("plastic", backend="cycles")
    assert C.make_options("plastic").backend == "auto"
    assert C.make_options("plastic", backend="raster").backend == "raster"


def test_unsupported_bound_shader_is_an_input_error(case):
    stage = _stage_with_refs(case)
    mat = UsdShade.Material.Define(stage, "/World/Looks/Custom")
    shader = UsdShade.Shader.Define(stage, "/World/Looks/Custom/Shader")
    shader.SetSourceAsset(Sdf.AssetPath("MyStudioShader.mdl"), "mdl")
    mat.CreateSurfaceOutput("mdl").ConnectToSource(shader.CreateOutput("out", Sdf.ValueTypeNames.Token))
    UsdShade.MaterialBindingAPI.Apply(stage.GetPrimAtPath("/World/Part")).Bind(mat)
    with pytest.raises(InputError, match="/World/Looks/Custom.*no surface shader pbrfit can read"):
        C.build_fit_scene(stage, "/World/Part")
    scene, _ = C.build_fit_scene(stage, "/World/Part", start_from_defaults=True)
    assert scene.initial_material_source == ""


# --- the threaded session ---------------------------------------------------------------------

def test_session_runs_in_a_thread_with_progress(case, tmp_path):
    stage = _stage_with_refs(case)
    session = C.FitSession(stage, "/World/Part", _opts())
    assert session.state == "idle"
    session.start()
    seen = []
    while not session.finished:
        seen += session.poll()
        time.sleep(0.02)
    seen += session.poll()
    assert session.state == "done" and session.error is None
    result = session.outcome()
    assert seen and all(np.isfinite(p.train_de2000) for p in seen if p.phase == "fit")
    assert [p.iteration for p in seen] == sorted(p.iteration for p in seen)
    assert seen[0].phase == "setup" and seen[-1].phase == "final metrics" and seen[-1].iteration == seen[-1].total
    assert len({p.total for p in seen}) == 1  # the total is fixed when the run starts
    assert session.latest is seen[-1]
    assert set(result.material) >= {"base_color", "roughness"}
    with pytest.raises(RuntimeError, match="already"):
        session.start()
    # the window's figures: reference, fit and ΔE map per view, as PNGs of the view's size
    figures = C.result_figures(result, tmp_path / "fig")
    assert [f["name"] for f in figures] == ["Cam0", "Cam1"]
    for f, view in zip(figures, result.views):
        assert f["de2000_mean"] > 0
        for key in ("reference", "fit", "de_map"):
            head = Path(f[key]).read_bytes()[:24]
            assert head[:8] == b"\x89PNG\r\n\x1a\n"
            assert int.from_bytes(head[16:20], "big") == 32 and int.from_bytes(head[20:24], "big") == 32
        # at the view's display exposure, as report.html shows it (it was shown at 1.0)
        exposure = display_exposure(view.reference, view.mask)
        assert f["exposure"] == pytest.approx(exposure) and abs(exposure - 1.0) > 0.05
        assert Path(f["reference"]).read_bytes() == png_bytes(to_srgb8(view.reference, exposure))
        assert Path(f["fit"]).read_bytes() == png_bytes(to_srgb8(view.fit, exposure))


def test_session_cancel(case):
    session = C.FitSession(_stage_with_refs(case), "/World/Part", _opts(iterations=500))
    session.start()
    session.cancel()
    assert session.wait(timeout=120)
    assert session.state == "cancelled" and session.result is None
    with pytest.raises(FitCancelled):
        session.outcome()


def test_run_async_does_not_block_the_loop_and_cancels_with_its_task(case):
    stage = _stage_with_refs(case)

    async def main():
        ticks = []
        stop = asyncio.Event()

        async def ticker():
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        progress = []
        tick_task = asyncio.create_task(ticker())
        main_thread = threading.get_ident()
        threads = set()

        def on_progress(p):
            progress.append(p)
            threads.add(threading.get_ident())

        result = await C.run_async(C.FitSession(stage, "/World/Part", _opts()), on_progress=on_progress)
        stop.set()
        await tick_task
        assert progress and threads == {main_thread}  # callbacks on the loop's thread
        assert len(ticks) >= 3  # the loop kept running during the fit

        # cancelling the awaiting task cancels the fit
        long = C.FitSession(stage, "/World/Part", _opts(iterations=500))
        task = asyncio.create_task(C.run_async(long))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert long.state == "cancelled"
        return result

    result = asyncio.run(main())
    assert result.material["roughness"] > 0


def test_session_write_back_keeps_root_file(case, tmp_path):
    folder = tmp_path / "wb"
    shutil.copytree(case, folder)
    root = folder / "scene.usda"
    before = root.read_bytes()
    stage = _stage_with_refs(folder)
    session = C.FitSession(stage, "/World/Part", _opts(iterations=2))
    session.start()
    session.wait()
    rec = session.write_back()
    assert root.read_bytes() == before and Path(rec.edit_layer_file).is_file()
    bound, _ = UsdShade.MaterialBindingAPI(stage.GetPrimAtPath("/World/Part")).ComputeBoundMaterial()
    assert str(bound.GetPath()) == rec.material_path
    C.undo_write_back(stage, rec)
    assert not Path(rec.edit_layer_file).exists() and root.read_bytes() == before


# --- Blender's Z-up metre stage vs a Y-up centimetre stage --------------------------------------

# Z-up world -> Y-up world: x' = x, y' = z, z' = -y (a rotation, det +1)
_Z_TO_Y = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
_CM = 100.0


def _m4(rotation: np.ndarray, translation=(0, 0, 0)) -> Gf.Matrix4d:
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rotation, translation
    return Gf.Matrix4d(m.T.tolist())  # USD rows = column-vector matrix transposed


def _y_up_cm_copy(blender_usda: Path, out: Path, hdri: Path) -> Path:
    """The Blender stage's part, camera, dome and material rebuilt on a Y-up cm stage."""
    from pbrfit.usd_stage import read_stage

    src = read_stage(blender_usda, target="/root/Part")
    stage = Usd.Stage.CreateNew(str(out))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, UsdGeom.LinearUnits.centimeters)
    root = UsdGeom.Xform.Define(stage, "/root")
    stage.SetDefaultPrim(root.GetPrim())
    mesh = UsdGeom.Mesh.Define(stage, "/root/Part")
    pts = src.mesh.positions @ _Z_TO_Y.T * _CM
    mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(pts.astype(np.float32)))
    tris = src.mesh.triangles
    mesh.CreateFaceVertexCountsAttr([3] * len(tris))
    mesh.CreateFaceVertexIndicesAttr(tris.reshape(-1).tolist())
    normals = src.mesh.normals.reshape(-1, 3) @ _Z_TO_Y.T
    mesh.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(normals.astype(np.float32)))
    mesh.SetNormalsInterpolation(UsdGeom.Tokens.faceVarying)
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    cam_src = src.camera("/root/Cam")
    cam = UsdGeom.Camera.Define(stage, "/root/Cam")
    w = cam_src.world_from_camera
    cam.AddTransformOp().Set(_m4(_Z_TO_Y @ w[:3, :3], _Z_TO_Y @ w[:3, 3] * _CM))
    cam.CreateFocalLengthAttr(cam_src.focal_length)
    cam.CreateHorizontalApertureAttr(cam_src.horizontal_aperture)
    cam.CreateVerticalApertureAttr(cam_src.vertical_aperture)
    near, far = cam_src.clipping_range
    cam.CreateClippingRangeAttr(Gf.Vec2f(near * _CM, far * _CM))
    dome = UsdLux.DomeLight.Define(stage, "/root/Env")
    dome.CreateTextureFileAttr(Sdf.AssetPath(str(hdri)))
    UsdGeom.Xformable(dome).AddTransformOp().Set(_m4(_Z_TO_Y @ src.dome.world_from_dome))
    # the very same material network, copied spec for spec, bound to the part
    blender_layer = Sdf.Layer.FindOrOpen(str(blender_usda))
    assert Sdf.CopySpec(blender_layer, "/root/_materials", stage.GetRootLayer(), "/root/_materials")
    UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim()).Bind(
        UsdShade.Material(stage.GetPrimAtPath("/root/_materials/PartMaterial")))
    stage.GetRootLayer().Save()
    return out


def test_blender_stage_and_y_up_centimetre_stage_give_the_same_fit(blender_dir, tmp_path):
    blender = blender_dir
    truth = sb.truth(blender)
    work = tmp_path / "b"
    work.mkdir()
    for name in ("plain.usda", "forest.exr"):
        shutil.copy(blender / name, work / name)
    # references: Blender's material with another base colour and roughness, rendered at 40x30
    (work / "refs").mkdir()
    write_exr(work / "refs" / "cam.exr", np.ones((30, 40, 4), np.float32))  # opaque: no mask
    job = sb.write_job(work, 'scene = "plain.usda"\ntarget = "/root/Part"\n'
                             '[[views]]\ncamera = "/root/Cam"\nimage = "refs/cam.exr"\n')
    reference = {**truth["material"], "base_color": [0.2, 0.45, 0.35], "roughness": 0.55}
    render_references(job, reference, seed=11)
    y_up = _y_up_cm_copy(work / "plain.usda", work / "y_up_cm.usda", work / "forest.exr")
    before = {p: p.read_bytes() for p in (work / "plain.usda", y_up)}

    results = {}
    for name, path, camera in (("blender", work / "plain.usda", "/root/Cam/CamData"),
                               ("y_up_cm", y_up, "/root/Cam")):
        stage = Usd.Stage.Open(str(path))
        stage.SetEditTarget(stage.GetSessionLayer())
        C.set_reference(stage, camera, str(work / "refs" / "cam.exr"))
        session = C.FitSession(stage, "/root/Part", _opts(iterations=8, samples=16))
        session.start()
        assert session.wait(timeout=300)
        results[name] = (session.scene, session.outcome())
        stage.SetEditTarget(stage.GetRootLayer())
        rec = session.write_back()
        mdl = UsdShade.Material(stage.GetPrimAtPath(rec.material_path)).ComputeSurfaceSource("mdl")[0]
        assert mdl.GetSourceAssetSubIdentifier("mdl") == "OmniPBR_ClearCoat"  # Blender's coat 0.4 kept
    (sb_scene, sb_res), (yc_scene, yc_res) = results["blender"], results["y_up_cm"]
    assert (sb_scene.up_axis, yc_scene.up_axis) == ("Z", "Y")
    assert (sb_scene.meters_per_unit, yc_scene.meters_per_unit) == (1.0, 0.01)
    for k in ("base_color", "roughness", "metallic", "coat_weight"):  # same starting material
        assert np.allclose(sb_scene.initial_material[k], yc_scene.initial_material[k], atol=1e-6), k
    # same pixels covered, same fit within sampling noise
    assert sb_res.views[0].mask_iou == pytest.approx(yc_res.views[0].mask_iou, abs=0.02)
    assert np.allclose(sb_res.material["base_color"], yc_res.material["base_color"], atol=0.04), \
        (sb_res.material["base_color"], yc_res.material["base_color"])
    for res in (sb_res, yc_res):  # both near the truth (the start was (0.7, 0.2, 0.1))
        assert np.allclose(res.material["base_color"], reference["base_color"], atol=0.06), res.material
    assert sb_res.material["roughness"] == pytest.approx(yc_res.material["roughness"], abs=0.05)
    de_b = sb_res.metrics["train"]["mean"]["de2000_mean"]
    de_y = yc_res.metrics["train"]["mean"]["de2000_mean"]
    assert de_b == pytest.approx(de_y, abs=0.5)
    for res in (sb_res, yc_res):  # and the fit did something
        assert res.history[-1]["train_de2000"] < 0.7 * res.history[0]["train_de2000"]
    for p, data in before.items():
        assert p.read_bytes() == data  # write-back went to sublayers


def test_texture_maps_from_the_window_fit_and_write_back_as_omnipbr_textures(tmp_path):
    """The window's texture-map choice reaches the fit; a mesh without UVs is refused when
    the session starts; write-back puts the maps beside the edit layer as OmniPBR inputs."""
    with pytest.raises(InputError, match="Material Fit window: texture maps maps: 'albedo' is not a parameter"):
        C.make_options(maps=["albedo"])
    with pytest.raises(InputError, match="Material Fit window: texture maps resolution"):
        C.make_options(maps=["base_color"], map_resolution=300)
    options = C.make_options(iterations=4, backend="raster", maps=["base_color"], map_resolution=16)
    assert options.textures.maps == ("base_color",) and options.textures.resolution == 16
    plain = write_job(tmp_path / "plain", size=24, cameras=2)
    render_references(plain, TRUE, seed=7)
    with pytest.raises(InputError, match="has no texture coordinates"):
        C.FitSession(_stage_with_refs(plain.parent), "/World/Part", options).start()
    job = write_job(tmp_path / "uv", size=24, cameras=2, uvs=True)
    render_references(job, TRUE, seed=7)
    stage = _stage_with_refs(job.parent)
    session = C.FitSession(stage, "/World/Part", options)
    session.start()
    session.wait()
    assert session.state == "done", session.message
    assert set(session.outcome().textures) == {"base_color"}
    record = session.write_back()
    omni = UsdShade.Shader(stage.GetPrimAtPath(f"{record.material_path}/OmniPBR"))
    texture = omni.GetInput("diffuse_texture").Get().path
    assert texture.startswith("./scene.pbrfit_textures/") and len(record.map_files) == 1
    written = Path(record.map_files[0])
    assert written.is_file()
    C.undo_write_back(stage, record)
    assert not written.exists()
