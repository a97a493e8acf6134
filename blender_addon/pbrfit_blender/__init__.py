"""pbrfit for Blender: fit the active object's Principled BSDF to photographs.

Blender 4.2+ extension (see blender_manifest.toml). Photos are the cameras' background
images, the lighting is the World's Environment Texture; the fit runs pbrfit's engine in a
background thread (:class:`pbrfit.session.FitSession`). Importing this package needs only
bpy: the engine (torch, numpy, OpenImageIO, usd-core, embreex) is imported when used, and
a missing dependency is shown in the panel instead of a traceback.
"""

from __future__ import annotations

__all__ = ["register", "unregister"]

_MODULES = ("properties", "operators", "panels")


def _modules():
    import importlib

    return [importlib.import_module(f"{__name__}.{m}") for m in _MODULES]


def register():
    """Register the settings, operators and panels."""
    for module in _modules():
        module.register()


def unregister():
    """Unregister in reverse order."""
    for module in reversed(_modules()):
        module.unregister()
