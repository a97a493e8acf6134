"""Camera RAW reference photos (pbrfit.raw): developed linear by the real LibRaw (rawpy) from
DNG files written by tests/fixtures/dng.py with a known truth, used by a fit, and refused with
one line when they cannot be read."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
from dng import write_dng
from synthetic import render_references, write_job

from pbrfit.errors import InputError
from pbrfit.fit import FitOptions, fit_material
from pbrfit.images import read_image, write_png
from pbrfit.job import load_job
from pbrfit.raw import read_raw

TRUTH = {"base_color": [0.55, 0.2, 0.08], "roughness": 0.35}


def _ramp(h=64, w=96):
    img = np.zeros((h, w, 3))
    img[..., 0] = np.linspace(0.05, 0.6, w)[None]
    img[..., 1] = 0.3
    img[..., 2] = np.linspace(0.5, 0.1, h)[:, None]
    return img


def test_a_dng_is_developed_linear_with_the_chosen_white_balance(tmp_path):
    truth = _ramp()
    inner = (slice(4, -4), slice(4, -4))  # away from the demosaic's border
    as_d65 = write_dng(tmp_path / "d65.dng", truth)
    np.testing.assert_allclose(read_raw(as_d65)[inner], truth[inner], rtol=0.01, atol=2e-4)
    # shot with a warmer camera white balance: "camera" applies it, "daylight" does not
    warm = write_dng(tmp_path / "warm.dng", truth, as_shot=(0.5 * 1.25, 1.0, 0.7 * 0.8))
    camera, daylight = read_raw(warm)[inner], read_raw(warm, "daylight")[inner]
    np.testing.assert_allclose(daylight, truth[inner], rtol=0.01, atol=2e-4)
    ratio = camera.mean((0, 1)) / daylight.mean((0, 1))
    assert ratio[0] < 0.95 * ratio[1] and ratio[2] > 1.05 * ratio[1], ratio
    # the user's own multipliers: (1, 1, 1) leaves the sensor's colour, R and B at their gains
    plain = read_raw(as_d65, (1.0, 1.0, 1.0))[inner].mean((0, 1)) / truth[inner].mean((0, 1))
    assert plain[0] < 0.7 * plain[1] and plain[2] < 0.85 * plain[1], plain


def _raw_case(folder, case):
    """The synthetic case with view 1's photo replaced by a DNG 1.3 stops darker (mask beside it)."""
    shutil.copytree(case.parent, folder)
    rgb, alpha = read_image(folder / "refs" / "cam1.exr")
    scale = 2.0 ** -1.3
    write_dng(folder / "refs" / "cam1.dng", np.clip(rgb * scale, 0, 1))
    write_png(folder / "refs" / "cam1_mask.png", np.repeat(alpha[..., None], 3, -1))
    text = (folder / "job.toml").read_text().replace(
        'image = "refs/cam1.exr"', 'image = "refs/cam1.dng"\nmask = "refs/cam1_mask.png"\nexposure = "auto"')
    (folder / "job.toml").write_text(text)
    return folder / "job.toml", scale


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    job = write_job(tmp_path_factory.mktemp("raw"), size=40, cameras=3)
    render_references(job, TRUTH, seed=5)
    return job


def test_a_raw_view_of_unknown_exposure_fits_as_the_exr_does(case, tmp_path):
    job_path, scale = _raw_case(tmp_path / "raw", case)
    job = load_job(job_path)
    exr = load_job(case).scene.views[1]
    view = job.scene.views[1]
    inside = exr.mask > 0.99 if exr.mask is not None else exr.image.max(-1) > 0
    for axis in (0, 1):  # two pixels in from the outline, where demosaicing mixes in the background
        for shift in (-2, -1, 1, 2):
            inside = inside & np.roll(inside, shift, axis)
    ratio = view.image[inside].sum(0) / exr.image[inside].sum(0)
    np.testing.assert_allclose(ratio, scale, rtol=0.03)  # linear, no brightening: the scale survives
    options = FitOptions(parameters=["base_color", "roughness"], backend="raster", iterations=30, seed=0)
    result = fit_material(job.scene, options)
    assert result.exposures["Cam1"] == pytest.approx(math.log2(scale), abs=0.06)
    assert np.allclose(result.material["base_color"], TRUTH["base_color"], atol=0.02), result.material


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('exposure = "auto"', 'exposure = "auto"\nencoding = "srgb"'), "developed linear"),
    (lambda t: t.replace('exposure = "auto"', 'exposure = "auto"\nraw_white_balance = "tungsten"'),
     "raw_white_balance 'tungsten'"),
    (lambda t: t.replace('image = "refs/cam0.exr"', 'image = "refs/cam0.exr"\nraw_white_balance = "camera"'),
     "applies to camera RAW"),
], ids=["srgb", "unknown balance", "not raw"])
def test_raw_keys_that_cannot_apply_are_refused(case, tmp_path, edit, message):
    job_path, _ = _raw_case(tmp_path / "raw", case)
    job_path.write_text(edit(job_path.read_text()))
    with pytest.raises(InputError, match=message) as e:
        load_job(job_path)
    assert "\n" not in str(e.value)


def test_an_unreadable_raw_file_is_one_line_exit_2_and_nothing_written(case, tmp_path):
    job_path, _ = _raw_case(tmp_path / "raw", case)
    raw = job_path.parent / "refs" / "cam1.dng"
    raw.write_bytes(raw.read_bytes()[:300])  # truncated, as by a failed copy
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pbrfit.cli", "fit", str(job_path), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "cam1.dng" in lines[0] and "LibRaw" in lines[0], r.stderr
    assert not out.exists()


def test_clipped_highlights_are_left_out_of_the_fit(case, tmp_path):
    """A photo whose highlight clipped (8-bit PNG: code 255) loses those pixels and their
    neighbours from the loss; the note says how many; a float EXR never clips."""
    shutil.copytree(case.parent, tmp_path / "clip")
    folder = tmp_path / "clip"
    rgb, alpha = read_image(folder / "refs" / "cam0.exr")
    bright = np.clip(rgb * 1.5, 0, 1)  # over-exposed: the brightest sixth of the ball saturates
    from pbrfit.images import linear_to_srgb

    codes = np.rint(linear_to_srgb(bright) * 255).astype(np.uint8)
    write_png(folder / "refs" / "cam0.png", codes)
    write_png(folder / "refs" / "cam0_mask.png", np.repeat(alpha[..., None], 3, -1))
    text = (folder / "job.toml").read_text().replace(
        'image = "refs/cam0.exr"', 'image = "refs/cam0.png"\nmask = "refs/cam0_mask.png"\nexposure = 0.585')
    (folder / "job.toml").write_text(text)
    job = load_job(folder / "job.toml")
    view = job.scene.views[0]
    saturated = (codes == 255).any(-1)
    assert view.clipped is not None and np.array_equal(view.clipped, saturated) and saturated.sum() > 20
    assert any("clipped" in n["message"] and "cam0.png" in n["message"] for n in job.scene.notes)
    assert job.scene.views[1].clipped is None  # the EXR views
    from pbrfit.render import RasterRenderer, SampleCounts

    r = RasterRenderer(job.scene, SampleCounts(8, 2, 4, 0), seed=0)
    geo = r.prepare(0).geometry
    used = np.zeros(geo.height * geo.width, bool)
    used[geo.pixels[geo.loss_pixels]] = True
    assert not (used & saturated.reshape(-1)).any()
    # the fit is not pulled down by the clipped values: the base colour as from the EXRs
    options = FitOptions(parameters=["base_color", "roughness"], backend="raster", iterations=30, seed=0)
    assert np.allclose(fit_material(job.scene, options).material["base_color"], TRUTH["base_color"], atol=0.02)


def test_a_bright_photo_keeps_the_sensors_white_level():
    """LibRaw rescales a photo whose brightest value is above 75% of the white level so that value
    reads 1.0 (adjust_maximum_thr): pbrfit turns that off, so every photo of a capture shares one
    scale and an unclipped highlight is not taken for a clipped one."""
    import tempfile
    from pathlib import Path

    img = np.full((32, 48, 3), 0.2)
    img[8:16, 8:24] = 0.8
    with tempfile.TemporaryDirectory() as tmp:
        out = read_raw(write_dng(Path(tmp) / "bright.dng", img))
    assert out[24:30, 30:44].mean() == pytest.approx(0.2, rel=0.01)
    assert out[10:14, 10:22].mean() == pytest.approx(0.8, rel=0.01)
