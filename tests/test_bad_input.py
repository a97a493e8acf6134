"""Every bad input gives an InputError whose one line names the file or prim at fault."""

from pathlib import Path

import numpy as np
import pytest

import stage_builders as sb

from pbrfit.errors import InputError
from pbrfit.images import read_environment, read_image, read_mask, write_exr
from pbrfit.job import load_job
from pbrfit.usd_stage import read_stage

GOOD_VIEW = '[[views]]\ncamera = "/World/Cam"\nimage = "ref.exr"\n'


def _reference(h=24, w=36):
    img = np.zeros((h, w, 4), np.float32)
    img[6:18, 9:27] = 0.5
    img[6:18, 9:27, 3] = 1.0
    return img


def _good(tmp: Path, **stage) -> Path:
    """A valid stage s.usda (Z-up quad, 36x24 camera, DomeLight with env.exr) and ref.exr."""
    stage.setdefault("dome", dict(texture="env.exr"))
    sb.make_stage(tmp / "s.usda", **stage)
    write_exr(tmp / "env.exr", np.ones((8, 16, 3), np.float32))
    write_exr(tmp / "ref.exr", _reference())
    return tmp / "s.usda"


def _job(tmp: Path, text: str, **stage):
    _good(tmp, **stage)
    path = sb.write_job(tmp, text)
    return lambda: load_job(path), [str(path)]


# --- images ---------------------------------------------------------------------------------

def image_missing(tmp):
    return lambda: read_image(tmp / "nope.exr"), ["nope.exr", "does not exist"]


def image_corrupt(tmp):
    (tmp / "bad.exr").write_bytes(b"not an exr at all")
    return lambda: read_image(tmp / "bad.exr"), [str(tmp / "bad.exr")]


def image_truncated(tmp):
    write_exr(tmp / "t.exr", np.random.default_rng(0).uniform(size=(64, 64, 3)).astype(np.float32))
    data = (tmp / "t.exr").read_bytes()
    (tmp / "t.exr").write_bytes(data[: len(data) // 2])
    return lambda: read_image(tmp / "t.exr"), [str(tmp / "t.exr")]


def image_nan(tmp):
    img = np.ones((4, 5, 3), np.float32)
    img[0, 0, 1] = np.nan
    img[1, 1] = np.inf
    img[2, 2, 0] = -np.inf
    write_exr(tmp / "n.exr", img)
    return lambda: read_image(tmp / "n.exr"), [str(tmp / "n.exr"), "3 of 20 pixels", "NaN or Inf"]


def mask_wrong_shape(tmp):
    write_exr(tmp / "m.exr", np.ones((4, 5), np.float32))
    return lambda: read_mask(tmp / "m.exr", (5, 4)), [str(tmp / "m.exr"), "5x4", "4x5"]


def mask_empty(tmp):
    sb.write_png(tmp / "m.png", np.zeros((4, 5), np.uint8))
    return lambda: read_mask(tmp / "m.png", (4, 5)), [str(tmp / "m.png"), "empty"]


def mask_missing(tmp):
    return lambda: read_mask(tmp / "m.png", (4, 5)), [str(tmp / "m.png")]


def environment_not_latlong(tmp):
    write_exr(tmp / "e.exr", np.ones((10, 30, 3), np.float32))
    return lambda: read_environment(tmp / "e.exr"), [str(tmp / "e.exr"), "30x10"]


# --- stages ---------------------------------------------------------------------------------

def stage_missing(tmp):
    return lambda: read_stage(tmp / "no.usda"), [str(tmp / "no.usda")]


def stage_unreadable(tmp):
    (tmp / "bad.usda").write_text("#usda 1.0\ndef Xform \"A\" {{{ nonsense\n")
    return lambda: read_stage(tmp / "bad.usda"), [str(tmp / "bad.usda"), "bad.usda:2:"]


def target_not_found(tmp):
    return lambda: read_stage(_good(tmp), target="/World/Nope"), ["/World/Nope", "/World/Part"]


def target_not_a_mesh(tmp):
    return lambda: read_stage(_good(tmp), target="/World/Cam"), ["/World/Cam", "not a Mesh"]


def target_ambiguous(tmp):
    path = _good(tmp, meshes={"/World/A": sb.QUAD, "/World/B": sb.QUAD})
    return lambda: read_stage(path), [str(path), "/World/A", "/World/B", "target"]


def no_mesh(tmp):
    path = _good(tmp, meshes={})
    return lambda: read_stage(path), [str(path), "no Mesh"]


def camera_not_found(tmp):
    return lambda: read_stage(_good(tmp)).camera("/World/NoCam"), ["/World/NoCam", "/World/Cam"]


def camera_not_a_camera(tmp):
    return lambda: read_stage(_good(tmp)).camera("/World/Part"), ["/World/Part", "not a Camera"]


def camera_zero_aperture(tmp):
    path = _good(tmp, cameras={"/World/Cam": dict(v_ap=0.0)})
    return lambda: read_stage(path).camera("/World/Cam"), ["/World/Cam", "verticalAperture"]


def camera_zero_focal_length(tmp):
    path = _good(tmp, cameras={"/World/Cam": dict(focal=0.0)})
    return lambda: read_stage(path).camera("/World/Cam"), ["/World/Cam", "focalLength"]


def camera_orthographic(tmp):
    path = _good(tmp, cameras={"/World/Cam": dict(projection="orthographic")})
    return lambda: read_stage(path).camera("/World/Cam"), ["/World/Cam", "orthographic"]


def camera_squashed(tmp):
    path = _good(tmp, cameras={"/World/Cam": dict(scale=(1, 2, 1))})
    return lambda: read_stage(path).camera("/World/Cam"), ["/World/Cam", "non-uniform"]


def dome_without_texture(tmp):
    path = _good(tmp, dome=dict(texture=None))
    return lambda: read_stage(path).dome.texture_file(), ["/World/Dome", "texture"]


def dome_texture_missing(tmp):
    path = _good(tmp, dome=dict(texture="hdri/gone.exr"))
    return lambda: read_stage(path).dome.texture_file(), ["/World/Dome", str(tmp / "hdri" / "gone.exr")]


def two_domes(tmp):
    path = _good(tmp)
    from pxr import Usd, UsdLux
    stage = Usd.Stage.Open(str(path))
    UsdLux.DomeLight.Define(stage, "/World/Dome2")
    stage.GetRootLayer().Save()
    return lambda: read_stage(path), ["/World/Dome", "/World/Dome2"]


def mesh_no_faces(tmp):
    path = _good(tmp, meshes={"/World/Part": dict(points=[(0, 0, 0)], counts=[], indices=[])})
    return lambda: read_stage(path), ["/World/Part", "no faces"]


def mesh_zero_area(tmp):
    path = _good(tmp, meshes={"/World/Part": dict(sb.QUAD, points=[(1, 1, 1)] * 4)})
    return lambda: read_stage(path), ["/World/Part", "zero surface area"]


def mesh_nan_points(tmp):
    path = _good(tmp, meshes={"/World/Part": dict(sb.QUAD, points=[(0, 0, 0), (1, 0, 0), (np.nan, 1, 0), (0, 1, 0)])})
    return lambda: read_stage(path), ["/World/Part", "1 of 4 points", "NaN"]


def mesh_bad_indices(tmp):
    path = _good(tmp, meshes={"/World/Part": dict(sb.QUAD, indices=[0, 1, 2, 7])})
    return lambda: read_stage(path), ["/World/Part", "point 7"]


def mesh_bad_normals(tmp):
    path = _good(tmp, meshes={"/World/Part": dict(sb.QUAD, normals=([(0, 0, 1)] * 2, "vertex", None, True))})
    return lambda: read_stage(path), ["/World/Part", "primvars:normals", "needs 4"]


# --- job files ------------------------------------------------------------------------------

def job_missing(tmp):
    return lambda: load_job(tmp / "job.toml"), [str(tmp / "job.toml")]


def job_bad_toml(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n\n[[views]\ncamera = "/World/Cam"\n')
    return run, needles + ["line 3", "TOML"]


def job_missing_scene(tmp):
    run, needles = _job(tmp, GOOD_VIEW)
    return run, needles + ["'scene'"]


def job_missing_camera(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n[[views]]\nimage = "ref.exr"\n')
    return run, needles + ["view 1", "'camera'"]


def job_missing_image(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n[[views]]\ncamera = "/World/Cam"\n')
    return run, needles + ["view 1", "'image'"]


def job_image_file_missing(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n[[views]]\ncamera = "/World/Cam"\nimage = "gone.png"\n')
    return run, needles + [str(tmp / "gone.png")]


def job_scene_missing(tmp):
    run, needles = _job(tmp, 'scene = "other.usda"\n' + GOOD_VIEW)
    return run, needles + [str(tmp / "other.usda")]


def job_unknown_split(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + 'split = "test"\n')
    return run, needles + ["'test'", "train", "validate"]


def job_aspect_mismatch(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW)
    write_exr(tmp / "ref.exr", _reference(24, 30))
    return run, needles + [str(tmp / "ref.exr"), "/World/Cam", "1.2500", "1.5000", "aperture",
                           "verticalAperture = 28.8"]


def job_nan_image(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW)
    img = _reference()
    img[3, 4, 0] = np.nan
    write_exr(tmp / "ref.exr", img)
    return run, needles + [str(tmp / "ref.exr"), "1 of 864 pixels"]


def job_empty_alpha_mask(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW)
    img = _reference()
    img[..., 3] = 0.0
    write_exr(tmp / "ref.exr", img)
    return run, needles + [str(tmp / "ref.exr"), "empty"]


def job_empty_mask_file(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + 'mask = "m.png"\n')
    sb.write_png(tmp / "m.png", np.zeros((24, 36), np.uint8))
    return run, needles + [str(tmp / "m.png"), "empty"]


def job_no_train_views(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + 'split = "validate"\n')
    return run, needles + ["train"]


def job_no_views(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n')
    return run, needles + ["no views"]


def job_duplicate_views(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + GOOD_VIEW)
    return run, needles + ["views 1 and 2", "same"]


def job_duplicate_names(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + 'name = "a"\n' + GOOD_VIEW.replace("ref", "ref2")
                        + 'name = "a"\n')
    write_exr(tmp / "ref2.exr", _reference())
    return run, needles + ["'a'", "views 1 and 2"]


def job_camera_not_found(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n[[views]]\ncamera = "/World/Nope"\nimage = "ref.exr"\n')
    return run, needles + ["/World/Nope", "view 1"]


def job_target_not_found(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\ntarget = "/World/Nope"\n' + GOOD_VIEW)
    return run, needles + ["/World/Nope"]


def job_no_dome(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW, dome=None)
    return run, needles + ["DomeLight", "environment"]


def job_dome_texture_missing(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW, dome=dict(texture="gone.exr"))
    return run, needles + ["/World/Dome", str(tmp / "gone.exr")]


def job_unknown_key(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\niterations = 4\n' + GOOD_VIEW)
    return run, needles + ["iterations", "[fit]"]


def job_unknown_view_key(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + 'camara = "/World/Cam"\n')
    return run, needles + ["camara"]


def job_unknown_fit_key(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + '[fit]\niteration = 4\n')
    return run, needles + ["iteration", "known:"]


def job_bad_fit_values(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + '[fit]\nbounds = { roughness = [0.9, 0.1] }\n')
    return run, needles + ["roughness"]


def job_unknown_parameter(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + '[fit]\nparameters = ["base_colour"]\n')
    return run, needles + ["base_colour"]


def job_unknown_loss(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + '[fit]\nloss = { l1 = 1.0, lpips = 0.5 }\n')
    return run, needles + ["'lpips'", "l1"]


def job_unknown_preset(tmp):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + '[fit]\npreset = "chrome"\n')
    return run, needles + ["chrome", "plastic"]


CASES = [
    image_missing, image_corrupt, image_truncated, image_nan, mask_wrong_shape, mask_empty, mask_missing,
    environment_not_latlong,
    stage_missing, stage_unreadable, target_not_found, target_not_a_mesh, target_ambiguous, no_mesh,
    camera_not_found, camera_not_a_camera, camera_zero_aperture, camera_zero_focal_length, camera_orthographic,
    camera_squashed, dome_without_texture, dome_texture_missing, two_domes, mesh_no_faces, mesh_zero_area,
    mesh_nan_points, mesh_bad_indices, mesh_bad_normals,
    job_missing, job_bad_toml, job_missing_scene, job_missing_camera, job_missing_image, job_image_file_missing,
    job_scene_missing, job_unknown_split, job_aspect_mismatch, job_nan_image, job_empty_alpha_mask,
    job_empty_mask_file, job_no_train_views, job_no_views, job_duplicate_views, job_duplicate_names,
    job_camera_not_found, job_target_not_found, job_no_dome, job_dome_texture_missing, job_unknown_key,
    job_unknown_view_key, job_unknown_fit_key, job_bad_fit_values, job_unknown_parameter, job_unknown_loss,
    job_unknown_preset,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_line_naming_the_culprit(tmp_path, case):
    run, needles = case(tmp_path)
    with pytest.raises(InputError) as info:
        run()
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
