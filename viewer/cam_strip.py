"""The strip of small maps under the image: one thumbnail per predicted and per true class of the
sample on screen, marked TP / FN / FP, each a button that makes its class the main map.

The maps come from the CAM worker (one request per sample, the forward passes shared by the
classes: viewer.session.Models.cams); this widget only draws what arrives. It keeps a fixed
height, empty or full, so nothing under or above it moves when a sample loads.
"""

import cv2
import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from runtime.classes import CLASS_NAMES
from viewer.cam_request import MARKS
from viewer.render import HEAT_FLOOR, HEAT_STOPS

THUMB = 76           # thumbnail side, pixels
TILE_W = THUMB + 44  # a tile's width: the thumbnail and its label "FN 9 Endosomes" (elided beyond)
MARK_COLOURS = {"FN": "#d04040", "FP": "#e08000", "TP": "#2e9a2e", "pred": "#5b9bd5", "true": "#808080"}
WAITING_GRAY = 60


def thumbnail(rgb, cam, size=THUMB):
    """uint8 (size, size, 3): the composite as shown, shrunk (aspect kept, black borders) and
    dimmed, with the map over it in the heat colours (violet to white, transparent below
    HEAT_FLOOR). ``cam`` None: the composite alone, darker (the map is on its way)."""
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    # the composite dimmed, so the map (the heat fill of the main view, opaque) stands out at 76 px
    small = small.astype(np.float32) * (0.45 if cam is not None else 0.25)
    if cam is not None:
        value = cv2.resize(cam.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
        heat = np.stack([np.interp(value, HEAT_STOPS[:, 0], HEAT_STOPS[:, c + 1]) for c in range(3)], -1)
        alpha = np.clip((value - HEAT_FLOOR) / (1 - HEAT_FLOOR), 0, 1)[..., None] ** 0.7
        small = small * (1 - alpha) + heat * alpha
    small = np.clip(small + 0.5, 0, 255).astype(np.uint8)
    out = np.zeros((size, size, 3), np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = small
    return out


def _pixmap(rgb):
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    image = QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format_RGB888).copy()
    return QtGui.QPixmap.fromImage(image)


class CamStrip(QtWidgets.QWidget):
    """A row of class buttons with their maps. ``class_clicked(c)`` when one is clicked."""

    class_clicked = QtCore.pyqtSignal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        outer = QtWidgets.QHBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = QtWidgets.QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        self.scroll.setFrameShape(QtWidgets.QFrame.NoFrame)
        outer.addWidget(self.scroll)
        inner = QtWidgets.QWidget()
        self.row = QtWidgets.QHBoxLayout(inner)
        self.row.setContentsMargins(2, 2, 2, 2)
        self.row.setSpacing(4)
        self.row.addStretch(1)
        self.scroll.setWidget(inner)
        # why the strip is empty, or how many classes it leaves out: beside it, never scrolled away
        self.note = QtWidgets.QLabel("")
        self.note.setStyleSheet("color: gray")
        self.note.setWordWrap(True)
        outer.addWidget(self.note)
        text_h = self.fontMetrics().height()
        # fixed: the image above never moves when the strip fills or empties (room for a scroll bar)
        self.setFixedHeight(THUMB + text_h + 30)
        self.buttons = {}     # class -> QToolButton
        self.marks = {}       # class -> mark
        self.filled = set()   # classes whose map is drawn
        self.selected = None

    def clear(self, text=""):
        for button in self.buttons.values():
            self.row.removeWidget(button)
            button.setParent(None)  # off screen now, not when the deferred delete comes
            button.deleteLater()
        self.buttons, self.marks, self.filled, self.selected = {}, {}, set(), None
        self.note.setText(text)
        self.note.setVisible(bool(text))
        self.note.setMaximumWidth(16777215)  # alone: as wide as the strip

    def set_classes(self, entries, probs=None, placeholder=None, more=0):
        """One button per (class, mark), in order; ``placeholder`` (uint8 RGB thumbnail) is drawn
        until the class's map arrives; ``more``: classes left out (the strip is bounded)."""
        self.clear(f"+{more} more: click their bars" if more else "")
        for index, (cls, mark) in enumerate(entries):
            button = QtWidgets.QToolButton()
            button.setToolButtonStyle(QtCore.Qt.ToolButtonTextUnderIcon)
            button.setIconSize(QtCore.QSize(THUMB, THUMB))
            button.setCheckable(True)
            name = CLASS_NAMES[cls]
            label = f"{mark} {cls} {name}"
            button.setText(button.fontMetrics().elidedText(label, QtCore.Qt.ElideRight, TILE_W - 24))
            p = f", p {probs[cls]:.2f}" if probs is not None else ""
            button.setToolTip(f"{cls} {name}: {MARKS[mark]}{p}. Click: show this class's map.")
            colour = MARK_COLOURS[mark]
            tint = QtGui.QColor(colour)
            button.setFixedWidth(TILE_W)
            button.setStyleSheet(
                f"QToolButton {{ border: 2px solid {colour}; color: {colour}; font-weight: bold; padding: 1px; }}"
                f"QToolButton:checked {{ border: 4px solid {colour}; "
                f"background: rgba({tint.red()}, {tint.green()}, {tint.blue()}, 50); }}")
            if placeholder is not None:
                button.setIcon(QtGui.QIcon(_pixmap(placeholder)))
            button.clicked.connect(lambda _checked=False, c=cls: self.class_clicked.emit(c))
            self.row.insertWidget(index, button)
            self.buttons[cls] = button
            self.marks[cls] = mark
        self.note.setVisible(bool(more))
        self.note.setMaximumWidth(THUMB + 40)  # beside the tiles
        self.set_selected(self.selected)

    def set_map(self, cls, rgb_thumb):
        button = self.buttons.get(cls)
        if button is not None:
            button.setIcon(QtGui.QIcon(_pixmap(rgb_thumb)))
            self.filled.add(cls)

    def set_selected(self, cls):
        """Check the button of the class the main map shows (none when it is not in the strip)."""
        self.selected = cls
        for c, button in self.buttons.items():
            button.setChecked(c == cls)

    def entries(self):
        """[(class, mark, map drawn)] in the order shown (for tests and the real-window check)."""
        order = sorted(self.buttons, key=lambda c: self.row.indexOf(self.buttons[c]))
        return [(c, self.marks[c], c in self.filled) for c in order]
