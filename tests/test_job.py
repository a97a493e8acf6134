"""pbrfit.job: a job over a stage written by Blender's USD exporter, fit options, masks,
environments, and the bundled example."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import stage_builders as sb

from pbrfit.errors import InputError
from pbrfit.images import read_environment, read_image, write_exr, write_png
from pbrfit.job import load_job
from pbrfit.usd_stage import default_world_from_dome, read_stage

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo" / "job.toml"


def _reference(h=120, w=160, alpha=True, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 2, size=(h, w, 4)).astype(np.float32)
    img[..., 3] = 0.0
    img[h // 4: 3 * h // 4, w // 4: 3 * w // 4, 3] = 1.0
    img[..., :3] *= img[..., 3:]
    return img if alpha else img[..., :3]


@pytest.fixture
def blender_job(blender_dir, tmp_path):
    """A job folder around Blender's mapping.usda: one EXR view, one PNG view with a mask
    file and another environment."""
    shutil.copy(blender_dir / "mapping.usda", tmp_path / "scene.usda")
    shutil.copy(blender_dir / "forest.exr", tmp_path / "forest.exr")
    (tmp_path / "refs").mkdir()
    write_exr(tmp_path / "refs" / "front.exr", _reference())
    rgba = np.zeros((120, 160, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 180, 255
    rgba[0, 0, 3] = 0  # an alpha channel that the mask file overrides
    write_png(tmp_path / "refs" / "back.png", rgba)
    mask = np.zeros((120, 160), np.uint8)
    mask[40:80, 50:110] = 255
    write_png(tmp_path / "refs" / "back_mask.png", mask)
    (tmp_path / "hdri").mkdir()
    write_exr(tmp_path / "hdri" / "city.exr", np.full((16, 32, 3), 0.25, np.float32))
    return sb.write_job(tmp_path, """
scene = "scene.usda"
target = "/root/Part"

[[views]]
camera = "/root/Cam"
image = "refs/front.exr"

[[views]]
camera = "/root/Cam/CamData"
image = "refs/back.png"
mask = "refs/back_mask.png"
environment = "hdri/city.exr"
split = "validate"
name = "back"

[fit]
preset = "plastic"
iterations = 50
time_budget = 30
loss = { l1 = 1.0, ssim = 0.25 }
bounds = { roughness = [0.1, 0.8] }
""")


def test_blender_job_loads(blender_job, blender_dir):
    folder = blender_job.parent
    job = load_job(blender_job)
    s = job.scene
    stage = read_stage(folder / "scene.usda")
    assert s.target == "/root/Part/PartMesh" and s.up_axis == "Z" and s.meters_per_unit == 1.0
    assert s.stage_path == str(folder / "scene.usda")
    assert np.array_equal(s.mesh.positions, stage.mesh.positions)
    assert s.initial_material_source.endswith("(OpenPBR)")
    assert np.allclose(s.initial_material["base_color"], sb.truth(blender_dir)["material"]["base_color"])

    front, back = s.views
    assert (front.name, front.split, back.name, back.split) == ("Cam", "train", "back", "validate")
    assert front.camera.prim_path == back.camera.prim_path == "/root/Cam/CamData"
    assert np.array_equal(front.camera.world_from_camera, stage.cameras["/root/Cam/CamData"].world_from_camera)
    rgb, alpha = read_image(folder / "refs" / "front.exr")
    assert np.array_equal(front.image, rgb) and np.array_equal(front.mask, alpha)
    assert front.resolution == (120, 160)
    assert np.array_equal(front.environment.image, read_environment(folder / "forest.exr"))
    assert front.environment.source == str(folder / "forest.exr")
    for view in (front, back):  # the override keeps the DomeLight's orientation and scale
        assert np.allclose(view.environment.world_from_dome, default_world_from_dome("Z"))
        assert np.allclose(view.environment.scale, 1.0)
    assert back.environment.source == str(folder / "hdri" / "city.exr")
    assert np.allclose(back.environment.image, 0.25)
    assert back.mask.sum() == 40 * 60  # the mask file, not the PNG's alpha
    assert back.image_path == str(folder / "refs" / "back.png")

    assert job.fit_options == {"preset": "plastic", "iterations": 50, "time_budget": 30.0,
                               "loss": {"l1": 1.0, "ssim": 0.25}, "bounds": {"roughness": [0.1, 0.8]}}
    assert job.job_path == blender_job
    assert job.input_files == [str(folder / p) for p in (
        "job.toml", "scene.usda", "refs/front.exr", "forest.exr", "refs/back.png", "refs/back_mask.png",
        "hdri/city.exr")]


def test_overrides_replace_fit_options(blender_job):
    job = load_job(blender_job, {"iterations": 7, "backend": None, "seed": 3})
    assert job.fit_options["iterations"] == 7 and job.fit_options["seed"] == 3 and "backend" not in job.fit_options
    with pytest.raises(InputError, match="option 'iterations': must be a whole number from 1"):
        load_job(blender_job, {"iterations": 0})


def _stage_job(tmp_path, dome, views, up="Z", image=None):
    sb.make_stage(tmp_path / "s.usda", up=up, dome=dome)
    write_exr(tmp_path / "env.exr", np.ones((8, 16, 3), np.float32))
    write_exr(tmp_path / "ref.exr", _reference(24, 36) if image is None else image)
    return sb.write_job(tmp_path, 'scene = "s.usda"\n' + views)


def test_dome_scale_environment_sharing_and_default_names(tmp_path):
    path = _stage_job(tmp_path, dict(texture="env.exr", intensity=2.0, exposure=-1.0, color=(1.0, 0.5, 0.25)), """
[[views]]
camera = "/World/Cam"
image = "ref.exr"
[[views]]
camera = "/World/Cam"
image = "ref.exr"
environment = "other.exr"
split = "validate"
""")
    write_exr(tmp_path / "other.exr", np.full((8, 16, 3), 3.0, np.float32))
    a, b = load_job(path).scene.views
    assert np.allclose(a.environment.scale, [1.0, 0.5, 0.25]) and np.allclose(b.environment.scale, a.environment.scale)
    assert (a.name, b.name) == ("Cam", "Cam@other")


def test_views_share_one_environment_array(tmp_path):
    path = _stage_job(tmp_path, dict(texture="env.exr"), """
[[views]]
camera = "/World/Cam"
image = "ref.exr"
[[views]]
camera = "/World/Cam"
image = "ref2.exr"
""")
    write_exr(tmp_path / "ref2.exr", _reference(24, 36, seed=1))
    a, b = load_job(path).scene.views
    assert a.environment.image is b.environment.image
    assert (a.name, b.name) == ("Cam", "Cam_ref2")


@pytest.mark.parametrize("up", ["Y", "Z"])
def test_no_dome_with_environment_uses_the_default_orientation(tmp_path, up):
    path = _stage_job(tmp_path, None, '[[views]]\ncamera = "/World/Cam"\nimage = "ref.exr"\nenvironment = "env.exr"\n',
                      up=up)
    view = load_job(path).scene.views[0]
    assert np.allclose(view.environment.world_from_dome, default_world_from_dome(up))
    assert np.allclose(view.environment.scale, 1.0)


def test_opaque_alpha_means_no_mask(tmp_path):
    img = _reference(24, 36)
    img[..., 3] = 1.0
    path = _stage_job(tmp_path, dict(texture="env.exr"), '[[views]]\ncamera = "/World/Cam"\nimage = "ref.exr"\n',
                      image=img)
    assert load_job(path).scene.views[0].mask is None


def test_time_and_relative_paths(tmp_path):
    (tmp_path / "job").mkdir()
    _stage_job(tmp_path, dict(texture="env.exr"), "")
    path = sb.write_job(tmp_path / "job", 'scene = "../s.usda"\ntime = 3\n[[views]]\ncamera = "/World/Cam"\n'
                                          'image = "../ref.exr"\n')
    job = load_job(path)
    assert job.scene.stage_path == str(tmp_path / "s.usda")
    assert job.scene.views[0].image_path == str(tmp_path / "ref.exr")


@pytest.mark.skipif(not DEMO.exists(), reason="examples/demo/job.toml not built yet")
def test_bundled_example_loads():
    job = load_job(DEMO)
    s = job.scene
    assert s.up_axis == "Z" and len(s.mesh.triangles) > 0
    assert s.split("train") and all(v.image.shape[2] == 3 for v in s.views)
    for v in s.views:
        assert v.mask is not None and 0 < v.mask.mean() < 1
        assert np.allclose(v.environment.world_from_dome @ [0, 1, 0], [0, 0, 1], atol=1e-6)
        assert np.allclose(v.environment.world_from_dome @ [0, 0, 1], [1, 0, 0], atol=1e-6)
    assert len({v.name for v in s.views}) == len(s.views)
    assert all(Path(f).is_file() for f in job.input_files)
