"""Camera RAW photos as reference images, through rawpy (LibRaw).

A RAW file is developed to linear, scene-referred Rec.709 RGB (the convention of
:mod:`pbrfit.images`), with nothing a camera's or converter's look would add:

* gamma 1 (linear), no auto-brightening (``no_auto_bright``), brightness 1: a value of 1.0 is
  the sensor's white level after the black level is subtracted and white balance applied,
  so the image is the scene's radiance times an unknown constant: give the view an
  ``exposure`` (stops) or ``exposure = "auto"`` (fitted);
* camera to Rec.709 by the camera's own colour matrix (LibRaw's, or the DNG's ColorMatrix),
  output primaries sRGB/Rec.709 with a D65 white;
* white balance: the camera's as-shot multipliers ("camera", the default), LibRaw's daylight
  multipliers for the camera ("daylight"), or the user's (R, G, B) multipliers;
* AHD demosaicing (LibRaw's default), highlights clipped, the file's orientation applied.

Why rawpy: it is LibRaw, the maintained decoder that darktable, RawTherapee and
OpenImageIO use; the OpenImageIO wheel on PyPI is built without its RAW plugin.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import dependencies
from .errors import InputError

__all__ = ["RAW_EXTENSIONS", "WHITE_BALANCES", "is_raw", "read_raw", "white_balance_of"]

#: file extensions read as camera RAW (LibRaw's common formats; DNG first)
RAW_EXTENSIONS = frozenset({
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf", ".pef",
    ".srw", ".rwl", ".3fr", ".fff", ".iiq", ".erf", ".mrw", ".mef", ".mos", ".x3f", ".kdc", ".dcr", ".raw"})

#: named white balances of a view's ``raw_white_balance`` (or a list of three multipliers)
WHITE_BALANCES = ("camera", "daylight")


def is_raw(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as a camera RAW file (by its extension)."""
    return Path(path).suffix.lower() in RAW_EXTENSIONS


def white_balance_of(value, where: str) -> str | tuple[float, float, float]:
    """A view's ``raw_white_balance`` checked: "camera", "daylight" or three positive
    multipliers (R, G, B; applied to the camera's channels before its colour matrix).

    Raises:
        InputError: anything else, naming ``where``.
    """
    if value in WHITE_BALANCES:
        return value
    if (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e3 for v in value)):
        return tuple(float(v) for v in value)
    raise InputError(f"{where}: raw_white_balance {value!r} is not understood; use \"camera\" (as shot), "
                     "\"daylight\", or three positive multipliers [r, g, b]")


def read_raw(path: str | os.PathLike, white_balance="camera") -> np.ndarray:
    """Develop a camera RAW file to linear Rec.709 (see the module docstring).

    Args:
        path: a file whose extension is in :data:`RAW_EXTENSIONS`.
        white_balance: "camera", "daylight" or (r, g, b) multipliers.

    Returns:
        float32 (H, W, 3), linear, row 0 at the top (the file's orientation applied).

    Raises:
        InputError: rawpy is missing, or LibRaw cannot read the file (one line naming it).
    """
    rawpy = dependencies.rawpy()
    path = Path(path)
    # adjust_maximum_thr 0: LibRaw's default (0.75) takes a photo's brightest value as its white
    # level when it is above 75% of the real one, rescaling each photo its own way
    options = dict(gamma=(1.0, 1.0), no_auto_bright=True, bright=1.0, output_bps=16, adjust_maximum_thr=0.0,
                   output_color=rawpy.ColorSpace.sRGB, use_auto_wb=False,
                   highlight_mode=rawpy.HighlightMode.Clip)
    if white_balance == "camera":
        options["use_camera_wb"] = True
    elif white_balance == "daylight":
        options["use_camera_wb"] = False
    else:
        r, g, b = white_balance
        options.update(use_camera_wb=False, user_wb=[r, g, b, g])
    if not path.is_file():
        raise InputError(f"RAW photo {path} does not exist; check the view's image path")
    try:
        with rawpy.imread(str(path)) as raw:
            rgb = raw.postprocess(**options)
    except (rawpy.LibRawError, OSError, ValueError) as e:
        arg = e.args[0] if e.args else ""
        detail = " ".join((arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)).split())
        detail = detail or type(e).__name__
        raise InputError(f"RAW photo {path}: LibRaw (rawpy) cannot read it ({detail}); check that the file is "
                         "complete, or convert it to a 16-bit linear TIFF and set encoding = \"linear\"") from None
    return np.ascontiguousarray(rgb, np.float32) / np.float32(65535.0)
