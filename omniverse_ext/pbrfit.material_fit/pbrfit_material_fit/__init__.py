"""pbrfit Material Fit: an Omniverse Kit extension around the pbrfit engine.

Modules: :mod:`.controller` (pure pxr + pbrfit; importable in plain Python),
:mod:`.extension` (menu + window lifetime), :mod:`.window` (omni.ui),
:mod:`.commands` (undoable omni.kit.commands). Only the last three import ``omni``; they
are imported here only when Kit's ``omni.ext`` is present, so CI can import the package.
"""

import importlib.util

__all__ = ["controller"]

from . import controller  # noqa: E402

if importlib.util.find_spec("omni") is not None and importlib.util.find_spec("omni.ext") is not None:
    from .extension import MaterialFitExtension  # noqa: F401  (Kit finds IExt subclasses here)

    __all__.append("MaterialFitExtension")
