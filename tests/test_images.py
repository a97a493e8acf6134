"""pbrfit.images against independent oracles: colour-science's sRGB curve, a hand-written
PNG encoder, and Blender's own decoding of a bundled DWAB EXR."""

import os

import colour
import numpy as np
import OpenImageIO as oiio
import pytest
import stage_builders as sb

from pbrfit.errors import InputError
from pbrfit.images import linear_to_srgb, read_environment, read_image, read_mask, srgb_to_linear, write_exr, write_png


def test_srgb_curves_match_colour_science():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    oracle = colour.cctf_decoding(x.astype(np.float64), function="sRGB")
    assert np.allclose(srgb_to_linear(x), oracle, atol=1e-6)
    assert np.allclose(linear_to_srgb(oracle), x, atol=1e-5)


def test_png_8bit_straight_alpha_is_decoded_then_premultiplied(tmp_path):
    px = np.zeros((3, 5, 4), np.uint8)
    px[..., 0], px[..., 1], px[..., 2], px[..., 3] = 200, 100, 10, 128
    px[0, 0] = (255, 255, 255, 255)
    rgb, alpha = read_image(sb.write_png(tmp_path / "a.png", px))
    assert rgb.shape == (3, 5, 3) and rgb.dtype == np.float32 and alpha.shape == (3, 5)
    a = 128 / 255
    expected = colour.cctf_decoding(np.array([200, 100, 10]) / 255, function="sRGB") * a
    assert np.allclose(rgb[1, 1], expected, atol=1e-6)
    assert np.isclose(alpha[1, 1], a, atol=1e-6)
    assert np.allclose(rgb[0, 0], 1.0) and alpha[0, 0] == 1.0


def test_png_16bit_and_grey(tmp_path):
    px = np.full((2, 4, 3), 30000, np.uint16)
    rgb, alpha = read_image(sb.write_png(tmp_path / "a16.png", px))
    assert alpha is None
    assert np.allclose(rgb, colour.cctf_decoding(30000 / 65535, function="sRGB"), atol=1e-6)
    grey = np.arange(8, dtype=np.uint8).reshape(2, 4) * 30
    rgb, alpha = read_image(sb.write_png(tmp_path / "g.png", grey))
    assert rgb.shape == (2, 4, 3) and alpha is None
    assert np.allclose(rgb[..., 0], rgb[..., 2]) and np.allclose(rgb[..., 1], srgb_to_linear(grey / 255))


def test_blender_dwab_exr_matches_blenders_own_decoding(blender_dir):
    rgb, alpha = read_image(blender_dir / "forest.exr")
    assert rgb.shape == (512, 1024, 3) and alpha is None
    for x, y, *value in sb.truth(blender_dir)["hdri_samples"]:
        assert np.allclose(rgb[y, x], value, rtol=1e-6, atol=1e-7), (x, y)
    env = read_environment(blender_dir / "forest.exr")
    assert np.array_equal(env, rgb)


def test_exr_roundtrip_is_exact_and_alpha_is_kept_associated(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.gamma(0.5, 2.0, size=(6, 10, 4)).astype(np.float32)
    img[..., 3] = rng.uniform(0, 1, size=(6, 10))
    img[..., :3] *= img[..., 3:]  # associated, EXR's convention
    write_exr(tmp_path / "a.exr", img)
    rgb, alpha = read_image(tmp_path / "a.exr")
    assert np.array_equal(rgb, img[..., :3]) and np.array_equal(alpha, img[..., 3])
    write_exr(tmp_path / "h.exr", img[..., :3], half=True)
    rgb, alpha = read_image(tmp_path / "h.exr")
    assert alpha is None and np.allclose(rgb, img[..., :3], rtol=1e-3, atol=1e-6)
    assert oiio.ImageInput.open(str(tmp_path / "h.exr")).spec().format == oiio.HALF


def test_multilayer_exr_channels_are_found(tmp_path):
    spec = oiio.ImageSpec(4, 2, 5, oiio.FLOAT)
    spec.channelnames = ("ViewLayer.Combined.A", "ViewLayer.Combined.B", "ViewLayer.Combined.G",
                         "ViewLayer.Combined.R", "ViewLayer.Depth.Z")
    data = np.zeros((2, 4, 5), np.float32)
    data[..., 0], data[..., 1], data[..., 2], data[..., 3], data[..., 4] = 0.5, 0.3, 0.2, 0.1, 9.0
    out = oiio.ImageOutput.create(str(tmp_path / "ml.exr"))
    assert out.open(str(tmp_path / "ml.exr"), spec) and out.write_image(data)
    out.close()
    rgb, alpha = read_image(tmp_path / "ml.exr")
    assert np.allclose(rgb, [0.1, 0.2, 0.3]) and np.allclose(alpha, 0.5)


def test_read_mask_grey_alpha_and_shape(tmp_path):
    m = np.zeros((4, 6), np.uint8)
    m[1:3, 2:5] = 255
    m[0, 0] = 128
    mask = read_mask(sb.write_png(tmp_path / "m.png", m), (4, 6))
    assert mask.dtype == np.float32 and mask.shape == (4, 6)
    assert mask[1, 2] == 1.0 and mask[3, 5] == 0.0
    assert np.isclose(mask[0, 0], 128 / 255)  # coverage as stored, no sRGB decoding
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 3] = m
    assert np.array_equal(read_mask(sb.write_png(tmp_path / "ma.png", rgba), (4, 6)), mask)
    write_exr(tmp_path / "m.exr", mask)
    assert np.array_equal(read_mask(tmp_path / "m.exr", (4, 6)), mask)


def test_environment_must_be_two_to_one(tmp_path):
    write_exr(tmp_path / "ok.exr", np.ones((10, 20, 3), np.float32))
    assert read_environment(tmp_path / "ok.exr").shape == (10, 20, 3)
    write_exr(tmp_path / "sq.exr", np.ones((10, 10, 3), np.float32))
    with pytest.raises(InputError, match="sq.exr is 10x10"):
        read_environment(tmp_path / "sq.exr")


def test_write_png_is_atomic_and_roundtrips(tmp_path):
    img = np.linspace(0, 1, 2 * 3 * 3).reshape(2, 3, 3)
    write_png(tmp_path / "o.png", img)
    write_png(tmp_path / "o.png", img)  # overwriting works too
    assert sorted(os.listdir(tmp_path)) == ["o.png"]  # no temporary file left behind
    back = oiio.ImageInput.open(str(tmp_path / "o.png")).read_image(oiio.UINT8)
    assert np.array_equal(back, np.round(img * 255).astype(np.uint8))
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    write_png(tmp_path / "a.png", rgba)
    rgb, alpha = read_image(tmp_path / "a.png")  # straight alpha survives the round trip
    assert np.allclose(rgb[..., 0], srgb_to_linear(200 / 255) * 128 / 255, atol=1e-6)
    with pytest.raises(InputError, match="does not exist"):
        write_exr(tmp_path / "missing" / "x.exr", np.zeros((2, 2, 3)))


def test_jpeg_is_srgb(tmp_path):
    spec = oiio.ImageSpec(16, 8, 3, oiio.UINT8)
    out = oiio.ImageOutput.create(str(tmp_path / "a.jpg"))
    assert out.open(str(tmp_path / "a.jpg"), spec) and out.write_image(np.full((8, 16, 3), 128, np.uint8))
    out.close()
    rgb, alpha = read_image(tmp_path / "a.jpg")
    assert alpha is None and np.allclose(rgb, srgb_to_linear(128 / 255), atol=0.01)


def test_exr_data_window_is_placed_in_the_display_window(tmp_path):
    spec = oiio.ImageSpec(4, 3, 4, oiio.FLOAT)
    spec.x, spec.y = 1, 1
    spec.full_x, spec.full_y, spec.full_width, spec.full_height = 0, 0, 6, 5
    out = oiio.ImageOutput.create(str(tmp_path / "dw.exr"))
    assert out.open(str(tmp_path / "dw.exr"), spec) and out.write_image(np.ones((3, 4, 4), np.float32))
    out.close()
    rgb, alpha = read_image(tmp_path / "dw.exr")
    assert rgb.shape == (5, 6, 3) and alpha.sum() == 12 and alpha[1:4, 1:5].all() and rgb[0].sum() == 0
