"""Colour correction by a ColorChecker Classic (pbrfit.colorchart): the reference values, the
chart's detection (OpenCV mcc) and correction, and a job's ``color_chart`` key."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic import render_references, write_job

from pbrfit.colorchart import REFERENCE, chart_correction
from pbrfit.errors import InputError
from pbrfit.images import linear_to_srgb, read_image, write_exr, write_png
from pbrfit.job import load_job

#: a camera's colour response: crosstalk between channels and a white balance
CAMERA = np.array([[0.9, 0.12, -0.02], [0.05, 1.0, -0.05], [0.0, 0.08, 0.8]]) * [[1.1], [1.0], [0.85]]


def chart_photo(path, light: float = 0.6, size=(900, 700)) -> None:
    """An 8-bit sRGB photo of a ColorChecker (its reflectances, perspective-warped onto a grey
    wall) under ``light``, through :data:`CAMERA`."""
    import cv2

    p, g = 60, 10
    w, h = 6 * p + 7 * g, 4 * p + 5 * g
    chart = np.full((h, w, 3), 0.02, np.float32)
    for k, c in enumerate(REFERENCE):
        r, col = divmod(k, 6)
        chart[g + r * (p + g):g + r * (p + g) + p, g + col * (p + g):g + col * (p + g) + p] = np.clip(c, 0, 1)
    corners = np.float32([[180, 150], [720, 190], [700, 520], [160, 480]])
    warp = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), corners)
    warped = cv2.warpPerspective(chart, warp, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=(-1, -1, -1))
    scene = np.where(warped >= 0, warped, 0.25)
    write_png(path, np.clip(linear_to_srgb(np.clip(light * scene @ CAMERA.T, 0, 1)), 0, 1))


def test_the_reference_is_colour_sciences_colorchecker_in_linear_rec709():
    import colour

    cc = colour.CCS_COLOURCHECKERS["ColorChecker24 - After November 2014"]
    xyz = colour.xyY_to_XYZ(np.array(list(cc.data.values())))
    rgb = colour.XYZ_to_RGB(xyz, colour.RGB_COLOURSPACES["sRGB"], illuminant=cc.illuminant,
                            chromatic_adaptation_transform="Bradford")
    assert np.allclose(REFERENCE, rgb, atol=1e-4)


def test_the_correction_undoes_the_cameras_colour_response_and_keeps_the_exposure(tmp_path):
    chart_photo(tmp_path / "chart.png")
    rgb, _ = read_image(tmp_path / "chart.png")
    c = chart_correction(rgb, "chart.png")
    product = c.matrix @ CAMERA
    scale = product.trace() / 3
    assert np.allclose(product / scale, np.eye(3), atol=0.02)  # the camera's response, undone
    # the level is the photo's: a grey keeps its luminance (not raised to the chart's reflectance)
    luma = np.array([0.2126, 0.7152, 0.0722])
    assert scale == pytest.approx(luma @ CAMERA @ np.ones(3), rel=0.02)
    assert c.residual_de2000[0] < 0.8 and c.residual_de2000[1] < 2.0


def test_a_photo_without_a_chart_is_refused_by_name(tmp_path):
    write_png(tmp_path / "wall.png", np.full((300, 400, 3), 0.5, np.float32))
    rgb, _ = read_image(tmp_path / "wall.png")
    with pytest.raises(InputError, match="wall.png: no ColorChecker Classic"):
        chart_correction(rgb, "wall.png")


def test_a_views_color_chart_corrects_its_photo(tmp_path):
    job = write_job(tmp_path / "case", size=40, cameras=2)
    render_references(job, {"base_color": [0.6, 0.3, 0.15], "roughness": 0.4}, seed=3)
    truth = read_image(job.parent / "refs" / "cam1.exr")
    # the photo as the camera saw it: through its colour response
    write_exr(job.parent / "refs" / "cam1.exr", np.concatenate([truth[0] @ CAMERA.T, truth[1][..., None]], -1))
    chart_photo(job.parent / "chart.png", light=1.0)
    text = job.read_text().replace('image = "refs/cam1.exr"', 'image = "refs/cam1.exr"\ncolor_chart = "chart.png"')
    job.write_text(text)
    loaded = load_job(job)
    corrected = loaded.scene.views[1].image
    inside = truth[1] > 0.99
    ratio = corrected[inside].sum(0) / truth[0][inside].sum(0)
    assert np.allclose(ratio / ratio.mean(), 1.0, atol=0.02), ratio  # the colour is the truth's again
    assert any("ColorChecker in" in n["message"] and "residual" in n["message"] for n in loaded.scene.notes)
    shutil.copy(job.parent / "refs" / "cam0.exr", job.parent / "nochart.exr")
    job.write_text(text.replace('color_chart = "chart.png"', 'color_chart = "nochart.exr"'))
    with pytest.raises(InputError, match="nochart.exr: no ColorChecker Classic"):
        load_job(job)


def test_a_real_camera_jpeg_of_a_chart_is_found_and_corrected():
    """A hand-held daylight JPEG of a ColorChecker Classic (MIT; tests/data/real_photos/README.md):
    the chart is found the right way round (the neutral row falls from white to black), and the
    3x3 correction brings its patches closer to the chart's values than the camera's colours
    (both compared at the white patch's level). A camera JPEG's tone curve is not a 3x3, so
    some residual stays."""
    import torch

    from pbrfit.color import delta_e2000_linear, luminance
    from pbrfit.colorchart import NEUTRALS, correction_of

    photo = Path(__file__).parent / "data" / "real_photos" / "colorchecker" / "img-colorchecker.jpg"
    correction = correction_of(photo, None, "test")
    grey = luminance(torch.as_tensor(correction.measured[NEUTRALS])).numpy()
    assert (np.diff(grey) < 0).all(), grey

    def de(rgb):
        scale = float(luminance(torch.as_tensor(REFERENCE[18]))) / float(luminance(torch.as_tensor(rgb[18])))
        return delta_e2000_linear(torch.as_tensor(rgb * scale), torch.as_tensor(REFERENCE), white=1.0).numpy()

    before = de(correction.measured)
    mean, worst = correction.residual_de2000
    assert mean == pytest.approx(de(correction.apply(correction.measured)).mean(), rel=1e-4)
    assert mean < 5.0 and mean < 0.85 * before.mean(), (mean, before.mean())  # measured: 3.9 against 5.2


def test_a_raw_chart_photo_is_developed_before_the_chart_is_found(tmp_path):
    """color_chart naming a camera RAW file: developed by LibRaw as the view's RAW photo would be
    (not read as its undemosaiced sensor mosaic), then corrected as any chart photo."""
    from dng import write_dng

    from pbrfit.colorchart import correction_of

    chart_photo(tmp_path / "chart.png", size=(900, 700))
    rgb, _ = read_image(tmp_path / "chart.png")
    write_dng(tmp_path / "chart.dng", np.clip(rgb, 0, 1))
    c = correction_of(tmp_path / "chart.dng", None, "test")
    product = c.matrix @ CAMERA
    assert np.allclose(product / (product.trace() / 3), np.eye(3), atol=0.03)
    assert c.residual_de2000[0] < 1.0
