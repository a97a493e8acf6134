"""Reading and writing images: reference photographs, masks, environment maps.

Everything goes through OpenImageIO (imageio returns garbage for Blender's DWAB EXRs
without an error). What comes out follows :mod:`pbrfit.scene`'s image conventions:

* Colour is linear, scene-referred Rec.709 RGB, float32, shape (H, W, 3), row 0 at the top.
  Grey files are repeated into three channels. EXIF orientation is applied. The image is
  the display window (an EXR's data window is padded with zeros or cropped to it).
* Float files (EXR, Radiance HDR, float/half TIFF) are linear as stored.
* Integer files (8- or 16-bit PNG, JPEG, TIFF) are sRGB-encoded; they are decoded with the
  IEC 61966-2-1 curve (:func:`srgb_to_linear`). Their values are not otherwise interpreted
  (no ICC profile, no PNG gAMA).
* Alpha is coverage, float32 (H, W) in [0, 1]. The returned colour is *associated*
  (premultiplied by alpha), as OpenEXR stores it and as Cycles writes it with a transparent
  film. Files that store straight alpha (PNG; TIFF when it says so) are decoded to linear
  first and then multiplied by alpha, so a half-covered pixel of a PNG and of the EXR
  render of the same scene agree. (OpenImageIO's own PNG reader would premultiply the
  sRGB-encoded values, which is wrong for linear data; it is told not to.)
* Masks are float32 (H, W) in [0, 1], read as stored (no sRGB decoding: a mask is coverage,
  not colour).

Every problem is raised as :class:`pbrfit.errors.InputError` naming the file. Output files
are written atomically (:func:`pbrfit.atomic.atomic_path`: a temporary file beside the
target, then ``os.replace``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import OpenImageIO as oiio

from .atomic import atomic_path
from .errors import InputError

__all__ = [
    "srgb_to_linear",
    "linear_to_srgb",
    "read_image",
    "read_photo",
    "Photo",
    "CLIPPED_LEVEL",
    "read_mask",
    "read_environment",
    "check_mask",
    "area_downsample",
    "working_size",
    "MAX_READ_PIXELS",
    "MAX_WORKING_SIZE",
    "MAX_ENVIRONMENT_WIDTH",
    "write_png",
    "write_exr",
]

_FLOAT_TYPES = {oiio.HALF, oiio.FLOAT, oiio.DOUBLE}

#: Largest image read at all (a 100-megapixel RGBA float image is 1.6 GB in memory).
MAX_READ_PIXELS = 100_000_000
#: Reference images (and masks) are area-downsampled so that their longer side is at most
#: this many pixels: memory and time grow with the pixels a view covers (see README).
MAX_WORKING_SIZE = 512
#: Environment maps wider than this are area-downsampled to this width (2:1 kept).
MAX_ENVIRONMENT_WIDTH = 2048

#: How far an environment's width/height may be from 2 (relative) and still be lat-long.
_LATLONG_TOLERANCE = 0.01


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB decoding, elementwise, for encoded values in [0, 1]."""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB encoding, elementwise; input is clipped to [0, 1] first."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _open(path: str | os.PathLike, what: str) -> oiio.ImageBuf:
    """Read the whole first subimage of ``path`` into an ImageBuf, EXIF orientation applied."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist; check the path")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a file; give an image file")
    config = oiio.ImageSpec()
    config.attribute("oiio:UnassociatedAlpha", 1)  # keep straight alpha straight (see module doc)
    buf = oiio.ImageBuf(str(path), 0, 0, config)
    header = buf.spec()
    pixels = int(header.full_width) * int(header.full_height) if not buf.has_error else 0
    if pixels > MAX_READ_PIXELS:
        raise InputError(f"{what} {path} is {header.full_width}x{header.full_height} pixels ({pixels / 1e6:.0f} "
                         f"megapixels); pbrfit reads images of up to {MAX_READ_PIXELS / 1e6:.0f} megapixels, "
                         "scale it down first")
    if not buf.read(0, 0, True) or buf.has_error:
        raise InputError(f"cannot read {what} {path}: {_one_line(buf.geterror())}; "
                         "the file is corrupt or not an image format OpenImageIO reads")
    if buf.orientation != 1:
        buf = oiio.ImageBufAlgo.reorient(buf)
        if buf.has_error:
            raise InputError(f"cannot apply the EXIF orientation of {what} {path}: {_one_line(buf.geterror())}")
    if buf.roi != buf.roi_full:
        # A data window other than the display window (EXR crops, overscan): the image is
        # the display window, zero where there is no data.
        buf = oiio.ImageBufAlgo.crop(buf, buf.roi_full)
        if buf.has_error:
            raise InputError(f"cannot read the display window of {what} {path}: {_one_line(buf.geterror())}")
    return buf


def _pick_channels(names: list[str]) -> tuple[list[int], int | None]:
    """Indices of the colour channels (1 grey or 3 RGB) and of alpha, from channel names.

    Plain "R","G","B" (or "Y") and "A" win; otherwise the first layer of a multi-layer EXR
    ("ViewLayer.Combined.R", ...); otherwise by position (grey, grey+alpha, RGB, RGBA).
    """
    upper = [n.upper() for n in names]
    prefixes = [""] + list(dict.fromkeys(n.rsplit(".", 1)[0] + "." for n in upper if "." in n))
    for prefix in prefixes:
        alpha = upper.index(prefix + "A") if prefix + "A" in upper else None
        if all(prefix + c in upper for c in "RGB"):
            return [upper.index(prefix + c) for c in "RGB"], alpha
        if prefix + "Y" in upper:
            return [upper.index(prefix + "Y")], alpha
    # by position, never taking a channel named as alpha for colour
    alpha_named = [i for i, n in enumerate(upper) if n.rsplit(".", 1)[-1] in ("A", "ALPHA")]
    others = [i for i in range(len(names)) if i not in alpha_named]
    alpha = alpha_named[0] if alpha_named else None
    if len(others) in (1, 2):
        return [others[0]], (others[1] if len(others) == 2 and alpha is None else alpha)
    if len(others) >= 3:
        return others[:3], (others[3] if len(others) >= 4 and alpha is None else alpha)
    return [], alpha


def _finite_check(data: np.ndarray, path, what: str) -> None:
    """Raise InputError naming how many pixels of (H, W, C) ``data`` are NaN or Inf."""
    bad = ~np.isfinite(data)
    if bad.any():
        count = int(bad.any(axis=2).sum())
        total = data.shape[0] * data.shape[1]
        raise InputError(f"{what} {path} has {count} of {total} pixels that are NaN or Inf; "
                         "fix or re-render the image (clamp fireflies, check the denoiser)")


def _load(path, what: str) -> tuple[np.ndarray, list[int], int | None, bool, bool]:
    """Pixels as float32 (H, W, C) normalized to [0, 1] for integer files, plus
    (colour channel indices, alpha index or None, is_float, alpha_is_straight)."""
    buf = _open(path, what)
    spec = buf.spec()
    data = buf.get_pixels(oiio.FLOAT)
    if data is None or buf.has_error:
        raise InputError(f"cannot read pixels of {what} {path}: {_one_line(buf.geterror())}")
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or data.shape[0] == 0 or data.shape[1] == 0:
        raise InputError(f"{what} {path} has shape {data.shape}; need a 2-D image")
    colour_idx, alpha_idx = _pick_channels(list(spec.channelnames))
    if not colour_idx and alpha_idx is not None and what == "mask":
        colour_idx = [alpha_idx]  # an alpha-only mask is a mask
    if not colour_idx:
        only = "only an alpha channel" if alpha_idx is not None else "no usable channel"
        raise InputError(f"{what} {path} has {only} ({', '.join(spec.channelnames)}); give an RGB, RGBA or "
                         "grey image" + (" (an alpha-only file can be a view's mask)" if alpha_idx is not None else ""))
    formats = list(spec.channelformats) or [spec.format]
    is_float = all(f.basetype in _FLOAT_TYPES for f in formats)
    # With the UnassociatedAlpha hint set, this attribute says whether the file's alpha is straight.
    straight = bool(spec.get_int_attribute("oiio:UnassociatedAlpha", 0))
    return data, colour_idx, alpha_idx, is_float, straight


def integer_bits(path: str | os.PathLike) -> int | None:
    """Bits per channel of an integer-valued image file (8, 16, ...), None for a float one."""
    buf = _open(path, "image")
    spec = buf.spec()
    formats = list(spec.channelformats) or [spec.format]
    if all(f.basetype in _FLOAT_TYPES for f in formats):
        return None
    return max(int(f.size()) for f in formats) * 8


#: what the integer values of a reference photo are (a job view's ``encoding``)
ENCODINGS = ("srgb", "linear")


def _read_colour(path, what: str, *, with_alpha: bool, encoding: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Linear colour (H, W, 3) and alpha (or None); colour associated with alpha when with_alpha.
    Integer files are sRGB-decoded unless ``encoding`` is "linear"."""
    data, colour_idx, alpha_idx, is_float, straight = _load(path, what)
    if is_float and encoding == "srgb":
        raise InputError(f"{what} {path} holds floating-point (linear) values, but its view says encoding = \"srgb\"; "
                         "remove the encoding key, or give the sRGB-encoded 8/16-bit file")
    if not with_alpha:
        alpha_idx = None
    _finite_check(data[:, :, colour_idx + ([alpha_idx] if alpha_idx is not None else [])], path, what)
    colour = data[:, :, colour_idx]
    alpha = None
    if alpha_idx is not None:
        alpha = np.clip(data[:, :, alpha_idx], 0.0, 1.0)
        if not is_float and not straight:
            # Associated alpha in sRGB-encoded space (some TIFFs): un-associate before decoding.
            a = alpha[..., None]
            colour = np.where(a > 0, colour / np.maximum(a, 1e-12), 0.0)
            straight = True
    if not is_float and encoding != "linear":
        colour = srgb_to_linear(colour)
    if alpha is not None and straight:
        colour = colour * alpha[..., None]
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    return (np.ascontiguousarray(colour, dtype=np.float32),
            None if alpha is None else np.ascontiguousarray(alpha, dtype=np.float32))


def read_image(path: str | os.PathLike, encoding: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a reference image as linear Rec.709.

    Args:
        path: EXR/HDR (linear) or 8/16-bit PNG/JPEG/TIFF (sRGB-encoded unless ``encoding``).
        encoding: "linear": an integer file's values are linear (a 16-bit TIFF from a raw
            converter); "srgb" or None: sRGB-encoded. Float files are linear ("srgb" refused).

    Returns:
        (rgb, alpha): rgb float32 (H, W, 3) linear, associated with alpha (premultiplied);
        alpha float32 (H, W) in [0, 1], or None when the file has no alpha channel.

    Raises:
        InputError: missing, unreadable or corrupt file; NaN or Inf pixels (with a count).
    """
    return _read_colour(path, "image", with_alpha=True, encoding=encoding)


#: A linear value at or above this, in an integer photo or a RAW file, is clipped (8-bit: code 255)
CLIPPED_LEVEL = 0.999


class Photo(NamedTuple):
    """A reference photo as :func:`read_photo` reads it."""

    rgb: np.ndarray  #: (H, W, 3) linear, as :func:`read_image`'s
    alpha: np.ndarray | None  #: (H, W) or None, as :func:`read_image`'s
    clipped: np.ndarray | None  #: (H, W) bool where a channel hit the file's maximum, or None
    bits: int | None  #: bits per channel of an integer file (16 for a RAW), None for a float one


def read_photo(path: str | os.PathLike, encoding: str | None = None, raw_white_balance="camera") -> Photo:
    """A reference photo as jobs read it: a camera RAW file developed by
    :func:`pbrfit.raw.read_raw` (with ``raw_white_balance``), anything else by
    :func:`read_image` (with ``encoding``). ``clipped`` marks the pixels where an integer file
    or a RAW reached its maximum in a channel (their value is only a lower bound); None for a
    float file or when nothing clipped."""
    from .raw import is_raw, read_raw

    if is_raw(path):
        rgb, alpha, bits = read_raw(path, raw_white_balance), None, 16
    else:
        bits = integer_bits(path)
        rgb, alpha = read_image(path, encoding)
    clipped = rgb.max(axis=-1) >= CLIPPED_LEVEL if bits is not None else None
    return Photo(rgb, alpha, clipped if clipped is not None and clipped.any() else None, bits)


def read_mask(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """Read an object mask.

    Args:
        path: PNG, EXR or any image OpenImageIO reads. The mask is the alpha channel when
            there is one, else the grey channel, else the mean of R, G, B. Values are used as
            stored (no sRGB decoding) and clipped to [0, 1].
        shape: (height, width) the mask must have (its reference image's).

    Returns:
        float32 (H, W) in [0, 1]; 1 = the object covers the pixel.

    Raises:
        InputError: missing/unreadable file, NaN/Inf, wrong shape, or an empty mask
            (less than one pixel of coverage in total).
    """
    data, colour_idx, alpha_idx, _, _ = _load(path, "mask")
    mask = data[:, :, alpha_idx] if alpha_idx is not None else data[:, :, colour_idx].mean(axis=2)
    _finite_check(mask[..., None], path, "mask")
    shape = (int(shape[0]), int(shape[1]))
    if mask.shape != shape:
        raise InputError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} pixels but its image is "
                         f"{shape[1]}x{shape[0]}; make them the same size")
    mask = np.ascontiguousarray(np.clip(mask, 0.0, 1.0), dtype=np.float32)
    check_mask(mask, path)
    return mask


def check_mask(mask: np.ndarray, path) -> None:
    """Raise InputError when ``mask`` (from ``path``) covers less than one pixel in total."""
    if float(np.sum(mask)) < 1.0:
        raise InputError(f"mask {path} is empty (no pixel is covered); it must be white (or opaque) "
                         "where the object is, and the object must be in view")


def read_environment(path: str | os.PathLike) -> np.ndarray:
    """Read a lat-long (equirectangular) environment map.

    Returns:
        float32 (H, W, 3) linear radiance, row 0 = the dome frame's +Y pole, u = 0.5 toward
        the dome's +Z (see :mod:`pbrfit.scene`). Alpha, if any, is ignored.

    Maps wider than :data:`MAX_ENVIRONMENT_WIDTH` are area-downsampled to it (mean
    radiance kept).

    Raises:
        InputError: unreadable file, NaN/Inf, or not about 2:1 (width = 2 x height within 1%).
    """
    colour, _ = _read_colour(path, "environment", with_alpha=False)
    h, w = colour.shape[:2]
    if abs(w / h - 2.0) > 2.0 * _LATLONG_TOLERANCE:
        raise InputError(f"environment {path} is {w}x{h} pixels; a lat-long map must be twice as wide "
                         "as it is high (convert cube maps or mirror balls to lat-long first)")
    if w > MAX_ENVIRONMENT_WIDTH:
        colour = area_downsample(colour, MAX_ENVIRONMENT_WIDTH // 2, MAX_ENVIRONMENT_WIDTH)
    return colour


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: output pixel i averages the input interval [i, i+1) * n_in/n_out
    (each row sums to 1; a pixel partly inside counts by the part inside)."""
    scale = n_in / n_out
    edges = np.arange(n_out + 1) * scale
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
    return (overlap / scale).astype(np.float64)


def area_downsample(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resample (H, W) or (H, W, C) ``image`` to (height, width) by exact area averaging:
    every output pixel is the mean of the input area it covers, so the image's mean (mean
    radiance, coverage) is kept. For shrinking only."""
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape[:2]
    c = int(np.prod(img.shape[2:], dtype=int))
    wy = _area_weights(h, height).astype(np.float32)
    wx = _area_weights(w, width).astype(np.float32)
    rows = (wy @ img.reshape(h, w * c)).reshape(height, w, c)  # matrix products: BLAS, not einsum loops
    cols = wx @ np.ascontiguousarray(rows.transpose(1, 0, 2)).reshape(w, height * c)
    out = cols.reshape(width, height, c).transpose(1, 0, 2)
    return np.ascontiguousarray(out).reshape((height, width) + img.shape[2:])


def working_size(height: int, width: int, limit: int = MAX_WORKING_SIZE) -> tuple[int, int]:
    """(height, width) scaled so that the longer side is at most ``limit`` (aspect kept)."""
    longest = max(height, width)
    if longest <= limit:
        return height, width
    s = limit / longest
    return max(1, round(height * s)), max(1, round(width * s))


def _write(path: str | os.PathLike, pixels: np.ndarray, fmt, attributes: dict, what: str) -> None:
    h, w, c = pixels.shape
    spec = oiio.ImageSpec(w, h, c, fmt)
    names = {1: ("Y",), 2: ("Y", "A"), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}[c]
    spec.channelnames = names
    if "A" in names:
        spec.alpha_channel = names.index("A")
    for key, value in attributes.items():
        spec.attribute(key, value)
    with atomic_path(path, what=what) as tmp:
        out = oiio.ImageOutput.create(str(tmp))
        if out is None:
            raise InputError(f"cannot write {path}: {_one_line(oiio.geterror())}")
        ok = out.open(str(tmp), spec) and out.write_image(pixels)
        err = out.geterror()
        out.close()
        if not ok:
            raise InputError(f"cannot write {path}: {_one_line(err)}; choose a writable location")


def _as_hwc(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4) or 0 in image.shape[:2]:
        raise ValueError(f"{what}: need an (H, W), (H, W, 1..4) image, got shape {image.shape}")
    return image


def write_png(path: str | os.PathLike, rgb_uint8_or_float_srgb: np.ndarray) -> None:
    """Write an 8-bit PNG atomically.

    Args:
        path: destination file.
        rgb_uint8_or_float_srgb: (H, W), (H, W, 3) or (H, W, 4) pixels that are *already
            sRGB-encoded*: uint8 as is, or floats in [0, 1] (clipped, rounded to 8 bits).
            A fourth channel is straight (unassociated) alpha, PNG's convention.
    """
    image = _as_hwc(rgb_uint8_or_float_srgb, "write_png")
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating):
            raise ValueError(f"write_png: need uint8 or float pixels, got {image.dtype}")
        image = np.round(np.clip(np.nan_to_num(image, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    _write(path, np.ascontiguousarray(image), oiio.UINT8, {"oiio:UnassociatedAlpha": 1}, "PNG image")


def write_exr(path: str | os.PathLike, image: np.ndarray, *, half: bool = False) -> None:
    """Write a linear float image as OpenEXR (ZIP compression) atomically.

    Args:
        path: destination file.
        image: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA (associated alpha, EXR's
            convention) float values, linear.
        half: store 16-bit half floats instead of 32-bit floats.
    """
    image = _as_hwc(image, "write_exr").astype(np.float32)
    _write(path, np.ascontiguousarray(image), oiio.HALF if half else oiio.FLOAT, {"compression": "zip"},
           "EXR image")
