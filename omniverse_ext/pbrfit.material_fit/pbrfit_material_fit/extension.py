"""Kit entry point: a Window menu item that opens and closes the Material Fit window.

Only lifetime lives here (menu, window, command registration); the UI is
:mod:`.window`, the logic :mod:`.controller`. When the engine cannot run in this Kit
(:func:`.dependencies.problem`), the window is a one-line notice saying why and what to
do, and nothing that imports the engine is loaded.
"""

import omni.ext
import omni.kit.commands
import omni.ui as ui
from omni.kit.menu.utils import MenuItemDescription, add_menu_items, remove_menu_items

from .dependencies import problem

__all__ = ["MaterialFitExtension"]

MENU = "Window"
TITLE = "pbrfit Material Fit"


class _NoticeWindow(ui.Window):
    """Says why the engine cannot run (see :func:`.dependencies.problem`)."""

    def __init__(self, title: str, text: str):
        super().__init__(title, width=460, height=140)
        with self.frame:
            ui.Label(text, word_wrap=True, style={"color": 0xFF4040E0})


class MaterialFitExtension(omni.ext.IExt):
    """Registers the commands and a ``Window > pbrfit Material Fit`` toggle."""

    def on_startup(self, ext_id):
        self._window = None
        self._commands = None
        self._problem = problem()
        if self._problem is None:
            from . import commands

            self._commands = commands
            omni.kit.commands.register_all_commands_in_module(commands)
        else:
            print(f"[pbrfit.material_fit] {self._problem}")
        self._menu = [MenuItemDescription(name=TITLE, onclick_fn=self._toggle)]
        add_menu_items(self._menu, MENU)

    def _toggle(self, *args):
        if self._window is None:
            if self._problem is not None:
                self._window = _NoticeWindow(TITLE, self._problem)
            else:
                from .window import MaterialFitWindow

                self._window = MaterialFitWindow(TITLE)
        else:
            self._window.visible = not self._window.visible

    def on_shutdown(self):
        remove_menu_items(self._menu, MENU)
        if self._commands is not None:
            omni.kit.commands.unregister_module_commands(self._commands)
        if self._window is not None:
            self._window.destroy()
            self._window = None
