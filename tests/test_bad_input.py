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


# --- lighting: ΔE2000's white must exist ------------------------------------------------------

def _env_job(tmp, env, **dome):
    run, needles = _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW, dome=dict(texture="env.exr", **dome))
    if env is not None:
        write_exr(tmp / "env.exr", env)
    return run, needles


def environment_black(tmp):
    run, needles = _env_job(tmp, np.zeros((8, 16, 3), np.float32))
    return run, needles + [str(tmp / "env.exr"), "black"]


def environment_all_negative(tmp):
    run, needles = _env_job(tmp, -np.ones((8, 16, 3), np.float32))
    return run, needles + [str(tmp / "env.exr"), "128 of 128 texels", "negative"]


def environment_near_zero(tmp):
    run, needles = _env_job(tmp, np.full((8, 16, 3), 1e-30, np.float32))
    return run, needles + [str(tmp / "env.exr"), "black"]


def environment_too_dim_for_its_image(tmp):
    run, needles = _env_job(tmp, np.full((8, 16, 3), 1e-9, np.float32))
    return run, needles + [str(tmp / "env.exr"), str(tmp / "ref.exr"), "times brighter"]


def dome_intensity_zero(tmp):
    run, needles = _env_job(tmp, None, intensity=0.0)
    return run, needles + ["/World/Dome", "intensity 0", str(tmp / "env.exr"), "black"]


def dome_exposure_overflows(tmp):
    run, needles = _env_job(tmp, None, exposure=5000.0)
    return run, needles + ["/World/Dome", "exposure 5000", "overflows"]


def dome_negative_intensity(tmp):
    run, needles = _env_job(tmp, None, intensity=-2.0)
    return run, needles + ["/World/Dome", "negative"]


# --- stages that USD only warns about --------------------------------------------------------

def stage_missing_sublayer(tmp):
    path = _good(tmp)
    from pxr import Sdf
    layer = Sdf.Layer.FindOrOpen(str(path))
    layer.subLayerPaths.append("./gone/extra.usda")
    layer.Save()
    return lambda: read_stage(path), [str(path), "sublayer", "gone/extra.usda"]


def stage_missing_reference(tmp):
    path = _good(tmp)
    from pxr import Usd
    stage = Usd.Stage.Open(str(path))
    stage.DefinePrim("/World/Prop").GetReferences().AddReference("./props/missing_prop.usda")
    stage.GetRootLayer().Save()
    return lambda: read_stage(path), [str(path), "missing_prop.usda"]


# --- images ---------------------------------------------------------------------------------

def image_alpha_only(tmp):
    import OpenImageIO as oiio
    spec = oiio.ImageSpec(5, 4, 1, oiio.FLOAT)
    spec.channelnames = ("A",)
    spec.alpha_channel = 0
    out = oiio.ImageOutput.create(str(tmp / "a.exr"))
    out.open(str(tmp / "a.exr"), spec)
    out.write_image(np.ones((4, 5, 1), np.float32))
    out.close()
    return lambda: read_image(tmp / "a.exr"), [str(tmp / "a.exr"), "only an alpha channel", "(A)"]


def image_too_many_pixels(tmp):
    import pbrfit.images as images
    write_exr(tmp / "big.exr", np.ones((40, 60, 3), np.float32))

    def run():
        saved, images.MAX_READ_PIXELS = images.MAX_READ_PIXELS, 1000
        try:
            read_image(tmp / "big.exr")
        finally:
            images.MAX_READ_PIXELS = saved
    return run, [str(tmp / "big.exr"), "60x40", "megapixels"]


# --- material files (validate --material) ---------------------------------------------------

def _material_file(tmp, params=None, raw=None):
    import json

    from pbrfit.params import default_material
    doc = {"format": "pbrfit.material/1", "parameters": dict(default_material(), **(params or {}))}
    (tmp / "m.json").write_text(raw if raw is not None else json.dumps(doc))
    from pbrfit.outputs import read_material_json
    return lambda: read_material_json(tmp / "m.json")


def material_roughness_out_of_range(tmp):
    return _material_file(tmp, {"roughness": 5.0}), [str(tmp / "m.json"), "roughness = 5", "[0, 1]"]


def material_negative_colour(tmp):
    return _material_file(tmp, {"base_color": [-0.5, 0.2, 0.2]}), [str(tmp / "m.json"), "base_color", "-0.5"]


def material_huge_film(tmp):
    return (_material_file(tmp, {"thin_film_thickness": 1e9}),
            [str(tmp / "m.json"), "thin_film_thickness = 1e+09", "[0, 1500]"])


def material_nan(tmp):
    return (_material_file(tmp, raw='{"parameters": {"roughness": NaN}}'), [str(tmp / "m.json"), "roughness",
                                                                            "not finite"])


def material_without_parameters(tmp):
    return _material_file(tmp, raw='{"roughness": 0.5}'), [str(tmp / "m.json"), "no 'parameters'"]


def material_missing_keys(tmp):
    return (_material_file(tmp, raw='{"parameters": {"roughness": 0.5, "base_color": [0.5, 0.5, 0.5]}}'),
            [str(tmp / "m.json"), "lacks", "metallic", "defaults"])


def material_unknown_key(tmp):
    return _material_file(tmp, {"roughnes": 0.5}), [str(tmp / "m.json"), "roughnes"]


# --- [fit] values the command line shares (see test_hostile_inputs for that route) -----------

def _fit_job(tmp, fit):
    return _job(tmp, 'scene = "s.usda"\n' + GOOD_VIEW + "[fit]\n" + fit)


def job_fit_time_budget_nan(tmp):
    run, needles = _fit_job(tmp, "time_budget = nan\n")
    return run, needles + ["[fit] time_budget", "finite"]


def job_fit_negative_loss_weight(tmp):
    run, needles = _fit_job(tmp, "loss = { de2000 = -1.0 }\n")
    return run, needles + ["[fit] loss", "de2000", ">= 0"]


def job_fit_seed_overflows(tmp):
    run, needles = _fit_job(tmp, "seed = 99999999999\n")
    return run, needles + ["[fit] seed", "4294967295"]


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
    # issue 10: lighting, stages, images, material files, [fit] values
    environment_black, environment_all_negative, environment_near_zero, environment_too_dim_for_its_image,
    dome_intensity_zero, dome_exposure_overflows, dome_negative_intensity,
    stage_missing_sublayer, stage_missing_reference, image_alpha_only, image_too_many_pixels,
    material_roughness_out_of_range, material_negative_colour, material_huge_film, material_nan,
    material_without_parameters, material_missing_keys, material_unknown_key,
    job_fit_time_budget_nan, job_fit_negative_loss_weight, job_fit_seed_overflows,
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


def test_missing_sublayer_is_not_only_a_usd_warning(tmp_path, capfd):
    """USD prints a C++ warning and goes on; pbrfit refuses with its own line and no other output."""
    run, _ = stage_missing_sublayer(tmp_path)
    with pytest.raises(InputError):
        run()
    captured = capfd.readouterr()
    assert "Warning" not in captured.err and "stage.cpp" not in captured.err, captured.err


def test_job_file_with_a_byte_order_mark_loads(tmp_path):
    _good(tmp_path)
    path = tmp_path / "job.toml"
    path.write_bytes(b"\xef\xbb\xbf" + ('scene = "s.usda"\n' + GOOD_VIEW).encode())
    assert load_job(path).scene.views[0].name == "Cam"


def test_alpha_only_file_is_a_mask(tmp_path):
    image_alpha_only(tmp_path)
    mask = read_mask(tmp_path / "a.exr", (4, 5))
    assert mask.shape == (4, 5) and float(mask.min()) == 1.0


def test_hdri_inside_a_usdz_package_is_read(tmp_path):
    from pxr import Sdf, UsdUtils
    (tmp_path / "hdri").mkdir()
    sb.make_stage(tmp_path / "s.usda", dome=dict(texture="hdri/env.exr"))
    env = np.ones((8, 16, 3), np.float32) * np.array([1.0, 0.5, 0.25], np.float32)
    write_exr(tmp_path / "hdri" / "env.exr", env)
    write_exr(tmp_path / "ref.exr", _reference())
    assert UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(tmp_path / "s.usda")), str(tmp_path / "pkg.usdz"))
    (tmp_path / "hdri" / "env.exr").unlink()  # only the packaged copy is left
    path = sb.write_job(tmp_path, 'scene = "pkg.usdz"\n' + GOOD_VIEW)
    job = load_job(path)
    np.testing.assert_allclose(job.scene.views[0].environment.image, env)
    assert str(tmp_path / "pkg.usdz") in job.input_files and not [f for f in job.input_files if "pbrfit-usdz" in f]


def test_large_reference_is_used_at_the_working_resolution(tmp_path):
    """A reference larger than MAX_WORKING_SIZE is area-averaged down (mean radiance and
    coverage kept) and the scene carries a note saying so."""
    from pbrfit.images import MAX_WORKING_SIZE
    h, w = 800, 1200
    sb.make_stage(tmp_path / "s.usda", dome=dict(texture="env.exr"))
    write_exr(tmp_path / "env.exr", np.ones((8, 16, 3), np.float32))
    big = _reference(h, w)
    big[..., :3] *= np.linspace(0.5, 1.5, w, dtype=np.float32)[None, :, None]
    write_exr(tmp_path / "ref.exr", big)
    job = load_job(sb.write_job(tmp_path, 'scene = "s.usda"\n' + GOOD_VIEW))
    view = job.scene.views[0]
    assert view.image.shape[:2] == (round(h * MAX_WORKING_SIZE / w), MAX_WORKING_SIZE)
    np.testing.assert_allclose(view.image.mean(), big[..., :3].mean(), rtol=1e-4)
    np.testing.assert_allclose(view.mask.mean(), big[..., 3].mean(), rtol=1e-4)
    assert len(job.scene.notes) == 1 and "1200x800" in job.scene.notes[0]["message"]
