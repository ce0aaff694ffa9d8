"""A histogram behind each channel's contrast limits: four small plots (2 x 2, fixed height, so
nothing moves when an image loads) of log(1 + count) over 0..255, with the two limits as lines
that can be dragged. Dragging a line sets that limit and switches the contrast to "manual"
(viewer.contrast), as typing one does.

The counts are a 256-bin bincount of each uint8 plane (viewer.contrast.histograms, about a
millisecond for a 512 x 512 field), cheap enough to compute where the sample arrives.
"""

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtWidgets

from runtime.classes import CHANNELS
from viewer.image_panel import CHANNEL_COLOURS

PLOT_HEIGHT = 56


class HistogramPanel(QtWidgets.QWidget):
    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        grid = QtWidgets.QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        self.plots, self.curves, self.lines = [], [], []
        for i, name in enumerate(CHANNELS):
            plot = pg.PlotWidget(background="#101010")
            plot.setFixedHeight(PLOT_HEIGHT)
            plot.setMinimumWidth(60)
            plot.hideAxis("left")
            plot.hideAxis("bottom")
            plot.setMouseEnabled(False, False)
            plot.hideButtons()
            plot.setMenuEnabled(False)
            plot.setXRange(0, 256, padding=0)
            plot.setToolTip(f"{name}: histogram (log counts) and the contrast limits; drag a line to set it")
            curve = plot.plot(stepMode="center", fillLevel=0, brush=pg.mkBrush(CHANNEL_COLOURS[i]),
                              pen=pg.mkPen(CHANNEL_COLOURS[i]))
            pair = []
            for end in (0, 1):
                line = pg.InfiniteLine(state.levels[i][end], angle=90, movable=True, bounds=(0, 255),
                                       pen=pg.mkPen("w", width=2), hoverPen=pg.mkPen("#ffd040", width=3))
                line.sigPositionChangeFinished.connect(lambda _l, i=i: self._dragged(i))
                plot.addItem(line)
                pair.append(line)
            grid.addWidget(plot, i // 2, i % 2)
            self.plots.append(plot)
            self.curves.append(curve)
            self.lines.append(pair)
        self.unbind = state.subscribe(self._on_state)

    def set_histograms(self, hists):
        """(4, 256) counts, or None to clear."""
        for i, curve in enumerate(self.curves):
            if hists is None:
                curve.setData([], [])
                continue
            y = np.log1p(np.asarray(hists[i], np.float64))
            curve.setData(np.arange(257), y)
            self.plots[i].setYRange(0, max(float(y.max()), 1.0), padding=0.02)

    def _dragged(self, i):
        low, high = sorted(line.value() for line in self.lines[i])
        low, high = round(low), round(high)
        high = max(high, low + 1)
        self.state.update(contrast_mode="manual")
        self.state.set_level(i, low, high)
        self._on_state({"levels"})  # snap the lines to the whole numbers kept

    def _on_state(self, changed):
        if "levels" not in changed:
            return
        for i, pair in enumerate(self.lines):
            for line, value in zip(pair, self.state.levels[i]):
                line.blockSignals(True)
                line.setValue(value)
                line.blockSignals(False)
