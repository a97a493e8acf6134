"""Kit tests of the extension (omni.kit.test): the engine runs in this Kit, a fit on a small
stage finds the true colour, and the window opens from the Window menu with its controls.

Run by Kit's test runner for the ``[[test]]`` in config/extension.toml. The same checks,
except the window, run in plain Python CI (tests/test_omniverse.py).
"""

import tempfile

import omni.kit.test
import omni.kit.ui_test as ui_test

from . import checks

__all__ = ["TestMaterialFit"]


class TestMaterialFit(omni.kit.test.AsyncTestCase):
    async def test_engine_runs_here(self):
        checks.check_engine_runs_here()

    async def test_fit_recovers_the_colour(self):
        with tempfile.TemporaryDirectory() as tmp:
            checks.check_fit_recovers_the_colour(tmp)

    async def test_window_opens_from_the_menu(self):
        await ui_test.menu_click("Window/pbrfit Material Fit")
        await ui_test.human_delay()
        window = ui_test.find("pbrfit Material Fit")
        self.assertIsNotNone(window)
        fit = ui_test.find("pbrfit Material Fit//Frame/**/Button[*].text=='Fit'")
        self.assertIsNotNone(fit)
