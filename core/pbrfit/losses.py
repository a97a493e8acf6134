"""Image losses and metrics: small pure functions on torch tensors.

Inputs are linear Rec.709 HDR images, either pixel lists ``(N, 3)`` or images ``(H, W, 3)``
(SSIM needs ``(H, W, 3)``), float32 or float64, with an optional per-pixel weight ``mask`` of
shape ``(N,)`` / ``(H, W)`` (or with a trailing 1) in [0, 1]; 1 = the pixel counts fully.
Every loss is the mask-weighted mean over pixels of a per-pixel value (channels averaged):
``sum(w * v) / sum(w)``, and 0 when the mask selects nothing.

HDR scale: every loss takes ``white`` (default 1.0), the scalar radiance pbrfit maps to
L* = 100 (the environment's mean luminance, see :mod:`pbrfit.color`). ``de2000`` uses it for
Lab; the other losses compare the plain linear values divided by ``white`` (no log or tone
compression), so they are scale-free: multiplying the lighting, the prediction and the
reference by the same factor leaves every loss unchanged. Highlights therefore weigh in
proportion to their radiance in l1/l2/charbonnier/huber/ssim; use ``de2000`` or
``charbonnier``/``huber`` for robustness to them. SSIM's constants use a data range of 1 on
that normalized scale.

``LOSSES`` maps names to ``callable(pred, ref, mask=None, **kw) -> scalar tensor``; lower is
better, and every entry is 0 for identical images ("ssim" is ``1 - SSIM``). The pixelwise
ones (:data:`PIXEL_LOSSES`: all but SSIM) are the mean of :func:`loss_map`, their per-pixel
value, which a search that decides per texel or per region pools as it needs.
"""

from __future__ import annotations

import math
from typing import Callable, TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from .color import delta_e2000_linear

__all__ = [
    "l1",
    "l2",
    "relative_l2",
    "charbonnier",
    "huber",
    "de2000",
    "ssim",
    "ssim_map",
    "ssim_loss",
    "LOSSES",
    "PIXEL_LOSSES",
    "loss_map",
    "Metrics",
    "de2000_map",
    "image_metrics",
]


def _weights(pred: torch.Tensor, ref: torch.Tensor, mask) -> torch.Tensor | None:
    if pred.shape != ref.shape or pred.shape[-1:] != (3,) or pred.ndim not in (2, 3):
        raise ValueError(f"pred and ref must both be (N, 3) or (H, W, 3); got {tuple(pred.shape)} "
                         f"and {tuple(ref.shape)}")
    if mask is None:
        return None
    w = torch.as_tensor(mask, dtype=pred.dtype, device=pred.device)
    if w.shape == pred.shape[:-1] + (1,):
        w = w[..., 0]
    if w.shape != pred.shape[:-1]:
        raise ValueError(f"mask must have shape {tuple(pred.shape[:-1])}, got {tuple(w.shape)}")
    return w


def _masked_mean(per_pixel: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    if w is None:
        return per_pixel.mean()
    return (w * per_pixel).sum() / w.sum().clamp_min(torch.finfo(per_pixel.dtype).tiny)


def _scaled(pred, ref, white):
    w = torch.as_tensor(white, dtype=pred.dtype, device=pred.device)
    if w.ndim != 0 or not bool(torch.isfinite(w)) or not bool(w > 0):
        raise ValueError(f"white must be a finite scalar > 0, got {white!r}")
    return pred / w, ref / w


def _l1(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return (p - r).abs().mean(-1)


def _l2(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return ((p - r) ** 2).mean(-1)


def _relative_l2(p: torch.Tensor, r: torch.Tensor, eps: float = 0.05) -> torch.Tensor:
    return ((p - r) ** 2 / (r * r + eps * eps)).mean(-1)


def _charbonnier(p: torch.Tensor, r: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    d = p - r
    return (torch.sqrt(d * d + eps * eps) - eps).mean(-1)


def _huber(p: torch.Tensor, r: torch.Tensor, delta: float = 0.1) -> torch.Tensor:
    return F.huber_loss(p, r, reduction="none", delta=delta).mean(-1)


def _de2000(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return delta_e2000_linear(p, r, 1.0)


#: the per-pixel value of each pixelwise loss, on ``rgb / white``: (..., 3) -> (...)
_PER_PIXEL: dict[str, Callable[..., torch.Tensor]] = {
    "l1": _l1, "l2": _l2, "relative_l2": _relative_l2, "charbonnier": _charbonnier, "huber": _huber,
    "de2000": _de2000,
}
#: the losses that are a mean of a per-pixel value (:func:`loss_map`): every loss but SSIM
PIXEL_LOSSES = frozenset(_PER_PIXEL)


def loss_map(name: str, pred: torch.Tensor, ref: torch.Tensor, *, white=1.0, **kw) -> torch.Tensor:
    """The per-pixel value of the loss ``name`` (one of :data:`PIXEL_LOSSES`): (N,) for pixel
    lists, (H, W) for images; its (masked) mean is ``LOSSES[name]``. Differentiable; ``kw``
    are the loss's own options (``eps``, ``delta``); ``white`` is a scalar (for a white per
    pixel, :func:`pbrfit.color.delta_e2000_linear`)."""
    if name not in _PER_PIXEL:
        raise ValueError(f"loss {name!r} has no per-pixel form; those with one: {', '.join(sorted(_PER_PIXEL))}")
    _weights(pred, ref, None)
    p, r = _scaled(pred, ref, white)
    return _PER_PIXEL[name](p, r, **kw)


def l1(pred: torch.Tensor, ref: torch.Tensor, mask=None, *, white=1.0) -> torch.Tensor:
    """Mean absolute difference of ``rgb / white``."""
    return _masked_mean(loss_map("l1", pred, ref, white=white), _weights(pred, ref, mask))


def l2(pred: torch.Tensor, ref: torch.Tensor, mask=None, *, white=1.0) -> torch.Tensor:
    """Mean squared difference of ``rgb / white``."""
    return _masked_mean(loss_map("l2", pred, ref, white=white), _weights(pred, ref, mask))


def relative_l2(pred: torch.Tensor, ref: torch.Tensor, mask=None, *, white=1.0, eps: float = 0.05) -> torch.Tensor:
    """Mean of ``(p - r)**2 / (r**2 + eps**2)`` on ``rgb / white``: a squared error relative
    to the reference, so dark and bright pixels weigh alike.

    The loss for Monte Carlo renders: quadratic in the prediction with weights fixed by the
    (noise-free) reference, so with independent paths for the image and for its gradient
    (the path backend's decorrelated seeds) the gradient is unbiased. ΔE2000, L1 and the
    robust losses are not quadratic: under noise they prefer smoother (rougher) materials.
    """
    return _masked_mean(loss_map("relative_l2", pred, ref, white=white, eps=eps), _weights(pred, ref, mask))


def charbonnier(pred: torch.Tensor, ref: torch.Tensor, mask=None, *, white=1.0,
                eps: float = 1e-3) -> torch.Tensor:
    """Mean of ``sqrt(d**2 + eps**2) - eps`` with ``d`` the difference of ``rgb / white``."""
    return _masked_mean(loss_map("charbonnier", pred, ref, white=white, eps=eps), _weights(pred, ref, mask))


def huber(pred: torch.Tensor, ref: torch.Tensor, mask=None, *, white=1.0,
          delta: float = 0.1) -> torch.Tensor:
    """Mean Huber loss of ``rgb / white``: ``d**2 / 2`` below ``delta``, ``delta (|d| - delta/2)`` above."""
    return _masked_mean(loss_map("huber", pred, ref, white=white, delta=delta), _weights(pred, ref, mask))


def de2000(pred: torch.Tensor, ref: torch.Tensor, mask=None, *, white=1.0) -> torch.Tensor:
    """Mean CIEDE2000 (CIELAB units) over masked pixels; see :func:`pbrfit.color.delta_e2000_linear`."""
    return _masked_mean(loss_map("de2000", pred, ref, white=white), _weights(pred, ref, mask))


# --- SSIM ------------------------------------------------------------------------------------

def _gaussian(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim_map(pred: torch.Tensor, ref: torch.Tensor, *, white=1.0, window: int = 11,
             sigma: float = 1.5, data_range: float = 1.0, k1: float = 0.01,
             k2: float = 0.03) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004) of two (H, W, 3) images, averaged over channels: (H, W).

    Local statistics use a normalized Gaussian window of ``window`` taps (``sigma`` pixels),
    applied separably with reflect padding so the map covers every pixel. For images smaller
    than the window the window shrinks to the largest odd size that fits (sigma unchanged,
    so it is truncated). Values are ``rgb / white``; ``C1 = (k1 * data_range)**2``,
    ``C2 = (k2 * data_range)**2``; variances are the biased (weighted) ones.
    """
    _weights(pred, ref, None)
    if pred.ndim != 3:
        raise ValueError(f"ssim needs (H, W, 3) images, got {tuple(pred.shape)}")
    h, wdt = pred.shape[:2]
    size = min(int(window), h, wdt)
    size -= 1 - size % 2
    if size < 1:
        raise ValueError(f"ssim window must be >= 1, got {window}")
    p, r = _scaled(pred, ref, white)
    x = p.permute(2, 0, 1)[None]
    y = r.permute(2, 0, 1)[None]
    g = _gaussian(size, sigma, x)
    kx = g.view(1, 1, 1, size).expand(3, 1, 1, size)
    ky = g.view(1, 1, size, 1).expand(3, 1, size, 1)
    pad = size // 2

    def filt(z):
        if pad:
            z = F.pad(z, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(F.conv2d(z, kx, groups=3), ky, groups=3)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s[0].mean(0)


def ssim(pred: torch.Tensor, ref: torch.Tensor, mask=None, *, white=1.0, window: int = 11,
         sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Masked mean of :func:`ssim_map` (1 for identical images, and 1 for an empty mask)."""
    w = _weights(pred, ref, mask)
    s = ssim_map(pred, ref, white=white, window=window, sigma=sigma, data_range=data_range)
    return 1.0 - _masked_mean(1.0 - s, w)


def ssim_loss(pred: torch.Tensor, ref: torch.Tensor, mask=None, **kw) -> torch.Tensor:
    """``1 - ssim(pred, ref, mask, **kw)``."""
    return 1.0 - ssim(pred, ref, mask, **kw)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "l1": l1,
    "l2": l2,
    "relative_l2": relative_l2,
    "charbonnier": charbonnier,
    "huber": huber,
    "de2000": de2000,
    "ssim": ssim_loss,
}


# --- metrics ---------------------------------------------------------------------------------

class Metrics(TypedDict):
    """What :func:`image_metrics` returns (plain floats)."""

    de2000_mean: float  #: mask-weighted mean CIEDE2000
    de2000_p95: float  #: 95th percentile (linear interpolation) over pixels with mask > 0.5
    ssim: float  #: masked mean SSIM of rgb / white
    l1: float  #: masked mean |difference| of rgb / white


def _tensor(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t if t.is_floating_point() else t.to(torch.float32)


def de2000_map(pred, ref, white=1.0) -> torch.Tensor:
    """CIEDE2000 per pixel of two (H, W, 3) linear images (torch or numpy): (H, W) (differentiable)."""
    return loss_map("de2000", _tensor(pred), _tensor(ref), white=white)


def image_metrics(pred, ref, mask=None, white=1.0) -> Metrics:
    """Report metrics of a rendered image against its reference (no gradients).

    Args:
        pred, ref: (H, W, 3) linear images (torch or numpy).
        mask: (H, W) weights in [0, 1], or None for every pixel.
        white: see :func:`pbrfit.color.delta_e2000_linear`.

    Returns:
        :class:`Metrics`; every value is NaN if the mask selects no pixel (mask > 0.5).
    """
    with torch.no_grad():
        pred, ref = _tensor(pred), _tensor(ref).to(_tensor(pred).dtype)
        w = _weights(pred, ref, mask)
        sel = torch.ones(pred.shape[:-1], dtype=torch.bool, device=pred.device) if w is None else w > 0.5
        if not bool(sel.any()):
            nan = math.nan
            return Metrics(de2000_mean=nan, de2000_p95=nan, ssim=nan, l1=nan)
        de = de2000_map(pred, ref, white)
        return Metrics(
            de2000_mean=float(_masked_mean(de, w)),
            de2000_p95=float(np.percentile(de[sel].double().cpu().numpy(), 95)),
            ssim=float(ssim(pred, ref, w, white=white)),
            l1=float(l1(pred, ref, w, white=white)),
        )
