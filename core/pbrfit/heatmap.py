"""Images for reports: tone mapping to sRGB, a ΔE2000 heat map, its colour bar, PNG bytes.

Conventions:

* Inputs are linear, scene-referred Rec.709 RGB float arrays (H, W, 3), row 0 at the top
  (see :mod:`pbrfit.scene`). ``exposure`` is a plain multiplier applied in linear light
  (1.0 = as is, 2.0 = one stop brighter), not a number of stops.
* Outputs are 8-bit sRGB (IEC 61966-2-1 transfer curve), uint8 (H, W, 3).
* The heat map's colour scale is viridis (van der Walt and Smith, 2015; released CC0), given
  here as 11 sRGB control points at t = 0, 0.1, ..., 1 and interpolated linearly between
  them. Its lightness rises monotonically from dark purple (ΔE = 0) to yellow (ΔE >= vmax),
  so a brighter pixel always means a larger colour error, also in greyscale print and for
  colour-blind readers.
* PNG encoding is a minimal, dependency-free encoder (8-bit greyscale, RGB or RGBA,
  filter type 0, zlib-compressed), enough for images embedded in an HTML report.
"""

from __future__ import annotations

import html
import struct
import zlib

import numpy as np

__all__ = [
    "VIRIDIS_POINTS",
    "MASKED_GREY",
    "colormap",
    "display_exposure",
    "delta_e_heatmap",
    "colorbar_svg",
    "to_srgb8",
    "png_bytes",
]

#: Viridis in 8-bit sRGB at t = 0.0, 0.1, ..., 1.0 (matplotlib's table sampled every 25.5
#: entries; the colormap itself is CC0).
VIRIDIS_POINTS: tuple[tuple[int, int, int], ...] = (
    (0x44, 0x01, 0x54), (0x48, 0x24, 0x75), (0x41, 0x44, 0x87), (0x35, 0x5F, 0x8D),
    (0x2A, 0x78, 0x8E), (0x21, 0x91, 0x8C), (0x22, 0xA8, 0x84), (0x44, 0xBF, 0x70),
    (0x7A, 0xD1, 0x51), (0xBD, 0xDF, 0x26), (0xFD, 0xE7, 0x25),
)

#: sRGB colour of pixels outside the mask (CIE L* 11, below viridis' darkest entry at L* 15,
#: and neutral, so it reads as "no data" rather than "small error").
MASKED_GREY: tuple[int, int, int] = (30, 30, 30)


def colormap(t: np.ndarray) -> np.ndarray:
    """Viridis colours for ``t`` in [0, 1] (clipped; NaN maps to 0).

    Returns:
        uint8 array of shape ``t.shape + (3,)``, sRGB.
    """
    t = np.nan_to_num(np.asarray(t, dtype=np.float64), nan=0.0)
    t = np.clip(t, 0.0, 1.0)
    table = np.asarray(VIRIDIS_POINTS, dtype=np.float64)
    xs = np.linspace(0.0, 1.0, len(table))
    out = np.stack([np.interp(t, xs, table[:, c]) for c in range(3)], axis=-1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def delta_e_heatmap(de: np.ndarray, mask: np.ndarray | None = None, vmax: float = 10.0) -> np.ndarray:
    """Colour a per-pixel ΔE2000 map.

    Args:
        de: (H, W) ΔE2000 values (CIEDE2000 units, >= 0).
        mask: (H, W) object coverage in [0, 1], or None for all pixels; pixels with
            coverage below 0.5, and pixels whose ΔE is not finite, are drawn in
            :data:`MASKED_GREY`.
        vmax: ΔE mapped to the top of the scale; larger values saturate.

    Returns:
        uint8 (H, W, 3) sRGB image.
    """
    de = np.asarray(de, dtype=np.float64)
    if de.ndim != 2:
        raise ValueError(f"delta_e_heatmap: de must be (H, W), got shape {de.shape}")
    if not vmax > 0:
        raise ValueError(f"delta_e_heatmap: vmax must be > 0, got {vmax}")
    valid = np.isfinite(de)
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float64)
        if mask.shape != de.shape:
            raise ValueError(f"delta_e_heatmap: mask shape {mask.shape} differs from de shape {de.shape}")
        valid &= mask >= 0.5
    img = colormap(np.where(valid, de, 0.0) / vmax)
    img[~valid] = MASKED_GREY
    return img


def _nice_step(span: float, target_ticks: int = 5) -> float:
    """A 1-2-5 tick spacing giving about ``target_ticks`` intervals over ``span``."""
    raw = span / max(target_ticks, 1)
    mag = 10.0 ** np.floor(np.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= m * mag:
            return float(m * mag)
    return float(10.0 * mag)


def _fmt_tick(v: float) -> str:
    return f"{v:g}"


def colorbar_svg(vmax: float = 10.0, *, width: int = 260, height: int = 46,
                 label: str = "ΔE2000") -> str:
    """A horizontal colour bar for :func:`delta_e_heatmap`, as an inline SVG element.

    The bar is drawn from solid rectangles (no gradient ids, so any number of bars can sit
    in one HTML document) and has no ``xmlns`` attribute: it is meant to be embedded in
    HTML5, where the SVG namespace is implied. The last tick reads "≥ vmax" because larger
    errors saturate.
    """
    if not vmax > 0:
        raise ValueError(f"colorbar_svg: vmax must be > 0, got {vmax}")
    pad = 10
    bar_w, bar_h, bar_y = width - 2 * pad, 12, 16
    n = 64
    colours = colormap((np.arange(n) + 0.5) / n)
    parts = [
        f'<svg class="colorbar" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{html.escape(label)} colour scale from 0 to {_fmt_tick(vmax)}">',
        f'<text x="{pad}" y="11" font-size="11" fill="#444">{html.escape(label)}</text>',
    ]
    for i, (r, g, b) in enumerate(colours):
        x0 = pad + bar_w * i / n
        parts.append(f'<rect x="{x0:.2f}" y="{bar_y}" width="{bar_w / n + 0.3:.2f}" height="{bar_h}" '
                     f'fill="#{r:02x}{g:02x}{b:02x}"/>')
    parts.append(f'<rect x="{pad}" y="{bar_y}" width="{bar_w}" height="{bar_h}" fill="none" stroke="#888" '
                 f'stroke-width="0.5"/>')
    step = _nice_step(vmax)
    ticks = [k * step for k in range(int(np.floor(vmax / step + 1e-9)) + 1)]
    if abs(ticks[-1] - vmax) > 1e-9 * vmax:
        if vmax - ticks[-1] < 0.4 * step:
            ticks.pop()
        ticks.append(vmax)
    for v in ticks:
        x = pad + bar_w * v / vmax
        anchor = "start" if v == 0 else ("end" if v == vmax else "middle")
        text = ("≥ " if v == vmax else "") + _fmt_tick(v)
        parts.append(f'<line x1="{x:.2f}" y1="{bar_y + bar_h}" x2="{x:.2f}" y2="{bar_y + bar_h + 4}" '
                     f'stroke="#666" stroke-width="1"/>')
        parts.append(f'<text x="{x:.2f}" y="{bar_y + bar_h + 15}" font-size="10" fill="#444" '
                     f'text-anchor="{anchor}">{html.escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def display_exposure(reference: np.ndarray, mask: np.ndarray, middle_grey: float = 0.18) -> float:
    """Exposure (a linear multiplier) that puts the masked reference's mean luminance at
    ``middle_grey``, so every view of a report or a host's figure reads alike."""
    m = np.asarray(mask) > 0
    lum = float((np.asarray(reference)[m] @ np.array([0.2126, 0.7152, 0.0722])).mean()) if m.any() else 1.0
    return middle_grey / max(lum, 1e-6)


def to_srgb8(linear: np.ndarray, exposure: float = 1.0) -> np.ndarray:
    """Linear Rec.709 RGB to 8-bit sRGB for display.

    ``linear * exposure`` goes through the sRGB transfer curve (negative values and NaN
    count as 0), then is clipped to [0, 1] and rounded. No tone curve: values above 1
    clip to white, as a photograph's highlights would.

    Args:
        linear: (H, W, 3) float, linear Rec.709.
        exposure: multiplier in linear light.

    Returns:
        uint8 (H, W, 3).
    """
    x = np.asarray(linear, dtype=np.float64) * float(exposure)
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)
    x = np.maximum(x, 0.0)
    encoded = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)
    return np.rint(np.clip(encoded, 0.0, 1.0) * 255.0).astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(image: np.ndarray, *, compress_level: int = 6) -> bytes:
    """Encode an 8-bit image as PNG (ISO/IEC 15948).

    Args:
        image: uint8 array (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA, row 0 at the
            top. Values are written as they are (no colour conversion; sRGB is assumed by
            viewers).

    Returns:
        The PNG file's bytes.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"png_bytes: image must be uint8, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"png_bytes: image must be (H, W), (H, W, 3) or (H, W, 4), got {np.shape(image)}")
    h, w, c = img.shape
    colour_type = {1: 0, 3: 2, 4: 6}[c]
    # Each scanline: filter byte 0 (None) followed by the row's samples.
    raw = np.zeros((h, 1 + w * c), dtype=np.uint8)
    raw[:, 1:] = np.ascontiguousarray(img).reshape(h, w * c)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return b"".join([
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", ihdr),
        _chunk(b"IDAT", zlib.compress(raw.tobytes(), compress_level)),
        _chunk(b"IEND", b""),
    ])
