"""Kit entry point: a Window menu item that opens and closes the Material Fit window.

Only lifetime lives here (menu, window, command registration); the UI is
:mod:`.window`, the logic :mod:`.controller`.
"""

import omni.ext
import omni.kit.commands
from omni.kit.menu.utils import MenuItemDescription, add_menu_items, remove_menu_items

from . import commands
from .window import MaterialFitWindow

__all__ = ["MaterialFitExtension"]

MENU = "Window"
TITLE = "pbrfit Material Fit"


class MaterialFitExtension(omni.ext.IExt):
    """Registers the commands and a ``Window > pbrfit Material Fit`` toggle."""

    def on_startup(self, ext_id):
        self._window = None
        omni.kit.commands.register_all_commands_in_module(commands)
        self._menu = [MenuItemDescription(name=TITLE, onclick_fn=self._toggle)]
        add_menu_items(self._menu, MENU)

    def _toggle(self, *args):
        if self._window is None:
            self._window = MaterialFitWindow(TITLE)
        else:
            self._window.visible = not self._window.visible

    def on_shutdown(self):
        remove_menu_items(self._menu, MENU)
        omni.kit.commands.unregister_module_commands(commands)
        if self._window is not None:
            self._window.destroy()
            self._window = None
