"""The main window: Id list with filters, RGBY composite with a CAM overlay, channel strip,
contrast controls, the 28 probabilities against their thresholds."""

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

from runtime.classes import CHANNELS, CLASS_NAMES, NUM_CLASSES
from runtime.composite import auto_levels, composite
from viewer.session import Session
from viewer.state import CAM_METHODS, ViewerState
from viewer.worker import Worker

CHANNEL_COLOURS = ("#ff4040", "#40ff40", "#4080ff", "#ffff40")


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, session=None, state=None, sync=False):
        super().__init__()
        self.setWindowTitle("HPA viewer")
        self.resize(1400, 860)
        self.session = session or Session()
        self.state = state or ViewerState()
        self.worker = Worker(sync=sync)
        self.worker.result.connect(self._on_result)
        self.worker.error.connect(self._on_error)
        self._latest = {}
        self.sample = None        # uint8 (H, W, 4) of the current Id
        self.probs = None
        self.cam = None
        self.rendered = None      # the composite as shown, uint8 (H, W, 3)
        self.all_predictions = {}
        self._build()
        self._unsubscribe = self.state.subscribe(self._on_state)
        self._populate()

    # ------------------------------------------------------------------ layout
    def _build(self):
        splitter = QtWidgets.QSplitter()
        self.setCentralWidget(splitter)

        left = QtWidgets.QWidget()
        lv = QtWidgets.QVBoxLayout(left)
        self.search = QtWidgets.QLineEdit(placeholderText="search Ids")
        self.gt_filter = QtWidgets.QComboBox()
        self.pred_filter = QtWidgets.QComboBox()
        for combo, label in ((self.gt_filter, "ground truth"), (self.pred_filter, "predicted")):
            combo.addItem(f"any {label}", -1)
            for c, name in enumerate(CLASS_NAMES):
                combo.addItem(f"{c} {name}", c)
        self.errors_only = QtWidgets.QCheckBox("errors only (prediction differs from ground truth)")
        self.id_list = QtWidgets.QListWidget()
        for w in (self.search, self.gt_filter, self.pred_filter, self.errors_only, self.id_list):
            lv.addWidget(w)
        self.search.textChanged.connect(self._apply_filters)
        self.gt_filter.currentIndexChanged.connect(self._apply_filters)
        self.pred_filter.currentIndexChanged.connect(self._apply_filters)
        self.errors_only.toggled.connect(self._apply_filters)
        self.id_list.currentTextChanged.connect(lambda text: text and self.state.update(sample_id=text))
        splitter.addWidget(left)

        self.graphics = pg.GraphicsLayoutWidget()
        self.view = self.graphics.addViewBox(row=0, col=0, colspan=4, lockAspect=True, invertY=True)
        self.image_item = pg.ImageItem()
        self.cam_item = pg.ImageItem()
        self.cam_item.setZValue(10)
        self.view.addItem(self.image_item)
        self.view.addItem(self.cam_item)
        cmap = pg.colormap.get("inferno")
        self.cam_item.setLookupTable(cmap.getLookupTable(nPts=256))
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=cmap, interactive=False, label="CAM")
        self.colorbar.setImageItem(self.cam_item)
        self.graphics.addItem(self.colorbar, row=0, col=4)
        self.channel_items = []
        for i, name in enumerate(CHANNELS):
            vb = self.graphics.addViewBox(row=1, col=i, lockAspect=True, invertY=True)
            item = pg.ImageItem()
            vb.addItem(item)
            vb.setMouseEnabled(False, False)
            self.channel_items.append(item)
            label = pg.TextItem(name, color=CHANNEL_COLOURS[i])
            vb.addItem(label)
        self.graphics.ci.layout.setRowStretchFactor(0, 4)
        splitter.addWidget(self.graphics)

        right = QtWidgets.QWidget()
        rv = QtWidgets.QVBoxLayout(right)
        channels_box = QtWidgets.QGroupBox("Channels (Ctrl+1..4)")
        grid = QtWidgets.QGridLayout(channels_box)
        self.channel_checks, self.level_low, self.level_high = [], [], []
        for i, name in enumerate(CHANNELS):
            check = QtWidgets.QCheckBox(name)
            check.setChecked(True)
            check.setStyleSheet(f"color: {CHANNEL_COLOURS[i]}")
            check.toggled.connect(lambda on, i=i: self.state.channels[i] != on and self.state.toggle_channel(i))
            low, high = QtWidgets.QSpinBox(), QtWidgets.QSpinBox()
            for box, value in ((low, 0), (high, 255)):
                box.setRange(0, 255)
                box.setValue(value)
                box.valueChanged.connect(lambda _v, i=i: self.state.set_level(
                    i, self.level_low[i].value(), max(self.level_high[i].value(), self.level_low[i].value() + 1)))
            grid.addWidget(check, i, 0)
            grid.addWidget(low, i, 1)
            grid.addWidget(high, i, 2)
            self.channel_checks.append(check)
            self.level_low.append(low)
            self.level_high.append(high)
        auto = QtWidgets.QPushButton("Auto contrast")
        auto.clicked.connect(self.auto_contrast)
        grid.addWidget(auto, 4, 0, 1, 3)
        rv.addWidget(channels_box)

        cam_box = QtWidgets.QGroupBox("Class activation map")
        form = QtWidgets.QFormLayout(cam_box)
        self.cam_class = QtWidgets.QComboBox()
        self.cam_class.addItem("top predicted class", -1)
        for c, name in enumerate(CLASS_NAMES):
            self.cam_class.addItem(f"{c} {name}", c)
        self.cam_method = QtWidgets.QComboBox()
        self.cam_method.addItems(CAM_METHODS)
        self.cam_fold = QtWidgets.QComboBox()
        self.cam_fold.addItem("mean over folds", "mean")
        for k in range(self.session.folds):
            self.cam_fold.addItem(f"fold {k}", f"fold{k}")
        self.opacity = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(int(self.state.cam_opacity * 100))
        self.show_cam = QtWidgets.QCheckBox("show")
        self.show_cam.setChecked(self.state.show_cam)
        self.cam_class.currentIndexChanged.connect(lambda _i: self.state.update(cam_class=self.cam_class.currentData()))
        self.cam_method.currentTextChanged.connect(lambda m: self.state.update(cam_method=m))
        self.cam_fold.currentIndexChanged.connect(lambda _i: self.state.update(cam_fold=self.cam_fold.currentData()))
        self.opacity.valueChanged.connect(lambda v: self.state.update(cam_opacity=v / 100))
        self.show_cam.toggled.connect(lambda on: self.state.update(show_cam=on))
        for label, w in (("class", self.cam_class), ("method", self.cam_method), ("model (bars + CAM)", self.cam_fold),
                         ("opacity", self.opacity), ("overlay", self.show_cam)):
            form.addRow(label, w)
        rv.addWidget(cam_box)

        self.plot = pg.PlotWidget(title="probability per class (bars), threshold (line), ground truth (star)")
        self.plot.setYRange(0, 1)
        self.plot.getAxis("bottom").setTicks([[(c, str(c)) for c in range(NUM_CLASSES)]])
        self.bars = pg.BarGraphItem(x=np.arange(NUM_CLASSES), height=np.zeros(NUM_CLASSES), width=0.7, brush="#5b9bd5")
        self.threshold_marks = pg.ScatterPlotItem(symbol="_", size=14, pen=pg.mkPen("#ff6060", width=2))
        self.truth_marks = pg.ScatterPlotItem(symbol="star", size=12, brush="#ffd700")
        for item in (self.bars, self.threshold_marks, self.truth_marks):
            self.plot.addItem(item)
        rv.addWidget(self.plot, 1)
        self.pred_label = QtWidgets.QLabel("")
        self.pred_label.setWordWrap(True)
        rv.addWidget(self.pred_label)
        splitter.addWidget(right)
        splitter.setSizes([260, 760, 380])

        menu = self.menuBar().addMenu("&File")
        menu.addAction("&Open folder...", self._open_dialog, QtGui.QKeySequence.Open)
        menu.addAction("&Export view...", self._export_dialog, "Ctrl+E")
        menu.addAction("&Quit", self.close, QtGui.QKeySequence.Quit)
        for i in range(4):
            QtWidgets.QShortcut(QtGui.QKeySequence(f"Ctrl+{i + 1}"), self, activated=lambda i=i: self.state.toggle_channel(i))
        for key, step in ((QtCore.Qt.Key_PageDown, 10), (QtCore.Qt.Key_PageUp, -10)):
            QtWidgets.QShortcut(QtGui.QKeySequence(key), self, activated=lambda s=step: self.move(s))
        self.statusBar().showMessage("ready")

    # ------------------------------------------------------------------ data
    def _populate(self):
        self.id_list.clear()
        self.id_list.addItems(self.session.ids)
        if self.session.backend is not None or self.session.checkpoints:
            ids = list(self.session.ids)
            self._request("predict_all", lambda: {i: self.session.predict(i) for i in ids})
        if self.session.ids:
            self.id_list.setCurrentRow(0)
        self.statusBar().showMessage(f"{len(self.session.ids)} samples" + (
            "" if self.session.preprocess else "; no model: open with --model or --run for predictions"))

    def open_folder(self, data, model=None, run=None):
        self.session.close()
        self.session = Session(data, model, run)
        self.all_predictions = {}
        self._populate()

    def visible_ids(self):
        return [self.id_list.item(i).text() for i in range(self.id_list.count()) if not self.id_list.item(i).isHidden()]

    def _apply_filters(self):
        text = self.search.text().strip().lower()
        gt, pred, errors = self.gt_filter.currentData(), self.pred_filter.currentData(), self.errors_only.isChecked()
        for i in range(self.id_list.count()):
            item = self.id_list.item(i)
            sample_id = item.text()
            truth = self.session.labels.get(sample_id)
            probs = self.all_predictions.get(sample_id)
            predicted = self.session.predicted(probs) if probs is not None else None
            hide = bool(text) and text not in sample_id.lower()
            hide |= gt >= 0 and (truth is None or gt not in truth)
            hide |= pred >= 0 and (predicted is None or pred not in predicted)
            hide |= errors and (truth is None or predicted is None or sorted(truth) == sorted(predicted))
            item.setHidden(hide)

    def move(self, step):
        rows = [i for i in range(self.id_list.count()) if not self.id_list.item(i).isHidden()]
        if not rows:
            return
        current = self.id_list.currentRow()
        pos = rows.index(current) if current in rows else 0
        self.id_list.setCurrentRow(rows[max(0, min(len(rows) - 1, pos + step))])

    def keyPressEvent(self, event):
        if event.key() in (QtCore.Qt.Key_Down, QtCore.Qt.Key_Up):
            self.move(1 if event.key() == QtCore.Qt.Key_Down else -1)
        else:
            super().keyPressEvent(event)

    # ------------------------------------------------------------------ worker traffic
    def _request(self, kind, fn):
        self.worker.request(kind, fn, on_id=lambda rid: self._latest.__setitem__(kind, rid))

    def _on_result(self, rid, kind, value):
        if self._latest.get(kind) != rid:
            return  # a newer request of this kind is on its way
        if kind == "load":
            sample_id, self.sample, self.probs = value
            self.cam = None
            self._render()
            self._show_predictions(sample_id)
            self._request_cam()
        elif kind == "cam":
            self.cam = value
            self._render_cam()
        elif kind == "predict_all":
            self.all_predictions = value
            self._apply_filters()

    def _on_error(self, rid, kind, message):
        if self._latest.get(kind) != rid:
            return
        if kind == "load":
            self.sample, self.probs, self.cam = None, None, None
            self.image_item.clear()
            self.cam_item.clear()
        self.statusBar().showMessage(f"{kind}: {message}")

    def _on_state(self, changed):
        if "sample_id" in changed and self.state.sample_id:
            sample_id, session = self.state.sample_id, self.session
            has_model = session.backend is not None or bool(session.checkpoints)
            self.statusBar().showMessage(f"loading {sample_id}...")
            fold = self.state.cam_fold
            self._request("load", lambda: (sample_id, session.sample(sample_id),
                                           session.predict(sample_id, fold) if has_model else None))
        if changed & {"channels", "levels"}:
            for i, check in enumerate(self.channel_checks):
                check.blockSignals(True)
                check.setChecked(self.state.channels[i])
                check.blockSignals(False)
            self._render()
        if "cam_fold" in changed and self.state.sample_id:
            # the model choice drives the bars too: the ensemble, or one fold's checkpoint
            sample_id, fold, session = self.state.sample_id, self.state.cam_fold, self.session
            self._request("load", lambda: (sample_id, session.sample(sample_id), session.predict(sample_id, fold)))
        elif changed & {"cam_class", "cam_method"}:
            self._request_cam()
        if changed & {"cam_opacity", "show_cam"}:
            self._render_cam()

    def _request_cam(self):
        if self.sample is None or not self.session.checkpoints or self.probs is None:
            return
        cls = self.state.cam_class if self.state.cam_class >= 0 else int(np.argmax(self.probs))
        sample_id, method, fold, session = self.state.sample_id, self.state.cam_method, self.state.cam_fold, self.session
        self._request("cam", lambda: session.cam(sample_id, cls, method, fold))

    # ------------------------------------------------------------------ drawing
    def _render(self):
        if self.sample is None:
            return
        self.rendered = composite(self.sample, self.state.channels, self.state.levels)
        self.image_item.setImage(self.rendered, autoLevels=False, levels=(0, 255))
        for i, item in enumerate(self.channel_items):
            low, high = self.state.levels[i]
            item.setImage(self.sample[..., i], autoLevels=False, levels=(low, high))
        self.view.autoRange(padding=0)

    def _render_cam(self):
        if self.cam is None or not self.state.show_cam:
            self.cam_item.setVisible(False)
            return
        self.cam_item.setImage(self.cam, autoLevels=False, levels=(0, 1))
        self.cam_item.setOpacity(self.state.cam_opacity)
        self.cam_item.setVisible(True)

    def _show_predictions(self, sample_id):
        truth = self.session.labels.get(sample_id, [])
        if self.probs is None:
            self.bars.setOpts(height=np.zeros(NUM_CLASSES))
            self.pred_label.setText(f"{sample_id}: no model loaded")
            return
        predicted = self.session.predicted(self.probs)
        brushes = ["#70ad47" if c in predicted else "#5b9bd5" for c in range(NUM_CLASSES)]
        self.bars.setOpts(height=self.probs, brushes=brushes)
        self.threshold_marks.setData(x=np.arange(NUM_CLASSES), y=self.session.thresholds)
        self.truth_marks.setData(x=np.array(truth, float), y=np.full(len(truth), 0.97))
        names = ", ".join(f"{c} {CLASS_NAMES[c]} ({self.probs[c]:.2f})" for c in predicted)
        truth_text = ", ".join(f"{c} {CLASS_NAMES[c]}" for c in truth) if truth else "unknown"
        self.pred_label.setText(f"<b>{sample_id}</b><br>predicted: {names}<br>ground truth: {truth_text}")
        self.statusBar().showMessage(f"{sample_id}: {len(predicted)} predicted classes")

    def auto_contrast(self):
        if self.sample is None:
            return
        levels = auto_levels(self.sample)
        for i, (low, high) in enumerate(levels):
            for box, v in ((self.level_low[i], low), (self.level_high[i], high)):
                box.blockSignals(True)
                box.setValue(int(round(v)))
                box.blockSignals(False)
        self.state.update(levels=tuple((float(lo), float(max(hi, lo + 1))) for lo, hi in levels))

    # ------------------------------------------------------------------ files
    def export_view(self, path):
        """Save what is on screen (composite, overlay, chart) as a PNG."""
        path = Path(path)
        if not self.centralWidget().grab().save(str(path), "PNG"):
            raise OSError(f"{path}: could not write PNG")
        return path

    def _open_dialog(self):
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open dataset folder")
        if folder:
            try:
                spec = self.session.spec.path.parent if self.session.spec else None
                self.open_folder(folder, spec)
            except Exception as err:
                self.statusBar().showMessage(f"open: {err}")

    def _export_dialog(self):
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export view", "view.png", "PNG (*.png)")
        if path:
            self.statusBar().showMessage(f"saved {self.export_view(path)}")

    def closeEvent(self, event):
        self._unsubscribe()
        self.worker.stop()
        self.session.close()
        super().closeEvent(event)
