"""pbrfit Material Fit: an Omniverse Kit extension around the pbrfit engine.

Modules: :mod:`.controller` (pure pxr + pbrfit; importable in plain Python),
:mod:`.dependencies` (can the engine run here?), :mod:`.extension` (menu + window lifetime),
:mod:`.window` (omni.ui), :mod:`.commands` (undoable omni.kit.commands). Only the last
three import ``omni``; they are imported here only when Kit's ``omni.ext`` is present, so
CI can import the package. Nothing here imports the engine: when its dependencies are
missing the window says so instead of a traceback at start-up.
"""

import importlib.util

__all__ = []

if importlib.util.find_spec("omni") is not None and importlib.util.find_spec("omni.ext") is not None:
    from .extension import MaterialFitExtension  # noqa: F401  (Kit finds IExt subclasses here)

    __all__.append("MaterialFitExtension")
