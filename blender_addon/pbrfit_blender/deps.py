"""Are the engine and its dependencies importable in this Blender? (No bpy.)

The add-on imports ``pbrfit`` (and through it torch, numpy, OpenImageIO, usd-core, embreex)
only when it needs them; :func:`dependency_message` tells the panel and the operators what
is missing, in one line, instead of a traceback. The list itself is the engine's
(:mod:`pbrfit.dependencies`).
"""

from __future__ import annotations

__all__ = ["REMEDY", "dependency_message"]

#: what a Blender user does about a missing dependency
REMEDY = ("install the pbrfit extension zip built for your platform and Blender version, which bundles them "
          "(see blender_addon/README.md)")


def dependency_message(refresh: bool = False) -> str | None:
    """One line for the UI when something is missing, else None."""
    try:
        from pbrfit.dependencies import message
    except ImportError:
        return f"pbrfit needs its engine (the pbrfit package), which is not importable here: {REMEDY}"
    return message(REMEDY, refresh)
