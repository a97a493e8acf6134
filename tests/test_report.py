"""The HTML report and its images: self-contained, complete, escaped, decodable.

Oracles: Python's html.parser for structure, OpenImageIO for PNG decoding, colour-science for
the sRGB transfer curve and CIE L* of the colour map.
"""

from __future__ import annotations

import base64
import os
import re
import warnings
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import OpenImageIO as oiio
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # colour-science warns that matplotlib is missing
    import colour

from pbrfit.errors import InputError
from pbrfit.heatmap import MASKED_GREY, VIRIDIS_POINTS, colorbar_svg, colormap, delta_e_heatmap, png_bytes, to_srgb8
from pbrfit.plausibility import check
from pbrfit.report import GRADE_THRESHOLDS, grade, render_report, write_report

H, W = 24, 32
EVIL = "<script>alert('x')</script>"


class _Collector(HTMLParser):
    """Every start tag with its attributes, and all text, as a browser's parser sees them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def _parse(doc: str) -> _Collector:
    p = _Collector()
    p.feed(doc)
    p.close()
    return p


def _view(name, split, seed, exposure=1.0):
    rng = np.random.default_rng(seed)
    ref = rng.random((H, W, 3)).astype(np.float32) * 0.8
    fit = (ref * 0.97).astype(np.float32)
    de = rng.random((H, W)).astype(np.float32) * 7
    mask = np.zeros((H, W), np.float32)
    mask[4:20, 6:26] = 1
    return {"name": name, "split": split, "reference": ref, "fit": fit, "de_map": de, "mask": mask,
            "exposure": exposure,
            "metrics": {"de2000_mean": 1.2345 + seed, "de2000_p95": 3.4567 + seed, "ssim": 0.91234, "l1": 0.012345}}


def _data():
    history = [{"iteration": i, "stage": 1 + i // 10, "loss": 5.0 * 0.8 ** i + 1e-3,
                "train_de2000": 6.0 * 0.9 ** i + 1.0, "validate_de2000": (6.5 * 0.9 ** i + 1.2) if i % 5 == 0 else None,
                "time": 0.25 * i} for i in range(30)]
    material = {"base_color": [0.6, 0.05, 0.03], "metallic": 0.45, "roughness": 0.3}
    return {
        "title": "Fit of <red & plastic>",
        "job": "/projects/part/job.toml",
        "created": "2025-03-01T10:20:30+00:00",
        "views": [_view("cam_front", "train", 0, exposure=2.0), _view("cam_side", "train", 1),
                  _view(EVIL, "validate", 2)],
        "summary": {"train": {"de2000_mean": 1.7071, "de2000_p95": 4.1234, "ssim": 0.9456, "l1": 0.0123},
                    "validate": {"de2000_mean": 2.5432, "de2000_p95": 5.4321, "ssim": 0.9321, "l1": 0.0234}},
        "history": history,
        "parameters": [
            {"name": "base_color", "initial": [0.8, 0.8, 0.8], "final": material["base_color"], "fitted": True,
             "unit": "linear RGB", "lower": 0.0, "upper": 1.0},
            {"name": "metallic", "initial": 0.0, "final": 0.45, "fitted": True, "unit": "", "lower": 0.0,
             "upper": 1.0},
            {"name": "thin_film_thickness", "initial": 0.0, "final": 0.0, "fitted": False, "unit": "nm",
             "lower": 0.0, "upper": 1500.0},
        ],
        "plausibility": check(material, ["base_color", "metallic", "roughness"]),
        "drops": {"UsdPreviewSurface": [{"parameter": "sheen_weight", "reason": "no sheen input"}],
                  "OpenPBR (MaterialX)": []},
        "provenance": {"pbrfit": "0.1.0", "seed": 7, "renderer": {"backend": "mitsuba", "spp": 16},
                       "note": "</pre><b>not bold</b>"},
    }


@pytest.fixture(scope="module")
def doc() -> str:
    return render_report(_data())


def _png_uris(doc: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)]


def _decode_png(data: bytes, tmp_path, name="x.png") -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(data)
    config = oiio.ImageSpec()
    config.attribute("oiio:UnassociatedAlpha", 1)  # keep RGBA as stored, not premultiplied
    buf = oiio.ImageBuf(str(path), 0, 0, config)
    pixels = buf.get_pixels(oiio.UINT8)
    assert not buf.has_error, buf.geterror()
    return np.asarray(pixels)


# --- the report --------------------------------------------------------------------------

def test_report_is_self_contained(doc):
    p = _parse(doc)
    tags = {t for t, _ in p.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "frame", "base"}
    for tag, attrs in p.tags:
        for key in ("src", "href", "srcset", "data", "action", "poster", "xlink:href"):
            if key in attrs:
                assert attrs[key].startswith("data:") or attrs[key].startswith("#"), (tag, key, attrs[key][:60])
    assert "http://" not in doc and "https://" not in doc and "url(" not in doc and "@import" not in doc
    csp = [a["content"] for t, a in p.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "img-src data:" in csp[0]
    doc.encode("ascii")  # pure ASCII, independent of the platform's text encoding


def test_report_images_decode_to_the_tone_mapped_inputs(doc, tmp_path):
    pngs = _png_uris(doc)
    assert len(pngs) == 3 * 3  # reference, fit and heat map per view
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    data = _data()
    first = data["views"][0]
    ref = _decode_png(pngs[0], tmp_path, "ref.png")
    assert ref.shape == (H, W, 3)
    np.testing.assert_array_equal(ref, to_srgb8(first["reference"], first["exposure"]))
    heat = _decode_png(pngs[2], tmp_path, "heat.png")
    np.testing.assert_array_equal(heat, delta_e_heatmap(first["de_map"], first["mask"], 10.0))


def test_report_shows_names_metrics_parameters_and_sections(doc):
    text = "".join(_parse(doc).text)
    for name in ("cam_front", "cam_side", EVIL):
        assert name in text
    for number in ("1.23", "3.46", "2.23", "4.46", "3.23", "5.46", "0.912", "0.0123",  # per view
                   "1.71", "4.12", "0.946", "2.54", "5.43", "0.932", "0.0234"):      # summary
        assert number in text, number
    for param in ("base_color", "metallic", "thin_film_thickness", "sheen_weight"):
        assert param in text
    assert "FAIR" in text  # validation mean 2.54 lies between the thresholds
    assert f"good \u2264 {GRADE_THRESHOLDS[0]:g}" in text.replace("\xa0", " ")
    assert "UsdPreviewSurface" in text and "no sheen input" in text and "Carries every parameter" in text
    assert "real surfaces are either metal or not" in text  # a plausibility flag
    assert "mitsuba" in text and "Provenance" in text
    assert "/projects/part/job.toml" in text and "2025-03-01T10:20:30+00:00" in text


def test_report_escapes_every_string(doc):
    p = _parse(doc)
    assert "script" not in {t for t, _ in p.tags}
    assert sum(t == "b" for t, _ in p.tags) == 3  # only good/fair/poor in the thresholds line
    assert "<script>" not in doc.lower() and "&lt;script&gt;" in doc
    assert "Fit of <red & plastic>" in "".join(p.text)
    assert "</pre><b>not bold</b>" in "".join(p.text)  # provenance shown as text, not markup
    assert "alt=\"reference photograph, view &lt;script&gt;" in doc


def test_convergence_chart_marks_stages_and_draws_three_curves(doc):
    svgs = re.findall(r'<svg class="chart".*?</svg>', doc, re.S)
    assert len(svgs) == 1
    root = ET.fromstring(svgs[0].replace("&#916;", "D").replace("&mdash;", "-"))
    assert len(root.findall("polyline")) == 3
    boundaries = [e for e in root.findall("line") if e.get("stroke-dasharray") == "4 3"]
    assert len(boundaries) == 2  # stage 1 -> 2 and 2 -> 3
    labels = "".join(root.itertext())
    assert "stage 1 colour" in labels and "stage 3 layers" in labels and "iteration" in labels
    # Validation is plotted only where it was measured: iterations 0, 5, ..., 25.
    assert len(root.findall("circle")) == 6


def test_write_report_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old")
    write_report(path, _data())
    assert path.read_text(encoding="ascii").startswith("<!DOCTYPE html>")
    assert sorted(os.listdir(tmp_path)) == ["report.html"]  # no temporary left behind
    with pytest.raises(InputError, match="does not exist"):
        write_report(tmp_path / "missing" / "report.html", _data())


def test_large_images_are_downscaled_and_empty_sections_render(tmp_path):
    v = _view("big", "train", 0)
    v["reference"] = np.ones((200, 300, 3), np.float32) * 0.5
    v["fit"] = v["reference"]
    v["de_map"] = np.zeros((200, 300), np.float32)
    v["mask"] = None
    doc = render_report({"title": "t", "views": [v]}, max_image_size=64)
    img = _decode_png(_png_uris(doc)[0], tmp_path)
    assert max(img.shape[:2]) <= 64 and img.shape[0] * 3 == img.shape[1] * 2
    np.testing.assert_array_equal(img, to_srgb8(np.full(img.shape, 0.5)))  # box filter keeps flat fields
    text = "".join(_parse(doc).text)
    assert "No optimization history" in text and "No parameters recorded" in text
    assert "UNKNOWN" in text and "no grade" in text  # no summary metrics at all
    # Without validation views the grade says it rests on the training views.
    doc = render_report({"title": "t", "summary": {"train": {"de2000_mean": 1.0}}})
    text = "".join(_parse(doc).text)
    assert "GOOD" in text and "training views only" in text


def test_grade_thresholds():
    assert [grade(v) for v in (0.5, 2.0, 2.01, 5.0, 5.01, None, float("nan"))] == [
        "good", "good", "fair", "fair", "poor", "unknown", "unknown"]


# --- heat map, colour bar, tone mapping, PNG ---------------------------------------------

def _lightness(srgb8: np.ndarray) -> np.ndarray:
    xyz = colour.sRGB_to_XYZ(srgb8.astype(np.float64) / 255.0)
    return colour.XYZ_to_Lab(xyz)[..., 0]


def test_colormap_lightness_rises_monotonically():
    lab_l = _lightness(colormap(np.linspace(0, 1, 101)))
    assert np.all(np.diff(lab_l) > 0), np.diff(lab_l).min()
    # Finer than the 8-bit output resolves, only rounding noise may go the wrong way.
    assert np.diff(_lightness(colormap(np.linspace(0, 1, 1024)))).min() > -0.5  # L* 1 ~ one JND
    assert lab_l[-1] - lab_l[0] > 70  # dark purple to bright yellow
    assert tuple(colormap(np.array(0.0))) == VIRIDIS_POINTS[0]
    assert tuple(colormap(np.array(1.0))) == VIRIDIS_POINTS[-1]
    # "No data" grey reads darker than the smallest error.
    assert _lightness(np.array(MASKED_GREY)) < lab_l[0]


def test_heatmap_masks_saturates_and_orders():
    de = np.array([[0.0, 5.0, 10.0, 50.0], [np.nan, 2.0, 2.0, 2.0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 0.2, 0.6]], float)
    img = delta_e_heatmap(de, mask, vmax=10.0)
    assert img.dtype == np.uint8 and img.shape == (2, 4, 3)
    assert tuple(img[0, 0]) == VIRIDIS_POINTS[0] and tuple(img[0, 2]) == VIRIDIS_POINTS[-1]
    assert tuple(img[0, 3]) == VIRIDIS_POINTS[-1]  # above vmax saturates
    assert tuple(img[1, 0]) == MASKED_GREY and tuple(img[1, 2]) == MASKED_GREY  # NaN, outside the mask
    assert tuple(img[1, 3]) == tuple(img[1, 1])  # coverage >= 0.5 counts as inside
    lum = _lightness(img[0, :3])
    assert lum[0] < lum[1] < lum[2]
    with pytest.raises(ValueError):
        delta_e_heatmap(np.zeros((2, 2)), np.ones((3, 3)))


def test_colorbar_svg_is_wellformed_and_labelled():
    svg = colorbar_svg(10.0)
    root = ET.fromstring(svg)
    assert root.tag == "svg" and len(root.findall("rect")) >= 64
    labels = [t.text for t in root.findall("text")]
    assert labels[0] == "\u0394E2000" and labels[1] == "0" and labels[-1] == "\u2265 10"
    assert "http" not in svg
    assert [t.text for t in ET.fromstring(colorbar_svg(3.0)).findall("text")][-1] == "\u2265 3"


def test_to_srgb8_matches_the_srgb_curve():
    rng = np.random.default_rng(3)
    lin = rng.random((8, 8, 3)) * 1.2 - 0.1
    expected = np.rint(np.clip(colour.cctf_encoding(np.clip(lin * 0.8, 0, None), function="sRGB"), 0, 1) * 255)
    np.testing.assert_array_equal(to_srgb8(lin, exposure=0.8), expected.astype(np.uint8))
    special = to_srgb8(np.array([[[np.nan, np.inf, -1.0]]]))
    assert special.tolist() == [[[0, 255, 0]]]


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_png_bytes_round_trip_through_openimageio(channels, tmp_path):
    rng = np.random.default_rng(5)
    shape = (7, 11) if channels is None else (7, 11, channels)
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    data = png_bytes(img)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    back = _decode_png(data, tmp_path)
    np.testing.assert_array_equal(back.reshape(shape), img)
    with pytest.raises(ValueError):
        png_bytes(img.astype(np.float32))
