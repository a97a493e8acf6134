"""Colour correction of photos from an X-Rite ColorChecker Classic (24 patches) in view or in a
separate photo taken with the same camera, settings and light.

The chart is found by OpenCV's ``mcc`` detector (contrib modules; :func:`find_chart`), its
patches averaged in the *linear* photo, and a 3x3 matrix solved by least squares that maps
them onto the chart's published reflectances in linear Rec.709 (:data:`REFERENCE`). Applied to
a photo (``rgb @ matrix.T``) it corrects the camera's white balance and colour response.

Exposure is left alone: the matrix is scaled so that the neutral patches' mean luminance is
what it was in the photo. The chart's light level is not the part's (its irradiance depends on
where it stands and how it faces), so exposure stays with the job's ``exposure`` key or with
``[calibrate]`` (:mod:`pbrfit.calibration`).

The residual ΔE2000 of the chart after correction (CIELAB with the chart's white patch as the
white) says how well a 3x3 matrix explains the camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["REFERENCE", "PATCHES", "NEUTRALS", "ChartCorrection", "find_chart", "chart_correction"]

#: ColorChecker Classic (X-Rite, after November 2014) patches: name and linear Rec.709 reflectance
#: (sRGB primaries, D65 white), from colour-science's xyY (D50) data by the Bradford transform;
#: tests/test_colorchart.py recomputes them with colour-science
PATCHES = (
    ("dark skin", (0.17368, 0.07879, 0.05286)), ("light skin", (0.55978, 0.27745, 0.21089)),
    ("blue sky", (0.10420, 0.18892, 0.32893)), ("foliage", (0.10574, 0.15075, 0.05084)),
    ("blue flower", (0.22744, 0.21241, 0.42645)), ("bluish green", (0.11529, 0.50744, 0.41113)),
    ("orange", (0.74590, 0.20214, 0.02987)), ("purplish blue", (0.05874, 0.10118, 0.38775)),
    ("moderate red", (0.56013, 0.08015, 0.11459)), ("purple", (0.10917, 0.04200, 0.13814)),
    ("yellow green", (0.33275, 0.49739, 0.04260)), ("orange yellow", (0.77104, 0.35792, 0.02045)),
    ("blue", (0.02096, 0.04753, 0.28413)), ("green", (0.04606, 0.29205, 0.06148)),
    ("red", (0.44617, 0.03641, 0.04055)), ("yellow", (0.84168, 0.57441, 0.00466)),
    ("magenta", (0.52234, 0.07782, 0.28931)), ("cyan", (-0.04392, 0.23366, 0.37719)),
    ("white 9.5 (.05 D)", (0.87953, 0.88503, 0.83425)), ("neutral 8 (.23 D)", (0.58449, 0.59217, 0.58448)),
    ("neutral 6.5 (.44 D)", (0.35769, 0.36708, 0.36527)), ("neutral 5 (.70 D)", (0.19009, 0.19087, 0.18981)),
    ("neutral 3.5 (1.05 D)", (0.08593, 0.08874, 0.08980)), ("black 2 (1.5 D)", (0.03135, 0.03150, 0.03232)),
)
REFERENCE = np.array([rgb for _, rgb in PATCHES])
#: the neutral patches' rows (white to black)
NEUTRALS = slice(18, 24)


@dataclass
class ChartCorrection:
    """A ColorChecker's colour correction.

    Attributes:
        matrix: (3, 3): corrected = ``rgb @ matrix.T`` (linear Rec.709).
        measured: (24, 3) the patches' mean linear RGB in the chart's photo.
        residual_de2000: (mean, max) over the patches after correction.
        source: the photo the chart was found in.
    """

    matrix: np.ndarray
    measured: np.ndarray
    residual_de2000: tuple
    source: str

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        return (np.asarray(rgb, np.float32) @ self.matrix.T.astype(np.float32)).astype(np.float32)


def find_chart(rgb: np.ndarray, where: str) -> np.ndarray:
    """The 24 patches' mean linear RGB (24, 3) of the ColorChecker Classic in ``rgb`` (H, W, 3),
    a linear image; the detector sees it sRGB-encoded, the means come from the linear pixels
    inside each patch's polygon, shrunk to its central half (away from edges and blur).

    Raises:
        InputError: no chart found (``where`` names the photo).
    """
    from .dependencies import opencv
    from .images import linear_to_srgb

    cv2 = opencv()
    if not hasattr(cv2, "mcc"):
        raise InputError("colour charts need OpenCV's contrib modules: pip install opencv-contrib-python-headless")
    encoded = np.clip(np.rint(linear_to_srgb(np.clip(rgb, 0.0, 1.0)) * 255), 0, 255).astype(np.uint8)
    detector = cv2.mcc.CCheckerDetector_create()
    if not detector.process(np.ascontiguousarray(encoded[..., ::-1]), cv2.mcc.MCC24, 1):
        raise InputError(f"{where}: no ColorChecker Classic (24 patches) found; the whole chart must be in view, "
                         "flat, evenly lit and at least ~150 pixels wide")
    polygons = np.asarray(detector.getBestColorChecker().getColorCharts(), np.float64).reshape(24, 4, 2)
    h, w = rgb.shape[:2]
    means = np.zeros((24, 3))
    for k, poly in enumerate(polygons):
        centre = poly.mean(0)
        inner = centre + 0.5 * (poly - centre)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(mask, np.rint(inner).astype(np.int32), 1)
        if mask.sum() < 4:
            raise InputError(f"{where}: the ColorChecker is too small in the photo (patch {PATCHES[k][0]} covers "
                             f"{int(mask.sum())} pixels); photograph it larger")
        means[k] = rgb[mask.astype(bool)].mean(0)
    return means


def chart_correction(rgb: np.ndarray, where: str) -> ChartCorrection:
    """Find the chart in the linear photo ``rgb`` and solve its correction (module docstring)."""
    import torch

    from .color import delta_e2000_linear, luminance

    measured = find_chart(rgb, where)
    if luminance(torch.as_tensor(measured[NEUTRALS])).min() <= 0:
        raise InputError(f"{where}: the ColorChecker's neutral patches read black; check the photo's exposure")
    # least squares: reference ~ measured @ M^T, each patch weighted equally
    m_t, *_ = np.linalg.lstsq(measured, REFERENCE, rcond=None)
    matrix = m_t.T
    before = float(luminance(torch.as_tensor(measured[NEUTRALS])).mean())
    after = float(luminance(torch.as_tensor(measured[NEUTRALS] @ matrix.T)).mean())
    matrix = matrix * (before / after)  # exposure stays as it was (module docstring)
    corrected = measured @ matrix.T
    # the residual: corrected chart against the reference, both normalized by their white patch
    scale = float(luminance(torch.as_tensor(REFERENCE[18]))) / float(luminance(torch.as_tensor(corrected[18])))
    de = delta_e2000_linear(torch.as_tensor(corrected * scale), torch.as_tensor(REFERENCE), white=1.0).numpy()
    return ChartCorrection(matrix, measured, (float(de.mean()), float(de.max())), str(where))


def correction_of(path: Path, encoding: str | None, where: str, raw_white_balance="camera") -> ChartCorrection:
    """The correction of the chart in the photo at ``path`` (read as the job reads photos: a
    camera RAW file developed by :func:`pbrfit.raw.read_raw` with ``raw_white_balance``)."""
    from .images import read_photo
    from .raw import is_raw

    what = f"{where}: color_chart {path}"
    try:
        rgb = read_photo(path, encoding, raw_white_balance).rgb
    except InputError as e:
        raise InputError(f"{what}: {e}" if is_raw(path) else str(e)) from None
    return chart_correction(rgb, what)
