"""The image panel: the composite with the CAM overlay (zoom and pan), a caption saying what the
overlay is, and a strip of the four channels alone."""

import html

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

from runtime.classes import CHANNELS
from viewer.menus import MenuViewBox

CHANNEL_COLOURS = ("#ff4040", "#40ff40", "#4080ff", "#ffff40")   # labels on the black image
CONTROL_COLOURS = ("#c01818", "#108010", "#1848c0", "#8a7400")   # the same hues, readable on a light panel
CAPTION_LINES = 2


class Caption(QtWidgets.QLabel):
    """The line over the image saying what the overlay is, read in full: it wraps onto a second
    line, in a label of fixed height.

    *Decision*: wrap within a fixed two-line height rather than elide one line. One line cut
    the caption at 1400 px ("not predicted (p 0.51 <= threshold 0.5" ended at the panel's edge),
    and the end of it is what the user needs (predicted or not, the threshold); a growing label
    pushed the image down by about 15 px. Two lines hold the longest caption (method, class,
    mark, model, probability and threshold) from a centre panel of about 480 px; narrower than
    that, the text is elided at the end of the second line and the whole of it is the tooltip."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.html = ""
        self.setWordWrap(True)
        self.setTextFormat(QtCore.Qt.RichText)
        self.setAlignment(QtCore.Qt.AlignLeft | QtCore.Qt.AlignTop)
        self.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Fixed)
        self.setFixedHeight(CAPTION_LINES * self.fontMetrics().lineSpacing() + 4)

    def set_html(self, text):
        self.html = text
        self.setToolTip(text)
        self._fit()

    def elided(self):
        """True when the label shows less than the whole caption (the tooltip has it all)."""
        return self.text() != self.html

    def resizeEvent(self, event):  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit()

    def _lines(self, text):
        doc = QtGui.QTextDocument()
        doc.setDefaultFont(self.font())
        doc.setDocumentMargin(0)
        doc.setHtml(text)
        doc.setTextWidth(max(1, self.contentsRect().width()))
        doc.size()  # lays the document out
        block, lines = doc.begin(), 0
        while block.isValid():
            lines += block.layout().lineCount()
            block = block.next()
        return lines

    def _fit(self):
        text = self.html
        if self.contentsRect().width() > 1 and self._lines(text) > CAPTION_LINES:
            plain = QtGui.QTextDocument()
            plain.setHtml(text)
            plain = plain.toPlainText()
            metrics, width = self.fontMetrics(), CAPTION_LINES * self.contentsRect().width()
            text = html.escape(metrics.elidedText(plain, QtCore.Qt.ElideRight, width))
            while width > 20 and self._lines(text) > CAPTION_LINES:  # words wrap early: trim until it fits
                width = int(width * 0.95)
                text = html.escape(metrics.elidedText(plain, QtCore.Qt.ElideRight, width))
        if text != self.text():
            self.setText(text)


class ImagePanel(QtWidgets.QWidget):
    hovered = QtCore.pyqtSignal(int, int)   # image pixel (x, y) under the cursor; (-1, -1) outside
    context_menu = QtCore.pyqtSignal(QtCore.QPoint)   # right-click on the composite or a channel (screen pos)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.caption = Caption()   # two lines of fixed height: the image never moves for it
        layout.addWidget(self.caption)
        self.graphics = pg.GraphicsLayoutWidget()
        layout.addWidget(self.graphics, 1)
        self._build_main_view()
        self._build_strip()
        self._shape = None

    def _build_main_view(self):
        # the viewer's own right-click menu (viewer.menus), not pyqtgraph's developer menu
        self.view = MenuViewBox(lockAspect=True, invertY=True)
        self.graphics.addItem(self.view, row=0, col=0, colspan=4)
        self.view.context_menu.connect(self.context_menu)
        self.image_item = pg.ImageItem()
        self.overlay_item = pg.ImageItem()
        self.overlay_item.setZValue(10)
        self.view.addItem(self.image_item)
        self.view.addItem(self.overlay_item)
        # the scale bar (viewer.scale_bar), in image coordinates so it stays true at any zoom
        self.scale_rect = QtWidgets.QGraphicsRectItem()
        self.scale_rect.setBrush(pg.mkBrush("w"))
        self.scale_rect.setPen(pg.mkPen((0, 0, 0), width=1, cosmetic=True))
        self.scale_rect.setZValue(20)
        self.scale_text = pg.TextItem("", color="w", anchor=(0.5, 1), fill=pg.mkBrush(0, 0, 0, 120))
        self.scale_text.setZValue(20)
        self.view.addItem(self.scale_rect)
        self.view.addItem(self.scale_text)
        self.set_scale_bar(None)
        self.view.scene().sigMouseMoved.connect(self._mouse_moved)
        # the scene reports moves only: leaving the panel is a Leave event on the view's viewport
        self.graphics.viewport().installEventFilter(self)

    def _build_strip(self):
        self.channel_items, self.channel_labels, self.strip_views = [], [], []
        for i, name in enumerate(CHANNELS):
            vb = MenuViewBox(lockAspect=True, invertY=True)
            self.graphics.addItem(vb, row=1, col=i)
            vb.setMouseEnabled(False, False)
            vb.context_menu.connect(self.context_menu)
            item = pg.ImageItem()
            vb.addItem(item)
            label = pg.TextItem(name, color=CHANNEL_COLOURS[i], anchor=(0, 0))
            label.setZValue(5)
            vb.addItem(label)
            self.channel_items.append(item)
            self.channel_labels.append(label)
            self.strip_views.append(vb)
        # The strip is a reminder of the channels, the composite is what is inspected: it keeps
        # about five sixths of the panel's height at every window size.
        self.graphics.ci.layout.setRowStretchFactor(0, 5)
        self.graphics.ci.layout.setRowStretchFactor(1, 1)

    # ------------------------------------------------------------------ drawing
    def show_image(self, rgb, planes, channels_on):
        """The composite (uint8 RGB) and the four display planes (uint8 each). The view keeps its
        zoom and pan unless the image size changed."""
        self.image_item.setImage(rgb, autoLevels=False, levels=(0, 255))
        for i, item in enumerate(self.channel_items):
            item.setImage(planes[i], autoLevels=False, levels=(0, 255))
            self.channel_labels[i].setText(CHANNELS[i] if channels_on[i] else f"{CHANNELS[i]} (off)")
            self.channel_labels[i].setPos(0, 0)
        if rgb.shape[:2] != self._shape:
            self._shape = rgb.shape[:2]
            self.reset_view()
            for vb in self.strip_views:
                vb.autoRange(padding=0)

    def clear(self):
        """No image (a failed load): nothing of the previous image stays on screen."""
        self.image_item.clear()
        self.overlay_item.clear()
        self.overlay_item.setVisible(False)
        for item in self.channel_items:
            item.clear()
        self._shape = None

    def show_overlay(self, rgba, opacity):
        """An RGBA overlay drawn at any integer multiple of the image size."""
        self.overlay_item.setImage(rgba, autoLevels=False, levels=(0, 255))
        if self._shape is not None:
            self.overlay_item.setRect(QtCore.QRectF(0, 0, self._shape[1], self._shape[0]))
        self.overlay_item.setOpacity(opacity)
        self.overlay_item.setVisible(True)

    def set_scale_bar(self, geometry):
        """geometry: (x0, y0, length, thickness, label) in image pixels, or None to hide the bar."""
        visible = geometry is not None
        self.scale_rect.setVisible(visible)
        self.scale_text.setVisible(visible)
        if visible:
            x0, y0, length, thickness, text = geometry
            self.scale_rect.setRect(QtCore.QRectF(x0, y0, length, thickness))
            self.scale_text.setText(text)
            self.scale_text.setPos(x0 + length / 2, y0)

    def set_overlay_opacity(self, opacity):
        self.overlay_item.setOpacity(opacity)

    def hide_overlay(self):
        self.overlay_item.setVisible(False)

    def reset_view(self):
        """Fit the whole image (View > Reset view); afterwards nothing rescales it on its own."""
        self.view.autoRange(padding=0)
        self.view.disableAutoRange()

    def set_caption(self, text):
        self.caption.set_html(text)

    # ------------------------------------------------------------------ cursor
    def eventFilter(self, watched, event):  # noqa: N802 - Qt's name
        """The cursor left the image panel: the readout clears (no values of a pixel it left)."""
        if event.type() == QtCore.QEvent.Leave and watched is self.graphics.viewport():
            self.hovered.emit(-1, -1)
        return False

    def _mouse_moved(self, scene_pos):
        if self._shape is None or not self.view.sceneBoundingRect().contains(scene_pos):
            self.hovered.emit(-1, -1)
            return
        p = self.image_item.mapFromScene(scene_pos)
        x, y = int(np.floor(p.x())), int(np.floor(p.y()))
        inside = 0 <= x < self._shape[1] and 0 <= y < self._shape[0]
        self.hovered.emit(x if inside else -1, y if inside else -1)
