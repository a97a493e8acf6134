"""One view's figures, composed once for report.html, the Blender panel and the Omniverse
window: the reference and the fit in 8-bit sRGB at the view's display exposure, and the
ΔE2000 heat map.

The display exposure (:func:`pbrfit.heatmap.display_exposure`) puts the reference's masked
mean luminance at middle grey; the fit is shown at the same exposure, so a fit that is too
dark looks too dark. Images larger than ``max_size`` are box-filtered by an integer factor
first (the heat map weighted by the mask, so the background does not dilute the error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .heatmap import delta_e_heatmap, display_exposure, to_srgb8

__all__ = ["DE_VMAX", "ViewFigure", "view_figure", "downscale"]

#: ΔE2000 at the top of every heat map's colour scale
DE_VMAX = 10.0


@dataclass
class ViewFigure:
    """A view's display images, uint8 sRGB (H, W, 3), row 0 at the top.

    Attributes:
        reference, fit, heatmap: the three images, the same size.
        exposure: the linear multiplier the reference and fit were shown at.
    """

    reference: np.ndarray
    fit: np.ndarray
    heatmap: np.ndarray
    exposure: float

    def side_by_side(self) -> np.ndarray:
        """reference | fit | heat map, left to right."""
        return np.concatenate([self.reference, self.fit, self.heatmap], axis=1)


def downscale(arr: np.ndarray, factor: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Box-filter by an integer factor (cropping the remainder); optional per-pixel weights."""
    if factor <= 1:
        return arr
    h, w = arr.shape[0] // factor * factor, arr.shape[1] // factor * factor
    a = arr[:h, :w].reshape(h // factor, factor, w // factor, factor, *arr.shape[2:])
    if weights is None:
        return a.mean(axis=(1, 3))
    wts = weights[:h, :w].reshape(h // factor, factor, w // factor, factor)
    total = wts.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (np.nan_to_num(a) * wts).sum(axis=(1, 3)) / total, np.nan)


def view_figure(reference: np.ndarray, fit: np.ndarray, de_map: np.ndarray, mask: np.ndarray | None, *,
                exposure: float | None = None, max_size: int | None = None, vmax: float = DE_VMAX) -> ViewFigure:
    """The figures of one view.

    Args:
        reference, fit: (H, W, 3) linear radiance.
        de_map: (H, W) per-pixel ΔE2000; mask: (H, W), 1 where measured (None: everywhere).
        exposure: the display exposure; None: :func:`pbrfit.heatmap.display_exposure` of
            the reference over the mask (computed at full size).
        max_size: longest side of the figures in pixels (None: full size).
        vmax: ΔE2000 at the top of the heat map's scale.
    """
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(fit, dtype=np.float64)
    de = np.asarray(de_map, dtype=np.float64)
    m = np.ones(de.shape) if mask is None else np.asarray(mask, dtype=np.float64)
    if ref.ndim != 3 or ref.shape[2] != 3 or out.shape != ref.shape or de.shape != ref.shape[:2] \
            or m.shape != de.shape:
        raise ValueError(f"reference {ref.shape}, fit {out.shape}, de_map {de.shape} and mask {m.shape} must be "
                         "(H, W, 3), (H, W, 3), (H, W), (H, W)")
    if exposure is None:
        exposure = display_exposure(ref, m)
    factor = max(1, math.ceil(max(ref.shape[:2]) / max_size)) if max_size else 1
    ref_s, fit_s = downscale(ref, factor), downscale(out, factor)
    de_s, mask_s = downscale(de, factor, weights=m), downscale(m, factor)
    return ViewFigure(to_srgb8(ref_s, exposure), to_srgb8(fit_s, exposure), delta_e_heatmap(de_s, mask_s, vmax),
                      float(exposure))
