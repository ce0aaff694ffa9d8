"""Controls bound both ways to the ViewerState: a widget change updates the state, a state change
(from a shortcut, a test, another widget) updates the widget. Each panel subscribes once and
``unbind()`` (called when the window closes) unsubscribes."""

from PyQt5 import QtCore, QtGui, QtWidgets

from runtime.classes import CHANNELS, CLASS_NAMES
from viewer.cam_request import CAM_METHODS, METHOD_LABELS
from viewer.colormaps import COLORMAPS
from viewer.contrast import CONTRAST_MODES
from viewer.image_panel import CONTROL_COLOURS
from viewer.render import OVERLAY_STYLES
from viewer.state import GAMMA_RANGE

PIXEL_TIP = "size of one pixel as shown, in µm, for the scale bar: type it and press Enter; 0: unknown, no bar"


def _quietly(widget, setter, value):
    """Set a widget's value without it echoing the change back into the state."""
    widget.blockSignals(True)
    try:
        setter(value)
    finally:
        widget.blockSignals(False)


def _swatch(rgb):
    pixmap = QtGui.QPixmap(14, 14)
    pixmap.fill(QtGui.QColor(*(int(255 * v) for v in rgb)))
    return QtGui.QIcon(pixmap)


class ChannelControls(QtWidgets.QGroupBox):
    """Per channel: shown (Ctrl+1..4), contrast low/high (0..255), gamma, colour; the contrast
    mode (per image / fixed / manual, viewer.contrast) and auto contrast."""

    pixel_edited = QtCore.pyqtSignal(float)

    def __init__(self, state, parent=None):
        super().__init__("Channels", parent)
        self.state = state
        grid = QtWidgets.QGridLayout(self)
        grid.setContentsMargins(6, 4, 6, 4)
        grid.setVerticalSpacing(2)
        grid.setHorizontalSpacing(3)
        for col, text in enumerate(("", "low", "high", "γ", "")):
            grid.addWidget(QtWidgets.QLabel(text), 0, col)
        self.checks, self.lows, self.highs, self.gammas, self.cmaps = [], [], [], [], []
        for i, name in enumerate(CHANNELS):
            self._add_row(grid, i, name)
        self.mode = QtWidgets.QComboBox()
        self.mode.addItems(CONTRAST_MODES)
        self.mode.setCurrentText(state.contrast_mode)
        self.mode.setToolTip("contrast: per image (recomputed for each field), fixed (from the first fields, "
                             "kept while browsing) or manual (your limits, kept)")
        self.mode.currentTextChanged.connect(lambda m: self.state.update(contrast_mode=m))
        self.auto = QtWidgets.QPushButton("Auto")
        self.auto.setToolTip("reset: per-image auto contrast, 0.5 / 99.8 percentiles (Ctrl+Shift+A)")
        grid.addWidget(QtWidgets.QLabel("mode"), len(CHANNELS) + 1, 0)
        # mode and Auto share one row across the value columns: Auto alone in the narrow colour
        # column widened it and squeezed the channel names ("yellow" was cut at 1400 px)
        mode_row = QtWidgets.QHBoxLayout()
        mode_row.setSpacing(3)
        mode_row.addWidget(self.mode, 1)
        self.auto.setFixedWidth(self.auto.fontMetrics().horizontalAdvance("Auto") + 22)  # not the style's 80 px minimum
        mode_row.addWidget(self.auto)
        grid.addLayout(mode_row, len(CHANNELS) + 1, 1, 1, 4)
        self.pixel = QtWidgets.QDoubleSpinBox()
        self.pixel.setRange(0, 1000)
        self.pixel.setDecimals(3)
        self.pixel.setSingleStep(0.05)
        self.pixel.setSpecialValueText("unknown")
        self.pixel.setSuffix(" µm")
        self.pixel.setValue(state.pixel_size)
        self.pixel.setButtonSymbols(QtWidgets.QAbstractSpinBox.NoButtons)
        # Applied on Enter or leaving the box, not per keystroke: typing "0.65" passed 0 ("unknown",
        # hand back to the files) on its first key, whose echo rewrote the text, and left 0.600.
        self.pixel.setKeyboardTracking(False)
        self.pixel.setToolTip(PIXEL_TIP)
        self.pixel.valueChanged.connect(lambda v: self.state.update(pixel_size=float(v)))
        self.pixel.valueChanged.connect(self.pixel_edited)  # typed by the user: overrides the files' calibration
        grid.addWidget(QtWidgets.QLabel("pixel"), len(CHANNELS) + 2, 0)
        grid.addWidget(self.pixel, len(CHANNELS) + 2, 1, 1, 3)
        self.unbind = state.subscribe(self._on_state)

    def _add_row(self, grid, i, name):
        check = QtWidgets.QCheckBox(name)
        check.setChecked(self.state.channels[i])
        font = check.font()
        font.setBold(True)  # set as a font, not in the style sheet, so that sizeHint() counts it
        check.setFont(font)
        check.setStyleSheet(f"color: {CONTROL_COLOURS[i]}")
        check.setToolTip(f"show {name} (Ctrl+{i + 1})")
        check.setMinimumWidth(check.sizeHint().width())  # the name is never cut ("yellow" at 1400 px)
        check.toggled.connect(lambda on, i=i: self.state.channels[i] != on and self.state.toggle_channel(i))
        low, high = QtWidgets.QSpinBox(), QtWidgets.QSpinBox()
        for box, value in ((low, self.state.levels[i][0]), (high, self.state.levels[i][1])):
            box.setRange(0, 255)
            box.setValue(int(value))
            box.valueChanged.connect(lambda _v, i=i: self._levels_from_boxes(i))
        gamma = QtWidgets.QDoubleSpinBox()
        gamma.setRange(*GAMMA_RANGE)
        gamma.setSingleStep(0.1)
        gamma.setDecimals(2)
        gamma.setValue(self.state.gammas[i])
        gamma.valueChanged.connect(lambda v, i=i: self.state.set_gamma(i, v))
        cmap = QtWidgets.QComboBox()
        for cname, rgb in COLORMAPS.items():
            cmap.addItem(_swatch(rgb), cname)
        cmap.setCurrentText(self.state.colormaps[i])
        # the closed box shows the colour's swatch only (the list shows the names): the panel is narrow
        cmap.setMinimumContentsLength(0)
        cmap.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
        cmap.view().setMinimumWidth(110)
        cmap.setToolTip(f"the colour {name} is drawn in (added to the others)")
        cmap.currentTextChanged.connect(lambda text, i=i: self.state.set_colormap(i, text))
        # No arrow buttons: the column fits a 240-px panel; the wheel, the arrow keys and typing still work.
        cmap.setMaximumWidth(36)
        for box, width in ((low, 34), (high, 34), (gamma, 40)):
            box.setMaximumWidth(width)  # just the digits: leaves the name column its width
            box.setButtonSymbols(QtWidgets.QAbstractSpinBox.NoButtons)
            # Applied on Enter or leaving the box, as the pixel box: per keystroke, typing a gamma
            # of "0.65" applied 0.6 at its third key, whose echo rewrote the text to "0.60" and
            # refused the "5"; a typed "200" rendered the image at 2 and 20 on the way.
            box.setKeyboardTracking(False)
            box.setToolTip("type a value and press Enter, or use the mouse wheel / Up and Down")
        for col, widget in enumerate((check, low, high, gamma, cmap)):
            grid.addWidget(widget, i + 1, col)
        self.checks.append(check)
        self.lows.append(low)
        self.highs.append(high)
        self.gammas.append(gamma)
        self.cmaps.append(cmap)

    def _levels_from_boxes(self, i):
        low = self.lows[i].value()
        high = max(self.highs[i].value(), low + 1)
        self.state.update(contrast_mode="manual")  # typed limits are kept while browsing
        self.state.set_level(i, low, high)

    def _on_state(self, changed):
        for i in range(len(CHANNELS)):
            if "channels" in changed:
                _quietly(self.checks[i], self.checks[i].setChecked, self.state.channels[i])
            if "levels" in changed:
                low, high = self.state.levels[i]
                _quietly(self.lows[i], self.lows[i].setValue, int(round(low)))
                _quietly(self.highs[i], self.highs[i].setValue, int(round(high)))
            if "gammas" in changed:
                _quietly(self.gammas[i], self.gammas[i].setValue, self.state.gammas[i])
            if "colormaps" in changed:
                _quietly(self.cmaps[i], self.cmaps[i].setCurrentText, self.state.colormaps[i])
        if "pixel_size" in changed:
            _quietly(self.pixel, self.pixel.setValue, self.state.pixel_size)
        if "contrast_mode" in changed:
            _quietly(self.mode, self.mode.setCurrentText, self.state.contrast_mode)


AUTO_IDLE = "auto (errors first)"   # the tooltip says which class "auto" picks


def auto_text(cls, mark):
    """The class menu's first entry once "auto" stands for class ``cls`` (``mark``: FN, FP or other)."""
    return "auto" + (f" {mark}" if mark in ("FN", "FP") else "") + f": {cls} {CLASS_NAMES[cls]}"


def class_texts():
    """Every text the class menu can show."""
    return [AUTO_IDLE] + [f"{c} {n}" for c, n in enumerate(CLASS_NAMES)] + \
        [auto_text(c, m) for c in range(len(CLASS_NAMES)) for m in ("FN", "FP")]


def _combo_width(combo, texts):
    """The width a combo box needs to show the longest of ``texts`` uncut (its frame and arrow
    as the style draws them)."""
    option = QtWidgets.QStyleOptionComboBox()
    combo.initStyleOption(option)
    metrics = combo.fontMetrics()
    text = QtCore.QSize(max(metrics.horizontalAdvance(t) for t in texts) + 4, metrics.height())
    return combo.style().sizeFromContents(QtWidgets.QStyle.CT_ComboBox, option, text, combo).width()


class CamControls(QtWidgets.QWidget):
    """Which map (class, method, model) and how it is drawn (style, opacity, shown): one row,
    in the window's toolbar, so the right column keeps its height for the 28 bars."""

    def __init__(self, state, folds, methods=CAM_METHODS, parent=None):
        super().__init__(parent)
        self.state = state
        self.cls = QtWidgets.QComboBox()
        self.cls.addItem(AUTO_IDLE, -1)
        for c, name in enumerate(CLASS_NAMES):
            self.cls.addItem(f"{c} {name}", c)
        # *Decision*: as wide as its longest text ("auto FN: 18 Microtubule organizing center"),
        # fixed: the toolbar has the room at 1000 px and up, and a box sized to 16 characters cut
        # the class name ("auto FN: 11 Intermediate" at 1400 px). Not sized to the current
        # text: the first entry changes with every sample and would move the controls after it.
        self.cls.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.cls.setMinimumContentsLength(1)
        self.cls.setMinimumWidth(_combo_width(self.cls, class_texts()))
        self.method = QtWidgets.QComboBox()
        for m in methods:
            self.method.addItem(METHOD_LABELS[m], m)
        self.fold = QtWidgets.QComboBox()
        self.fold.setToolTip("the model behind both the bars and the map: the fold ensemble or one fold")
        self.set_folds(folds)
        self.style = QtWidgets.QComboBox()
        self.style.addItems(OVERLAY_STYLES)
        self.opacity = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setFixedWidth(90)
        self.show_cam = QtWidgets.QCheckBox("show")
        self.show_cam.setToolTip("show the CAM overlay (Ctrl+H)")
        self._layout()
        self._on_state({"cam_class", "cam_method", "cam_fold", "cam_style", "cam_opacity", "show_cam"})
        self.cls.currentIndexChanged.connect(lambda _i: self.state.update(cam_class=self.cls.currentData()))
        self.method.currentIndexChanged.connect(lambda _i: self.state.update(cam_method=self.method.currentData()))
        self.fold.currentIndexChanged.connect(lambda _i: self.state.update(cam_fold=self.fold.currentData()))
        self.style.currentTextChanged.connect(lambda s: self.state.update(cam_style=s))
        self.opacity.valueChanged.connect(lambda v: self.state.update(cam_opacity=v / 100))
        self.show_cam.toggled.connect(lambda on: self.state.update(show_cam=on))
        self.unbind = state.subscribe(self._on_state)

    def _layout(self):
        row = QtWidgets.QHBoxLayout(self)
        row.setContentsMargins(4, 0, 4, 0)
        for label, widget in (("CAM", self.cls), ("", self.method), ("model", self.fold),
                              ("overlay", self.style), ("opacity", self.opacity)):
            if label:
                row.addWidget(QtWidgets.QLabel(label))
            row.addWidget(widget)
        row.addWidget(self.show_cam)
        row.addStretch(1)

    def set_folds(self, folds):
        self.fold.blockSignals(True)
        self.fold.clear()
        self.fold.addItem("mean over folds", "mean")
        for k in range(folds):
            self.fold.addItem(f"fold {k}", f"fold{k}")
        self.fold.blockSignals(False)

    def _on_state(self, changed):
        for key, combo in (("cam_class", self.cls), ("cam_method", self.method), ("cam_fold", self.fold)):
            if key in changed:
                index = combo.findData(getattr(self.state, key))
                if index >= 0:
                    _quietly(combo, combo.setCurrentIndex, index)
        if "cam_style" in changed:
            _quietly(self.style, self.style.setCurrentText, self.state.cam_style)
        if "cam_opacity" in changed:
            _quietly(self.opacity, self.opacity.setValue, int(round(self.state.cam_opacity * 100)))
        if "show_cam" in changed:
            _quietly(self.show_cam, self.show_cam.setChecked, self.state.show_cam)
