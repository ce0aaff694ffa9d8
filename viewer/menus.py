"""The viewer's own right-click menu on the image views, in place of pyqtgraph's developer menu
(View All / X axis / Mouse Mode / Export...): Copy Id, Export view, Export image, Reset view.

:class:`MenuViewBox` is a pyqtgraph ViewBox whose right-click emits ``context_menu`` with the
screen position instead of raising pyqtgraph's menu (and the scene's "Export..." entries);
:func:`image_menu` builds the menu from the window's existing actions, so a menu entry and the
File/View menu do the same thing.
"""

import pyqtgraph as pg
from PyQt5 import QtCore, QtWidgets

# (text, the window's handler): the same code paths as File > Export and View > Reset
IMAGE_ACTIONS = (
    ("Copy Id", "copy_id"),
    ("Export view (window as shown)...", "_export_view_dialog"),
    ("Export image (own resolution, and the map alone)...", "_export_image_dialog"),
    ("Reset view (fit the image)", "reset_view"),
)


class MenuViewBox(pg.ViewBox):
    """A ViewBox that leaves its right-click menu to the application."""

    context_menu = QtCore.pyqtSignal(QtCore.QPoint)   # global screen position of the click

    def raiseContextMenu(self, ev):  # noqa: N802 - pyqtgraph's name
        self.context_menu.emit(ev.screenPos().toPoint())


def image_menu(window, parent=None):
    """The image views' menu for ``window`` (a MainWindow); Copy Id is off while no Id is shown."""
    menu = QtWidgets.QMenu(parent or window)
    menu.setObjectName("image-context-menu")
    for text, handler in IMAGE_ACTIONS:
        action = menu.addAction(text)
        action.setObjectName(handler)
        action.triggered.connect(lambda _checked=False, h=handler: getattr(window, h)())
    menu.actions()[0].setEnabled(bool(window.current.sample_id))
    return menu


def show_image_menu(window, screen_pos):
    """Pop the menu up at ``screen_pos`` (non-blocking); returns it (tests look at its entries)."""
    menu = image_menu(window)
    menu.setAttribute(QtCore.Qt.WA_DeleteOnClose)
    menu.popup(screen_pos)
    return menu
