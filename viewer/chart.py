"""The 28 probabilities as horizontal bars, one labelled row per class.

*Decision*: horizontal bars, so every class name is written out in full on
the left axis and all 28 rows fit the panel's height at 1000x650 and up (the window's right
column scrolls to the lines under the chart where the window is shorter); a vertical chart
shows numbers, and a long title pushes the last classes off screen. The legend is a line of
text under the chart, not a plot title, so it never widens the chart."""

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

from runtime.classes import CLASS_NAMES, NUM_CLASSES

BAR, PREDICTED, NO_DATA = "#5b9bd5", "#70ad47", "#808080"
SELECTED = (255, 255, 255, 60)   # the band behind the row whose map is shown
ROW_PX = 14          # the least height a row needs for its 8-point label (its line is 13 px)
AXIS_PX = 40         # the plot's height beside its rows: the 0..1 axis under them and the margins
TRUTH_X = 1.06       # where the ground-truth stars sit, right of the bars


class _RowsPlot(pg.PlotWidget):
    """The chart's plot: it neither zooms nor pans, so the wheel goes on to the window's
    right column, which scrolls where the window is short (viewer.window)."""

    def wheelEvent(self, event):
        event.ignore()


class ProbabilityChart(QtWidgets.QWidget):
    """``class_clicked(c)``: a click on class c's row (its bar, its label or the space between)."""

    class_clicked = QtCore.pyqtSignal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plot = _RowsPlot()
        layout.addWidget(self.plot, 1)
        self.legend = QtWidgets.QLabel(
            f"bar: probability (<span style='color:{PREDICTED}'>green</span>: predicted) · "
            "<span style='color:#ff6060'>|</span> threshold · <span style='color:#ffd700'>★</span> ground truth")
        self.legend.setWordWrap(True)
        layout.addWidget(self.legend)
        self._setup_axes()
        self.bars = pg.BarGraphItem(x0=np.zeros(NUM_CLASSES), y=np.arange(NUM_CLASSES), height=0.7,
                                    width=np.zeros(NUM_CLASSES), brush=BAR, pen=None)
        self.threshold_marks = pg.ScatterPlotItem(symbol="|", size=ROW_PX, pen=pg.mkPen("#ff6060", width=2), brush=None)
        self.truth_marks = pg.ScatterPlotItem(symbol="star", size=11, brush="#ffd700", pen=None)
        # the row of the class whose map is shown: a pale band behind its bar
        self.selection = pg.BarGraphItem(x0=[-0.02], y=[0], height=1.0, width=[TRUTH_X + 0.06], brush=SELECTED,
                                         pen=None)
        self.selection.setZValue(-10)
        self.selection.setVisible(False)
        for item in (self.selection, self.bars, self.threshold_marks, self.truth_marks):
            self.plot.addItem(item)
        # The least height is the plot's own (28 rows of ROW_PX and the axis under them); the
        # legend's wrapped lines add to it through the layout, so the legend never covers the rows.
        self.plot.setMinimumHeight(NUM_CLASSES * ROW_PX + AXIS_PX)
        self.plot.setCursor(QtCore.Qt.PointingHandCursor)
        self.plot.setToolTip("click a class's row to show its map")
        self.plot.scene().sigMouseClicked.connect(self._clicked)

    def row_at(self, scene_pos):
        """The class whose row is at a scene position (bar, label or gap), or None."""
        item = self.plot.getPlotItem()
        if not item.sceneBoundingRect().contains(scene_pos):
            return None
        y = item.getViewBox().mapSceneToView(scene_pos).y()
        row = int(np.floor(y + 0.5))
        return row if 0 <= row < NUM_CLASSES else None

    def row_center(self, cls):
        """Class ``cls``'s bar centre in the plot widget's coordinates (for the real-window check)."""
        view = self.plot.getPlotItem().getViewBox()
        scene = view.mapViewToScene(QtCore.QPointF(0.25, cls))
        return self.plot.mapFromScene(scene)

    def _clicked(self, event):
        if event.button() != QtCore.Qt.LeftButton:
            return
        row = self.row_at(event.scenePos())
        if row is not None:
            self.class_clicked.emit(row)

    def set_selected(self, cls):
        """Mark the row of the class whose map is on screen (None: no mark)."""
        self.selection.setVisible(cls is not None)
        if cls is not None:
            self.selection.setOpts(y=[cls])

    def _setup_axes(self):
        item = self.plot.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        view = item.getViewBox()
        view.invertY(True)
        view.setMouseEnabled(False, False)
        item.setXRange(0, TRUTH_X + 0.04, padding=0)
        item.setYRange(-0.6, NUM_CLASSES - 0.4, padding=0)
        font = QtGui.QFont()
        font.setPointSize(8)
        left = item.getAxis("left")
        left.setTicks([[(c, f"{c} {name}") for c, name in enumerate(CLASS_NAMES)], []])
        left.setStyle(tickFont=font, tickTextOffset=4)
        # A fixed width from the longest name: every label fits from the first paint on.
        metrics = QtGui.QFontMetrics(font)
        left.setWidth(max(metrics.horizontalAdvance(f"{c} {n}") for c, n in enumerate(CLASS_NAMES)) + 16)
        bottom = item.getAxis("bottom")
        bottom.setTicks([[(v, f"{v:g}") for v in (0, 0.25, 0.5, 0.75, 1)], []])
        bottom.setStyle(tickFont=font)
        item.showGrid(x=True, y=False, alpha=0.2)

    def show(self, probs, thresholds, truth, predicted):
        """Bars for ``probs``; thresholds (or None: not marked), true and predicted classes."""
        predicted = set(predicted or ())
        brushes = [PREDICTED if c in predicted else BAR for c in range(NUM_CLASSES)]
        self.bars.setOpts(width=np.asarray(probs, float), brushes=brushes)
        if thresholds is None:
            self.threshold_marks.setData(x=[], y=[])
        else:
            self.threshold_marks.setData(x=np.asarray(thresholds, float), y=np.arange(NUM_CLASSES))
        self._truth(truth)

    def show_waiting(self, truth, text=""):
        """No probabilities (yet, or at all): empty grey bars, the ground truth still starred."""
        self.bars.setOpts(width=np.zeros(NUM_CLASSES), brushes=[NO_DATA] * NUM_CLASSES)
        self.threshold_marks.setData(x=[], y=[])
        self._truth(truth)

    def _truth(self, truth):
        truth = list(truth or ())
        self.truth_marks.setData(x=np.full(len(truth), TRUTH_X), y=np.asarray(truth, float))

    def tick_labels(self):
        """The class labels the left axis draws, with their rectangles (for tests and the
        real-window check): [(text, QRectF)]."""
        axis = self.plot.getPlotItem().getAxis("left")
        painter = QtGui.QPainter()
        image = QtGui.QImage(max(1, int(axis.width())), max(1, int(axis.height())), QtGui.QImage.Format_ARGB32)
        painter.begin(image)
        painter.setFont(axis.style["tickFont"])
        try:
            specs = axis.generateDrawSpecs(painter)
        finally:
            painter.end()
        texts = specs[2] if specs else []
        return [(text, QtCore.QRectF(rect)) for rect, _flags, text in texts]
