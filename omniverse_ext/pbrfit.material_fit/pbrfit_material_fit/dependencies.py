"""Can this Kit run the engine? One line for the window when it cannot (no omni, no pbrfit
import at module level, so it works when they are what is missing).

Kit installs the engine's dependencies from ``[python.pipapi]`` in config/extension.toml
when the extension is enabled (needs network access unless the extension was built with
``--offline``); the engine itself ships inside the built extension (``engine/``).
"""

from __future__ import annotations

import sys

__all__ = ["MIN_PYTHON", "REMEDY", "problem"]

#: pbrfit's oldest Python: Kit 107 and later (3.11; Kit 109 and 110 run 3.12)
MIN_PYTHON = (3, 11)

#: what a Kit user does about a missing dependency
REMEDY = ("enable the extension once with network access so that Kit installs its [python.pipapi] "
          "requirements, or use the extension built with scripts/build_kit_extension.py --offline")


def problem(refresh: bool = False) -> str | None:
    """Why the engine cannot run in this Kit, in one line; None when it can."""
    if sys.version_info[:2] < MIN_PYTHON:
        return (f"pbrfit needs Python {'.'.join(map(str, MIN_PYTHON))} or newer (Kit 107 or newer); this Kit runs "
                f"Python {sys.version_info.major}.{sys.version_info.minor}")
    try:
        from pbrfit.dependencies import message
    except ImportError:
        return ("pbrfit's engine is not importable: add the folder built by scripts/build_kit_extension.py "
                "(it carries the engine) to Kit's extension search paths, not the source folder")
    return message(REMEDY, refresh)
