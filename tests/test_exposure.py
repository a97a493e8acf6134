"""A view's exposure: a known number of stops, or "auto" (fitted, FitRun.update_exposures)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic import render_references, write_job

from pbrfit.errors import InputError
from pbrfit.fit import FitOptions, fit_material
from pbrfit.images import read_image, write_exr
from pbrfit.job import load_job

TRUTH = {"base_color": [0.55, 0.2, 0.08], "roughness": 0.35}


def _scale_photo(path, factor: float) -> None:
    rgb, alpha = read_image(path)
    write_exr(path, np.concatenate([rgb * factor, alpha[..., None]], -1))


def _set_exposures(job, exposures: list) -> None:
    """Add ``exposure = ...`` to the job's [[views]] in order (None: leave the view alone)."""
    parts = job.read_text().split("[[views]]")
    for i, e in enumerate(exposures):
        if e is not None:
            parts[i + 1] = parts[i + 1].rstrip("\n") + f"\nexposure = {e!r}\n\n".replace("'", '"')
    job.write_text("[[views]]".join(parts))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    job = write_job(tmp_path_factory.mktemp("exposure"), size=40, cameras=3)
    render_references(job, TRUTH, seed=5)
    return job


def test_a_known_exposure_is_divided_out_of_the_photo(case, tmp_path):
    import shutil

    folder = tmp_path / "known"
    shutil.copytree(case.parent, folder)
    _scale_photo(folder / "refs" / "cam1.exr", 2.0**1.5)
    _set_exposures(folder / "job.toml", [None, 1.5])
    a, b = load_job(case).scene.views[1], load_job(folder / "job.toml").scene.views[1]
    assert b.exposure == 1.5 and np.allclose(a.image, b.image, rtol=1e-5, atol=1e-7)


def test_auto_exposure_is_fitted_and_the_material_is_not_fooled(case, tmp_path):
    import shutil

    folder = tmp_path / "auto"
    shutil.copytree(case.parent, folder)
    _scale_photo(folder / "refs" / "cam1.exr", 2.7)  # a photo 1.43 stops brighter than the others
    _set_exposures(folder / "job.toml", [None, "auto"])
    job = load_job(folder / "job.toml")
    assert job.scene.views[1].exposure == "auto"
    options = FitOptions(parameters=["base_color", "roughness"], backend="raster", iterations=30, seed=0)
    result = fit_material(job.scene, options)
    assert result.exposures["Cam1"] == pytest.approx(math.log2(2.7), abs=0.05)
    assert np.allclose(result.material["base_color"], TRUTH["base_color"], atol=0.02), result.material
    assert any("exposure fitted" in n["message"] and "Cam1" in n["message"] for n in result.notes)
    assert not np.allclose(job.scene.views[1].image.max(), 0)  # the caller's scene is not rescaled
    assert float(job.scene.views[1].image.max()) == pytest.approx(float(read_image(folder / "refs" / "cam1.exr")[0]
                                                                        .max()), rel=1e-6)
    # the fitted exposure makes the brighter photo match; without "auto" it cannot
    plain = fit_material(_without_auto(folder), options)
    de = result.metrics["train"]["views"]["Cam1"]["de2000_mean"]
    assert de < 1.5 and plain.metrics["train"]["views"]["Cam1"]["de2000_mean"] > 4 * de


def _without_auto(folder):
    text = (folder / "job.toml").read_text().replace('exposure = "auto"\n', "")
    (folder / "plain.toml").write_text(text)
    return load_job(folder / "plain.toml").scene


@pytest.mark.parametrize("values, message", [
    (["auto", "auto", "auto"], "every train view has exposure = \"auto\""),
    (["bright"], "exposure 'bright' must be a number of stops"),
    ([99.0], "exposure 99.0 must be a number of stops"),
], ids=["all auto", "word", "too far"])
def test_bad_exposures_are_refused_in_one_line(case, tmp_path, values, message):
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(case.parent, folder)
    _set_exposures(folder / "job.toml", values)
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as e:
        load_job(folder / "job.toml")
    assert "\n" not in str(e.value) and "job.toml" in str(e.value)


def test_a_16_bit_photo_must_say_how_it_is_encoded(case, tmp_path):
    import shutil

    import stage_builders as sb

    folder = tmp_path / "png16"
    shutil.copytree(case.parent, folder)
    rgb, alpha = read_image(folder / "refs" / "cam1.exr")
    straight = np.where(alpha[..., None] > 0, rgb / np.maximum(alpha[..., None], 1e-12), 0.0)
    px = np.concatenate([straight, alpha[..., None]], -1)
    sb.write_png(folder / "refs" / "cam1.png", np.round(np.clip(px, 0, 1) * 65535).astype(np.uint16))
    text = (folder / "job.toml").read_text().replace('refs/cam1.exr"', 'refs/cam1.png"')
    (folder / "job.toml").write_text(text)
    with pytest.raises(InputError, match="16-bit integer file.*encoding = \"srgb\" or encoding = \"linear\"") as e:
        load_job(folder / "job.toml")
    assert "\n" not in str(e.value) and "cam1.png" in str(e.value)
    parts = (folder / "job.toml").read_text().split("[[views]]")
    parts[2] = parts[2].rstrip("\n") + '\nencoding = "linear"\n\n'
    (folder / "job.toml").write_text("[[views]]".join(parts))
    linear = load_job(folder / "job.toml").scene.views[1].image
    reference = load_job(case).scene.views[1].image
    below_one = rgb.max(-1) < 0.98  # (the 16-bit file clips the highlights)
    assert below_one.mean() > 0.9 and np.allclose(linear[below_one], reference[below_one], atol=2e-4)
    (folder / "job.toml").write_text((folder / "job.toml").read_text().replace('encoding = "linear"',
                                                                                  'encoding = "srgb"'))
    assert not np.allclose(load_job(folder / "job.toml").scene.views[1].image, linear, atol=0.01)
    # a float EXR is linear: declaring it sRGB is refused
    (folder / "job.toml").write_text((folder / "job.toml").read_text().replace('refs/cam1.png"', 'refs/cam1.exr"'))
    with pytest.raises(InputError, match="floating-point"):
        load_job(folder / "job.toml")
