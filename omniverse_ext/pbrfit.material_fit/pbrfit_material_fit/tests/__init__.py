"""The extension's tests, for Kit's test runner (``[[test]]`` in config/extension.toml).

:mod:`.checks` holds what they check as plain functions (plain Python CI runs those too);
:mod:`.test_material_fit` wraps them in ``omni.kit.test`` cases and is imported only in Kit.
"""

import importlib.util

if importlib.util.find_spec("omni") is not None and importlib.util.find_spec("omni.kit") is not None:
    from .test_material_fit import *  # noqa: F403
