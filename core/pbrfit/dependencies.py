"""Are pbrfit's runtime dependencies importable here? For hosts, which say so in one line.

A Blender or Kit session may lack a dependency (a zip built for another Python, an
extension enabled offline); the host asks :func:`missing` before the first fit and shows
:func:`message` instead of a traceback. Importing this module imports none of them.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["REQUIRED", "OPTIONAL", "missing", "message", "opencv", "rawpy"]

#: import name -> distribution (pip) name: the same set as core/pyproject.toml's
#: ``dependencies`` (tests/test_packaging.py checks it)
REQUIRED: dict[str, str] = {
    "numpy": "numpy",
    "torch": "torch",
    "embreex": "embreex",
    "pxr": "usd-core",
    "MaterialX": "materialx",
    "OpenImageIO": "OpenImageIO",
    "tqdm": "tqdm",
}

_cache: list[str] | None = None


def missing(refresh: bool = False) -> list[str]:
    """Distribution names of the dependencies that fail to import (the result is cached;
    ``refresh`` asks again)."""
    global _cache
    if _cache is None or refresh:
        absent = []
        for module, dist in REQUIRED.items():
            try:
                importlib.import_module(module)
            except Exception:  # ImportError, or a binary built for another Python (OSError, ...)
                absent.append(dist)
        _cache = absent
    return list(_cache)


def message(how_to_install: str, refresh: bool = False) -> str | None:
    """One line naming what is missing and what to do, or None when nothing is.

    Args:
        how_to_install: the host's remedy, e.g. "install the extension zip for your platform".
    """
    absent = missing(refresh)
    if not absent:
        return None
    python = ".".join(map(str, sys.version_info[:2]))
    return f"pbrfit needs {', '.join(absent)} (not importable in this Python {python}): {how_to_install}"


#: optional extras: import name -> (pip extra, what to say when it is missing)
OPTIONAL: dict[str, tuple[str, str]] = {
    "cv2": ("calibrate", "this needs OpenCV with its contrib modules: pip install \"pbrfit[calibrate]\" (or "
                         "opencv-contrib-python-headless)"),
    "rawpy": ("raw", "reading camera RAW photos needs rawpy: pip install \"pbrfit[raw]\" (or rawpy), or convert "
                     "the photos to 16-bit linear TIFF and set encoding = \"linear\""),
}


def _optional(module: str):
    """The optional ``module`` (:data:`OPTIONAL`), or an InputError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        from .errors import InputError

        raise InputError(OPTIONAL[module][1]) from None


def opencv():
    """The ``cv2`` module of the optional ``calibrate`` extra (ChArUco boards, colour charts)."""
    return _optional("cv2")


def rawpy():
    """The ``rawpy`` module (LibRaw) of the optional ``raw`` extra (camera RAW photos)."""
    return _optional("rawpy")
