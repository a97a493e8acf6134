"""What the extension's tests check, as plain functions: run inside Kit by
:mod:`.test_material_fit` (omni.kit.test, the ``[[test]]`` in config/extension.toml) and in
plain Python CI under usd-core by the project's tests/test_omniverse.py.

Each builds what it needs in a temporary folder: a small lit sphere on an in-memory stage,
reference photos rendered by the engine with a known material.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

__all__ = ["TRUE_MATERIAL", "check_engine_runs_here", "small_stage", "check_fit_recovers_the_colour"]

#: the material the small stage's reference photos show
TRUE_MATERIAL = {"base_color": [0.7, 0.3, 0.15], "roughness": 0.4}


def check_engine_runs_here() -> None:
    """The engine and every dependency import in this Python (what [python.pipapi] installs)."""
    from ..dependencies import problem

    assert problem(refresh=True) is None, problem()


def small_stage(folder: Path, size: int = 24):
    """An in-memory stage: an icosphere at the origin, two cameras with reference photos of
    :data:`TRUE_MATERIAL` (rendered by the engine), a DomeLight with a two-tone sky."""
    import numpy as np
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdLux

    from pbrfit.images import write_exr
    from pbrfit.params import ParameterSpace, normalize_material
    from pbrfit.render import RasterRenderer, SampleCounts

    from .. import controller

    folder = Path(folder)
    sky = np.ones((16, 32, 3), np.float32) * 0.4
    sky[:8] = [1.6, 1.5, 1.3]  # bright upper hemisphere
    write_exr(folder / "sky.exr", sky)
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    t = (1 + math.sqrt(5)) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6],
         [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
         [8, 6, 7], [9, 8, 1]]
    mesh = UsdGeom.Mesh.Define(stage, "/World/Part")
    mesh.CreatePointsAttr([Gf.Vec3f(*p) for p in v])
    mesh.CreateFaceVertexCountsAttr([3] * len(f))
    mesh.CreateFaceVertexIndicesAttr([i for tri in f for i in tri])
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    for k, eye in enumerate(([0.0, 0.8, 4.0], [3.5, 0.5, -2.0])):
        eye = np.array(eye)
        fwd = -eye / np.linalg.norm(eye)
        right = np.cross(fwd, [0, 1, 0])
        right /= np.linalg.norm(right)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(right, fwd), -fwd, eye
        cam = UsdGeom.Camera.Define(stage, f"/World/Cam{k}")
        cam.AddTransformOp().Set(Gf.Matrix4d(m.T.tolist()))
        cam.CreateFocalLengthAttr(50.0)
        cam.CreateHorizontalApertureAttr(36.0)
        cam.CreateVerticalApertureAttr(36.0)
        write_exr(folder / f"cam{k}.exr", np.ones((size, size, 4), np.float32))  # opaque: no mask; replaced below
        controller.set_reference(stage, f"/World/Cam{k}", str(folder / f"cam{k}.exr"))
    UsdLux.DomeLight.Define(stage, "/World/Dome").CreateTextureFileAttr(Sdf.AssetPath(str(folder / "sky.exr")))
    scene, _ = controller.build_fit_scene(stage, "/World/Part")
    renderer = RasterRenderer(scene, SampleCounts(32, 8, 16, 8), seed=11)
    space = ParameterSpace(normalize_material(TRUE_MATERIAL), [])
    material = space.material(space.initial_vector())
    for i in range(len(scene.views)):
        image = renderer.render_image(i, material)
        coverage = renderer.prepare(i).geometry.coverage.astype(np.float32)
        write_exr(folder / f"cam{i}.exr", np.concatenate([image, coverage[..., None]], -1))
    return stage


def check_fit_recovers_the_colour(folder: Path | None = None):
    """A short fit of base colour through the window's session finds the true colour."""
    import numpy as np

    from .. import controller

    with tempfile.TemporaryDirectory(prefix="pbrfit_kit_check.") as tmp:
        stage = small_stage(Path(folder or tmp))
        options = controller.make_options("default", iterations=6, samples=16, backend="raster")
        options.parameters = ["base_color"]
        session = controller.FitSession(stage, "/World/Part", options)
        session.start()
        assert session.wait(300), "the fit did not finish in 300 s"
        result = session.outcome()
    error = np.abs(np.array(result.material["base_color"]) - TRUE_MATERIAL["base_color"]).max()
    assert error < 0.05, (result.material["base_color"], TRUE_MATERIAL["base_color"])
    return result
