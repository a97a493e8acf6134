"""Are the engine and its dependencies importable? (No bpy.)

The add-on imports ``pbrfit`` (and through it torch, numpy, OpenImageIO, usd-core, embreex) only
when it needs them; :func:`missing_dependencies` tells the UI what is missing so the panel
can say it in one line instead of a traceback.
"""

from __future__ import annotations

import importlib

__all__ = ["REQUIRED", "missing_dependencies", "dependency_message"]

#: import name -> pip distribution name
REQUIRED: dict[str, str] = {
    "numpy": "numpy",
    "torch": "torch",
    "embreex": "embreex",
    "OpenImageIO": "OpenImageIO",
    "pxr": "usd-core",
    "MaterialX": "materialx",
    "pbrfit": "pbrfit",
}

_cache: list[str] | None = None


def missing_dependencies(refresh: bool = False) -> list[str]:
    """Distribution names of the required modules that fail to import (cached)."""
    global _cache
    if _cache is None or refresh:
        missing = []
        for module, dist in REQUIRED.items():
            try:
                importlib.import_module(module)
            except Exception:  # ImportError, or a broken binary wheel (OSError, ...)
                missing.append(dist)
        _cache = missing
    return list(_cache)


def dependency_message(refresh: bool = False) -> str | None:
    """One line for the UI when something is missing, else None."""
    missing = missing_dependencies(refresh)
    if not missing:
        return None
    return (f"pbrfit needs {', '.join(missing)}: install the extension build that bundles its "
            "wheels (see blender_addon/README.md), or pip install them into Blender's Python")
