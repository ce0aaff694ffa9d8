"""The main window: it lays out the panels, owns the two workers and moves data between them.

Left: the Id list with its filters, and the channel controls. Centre: the composite with the CAM
overlay and the channel strip. Right: the CAM controls, the 28 probabilities, the predicted and
true classes. What is drawn lives in render.py (numpy), what is shown is decided by the
ViewerState, and everything slow runs on a worker (worker.py).
"""

from dataclasses import dataclass, field

from PyQt5 import QtCore, QtWidgets

from runtime.classes import CHANNELS, CLASS_NAMES
from viewer.cam_request import MARKS, MAX_STRIP, METHOD_LABELS, default_cam_class, review_classes
from viewer.cam_strip import CamStrip, thumbnail
from viewer.error_summary import ErrorSummary, class_errors, restrict
from viewer.chart import ProbabilityChart
from viewer import scale_bar
from viewer.contrast import FixedLevels, histograms, percentile_levels
from viewer.histogram import HistogramPanel
from viewer import menus
from viewer.file_actions import FileActions
from viewer.controls import AUTO_IDLE, CamControls, ChannelControls, auto_text
from viewer.id_list import IdPanel
from viewer.image_panel import ImagePanel
from viewer.placement import first_place
from viewer.render import channel_planes, composite_gamma, display_scale, export_image, overlay_rgba
from viewer.session import Session
from viewer.shortcuts import SHORTCUTS, shortcuts_html
from viewer.state import ViewerState
from viewer.worker import Worker, one_line

PREDICT_CHUNK = 16   # Ids per background prediction request: an image load waits for one chunk at most
# What the window says speaks of its menus (File > Open model), not of command-line options:
# the user in front of it may never have seen the command line.
NO_MAPS = "maps per class: need the PyTorch checkpoints (File > Open model: a training run)"
DIMMED = 0.6         # overlay opacity factor for the map of a class the model does not predict
                     # (0.35 left the heat map nearly invisible on a bright field)


@dataclass
class Current:
    """The Id on screen and what has arrived for it so far."""
    sample_id: str = ""
    sample: object = None     # uint8 (H, W, 4)
    probs: object = None      # (28,) for the chosen model (ensemble or one fold)
    cam: object = None        # 0..1 at the sample's resolution
    cam_key: tuple = ()       # (Id, class, method, model) the map answers
    overlay: object = None    # RGBA drawn from cam at display scale
    error: str = ""
    maps: dict = field(default_factory=dict)   # (class, method, model) -> map, this sample's maps so far
    strip_key: tuple = ()     # (Id, method, model, classes) the strip's request answers


class MainWindow(FileActions, QtWidgets.QMainWindow):
    def __init__(self, session=None, state=None, sync=False):
        super().__init__()
        self.setWindowTitle("HPA viewer")
        self.resize(1400, 860)
        self.session = session or Session()
        self.state = state or ViewerState()
        self.images = Worker("images", sync=sync)   # decode + predictions (no torch)
        self.cams = Worker("cams", sync=sync)       # CAMs (PyTorch)
        for worker in (self.images, self.cams):
            worker.result.connect(self._on_result)
            worker.error.connect(self._on_error)
        self.current = Current()
        self._fixed = FixedLevels()  # the "fixed for the set" contrast, per opened set
        self.rendered = None         # the composite as shown, uint8 (H, W, 3)
        self.predictions = {}        # Id -> ensemble probabilities, filled in behind the first image
        self.unreadable = {}         # Id -> reason
        self.failures = []           # (kind, Id, one-line message) of every worker request that failed
        self._cursor = (-1, -1)      # the image pixel under the cursor, for the readout
        self._picked_for = None      # the Id a class was picked for in the strip or the chart
        self._build_panels()
        self._build_menus()
        self.setAcceptDrops(True)  # a folder dropped on the window opens (viewer.file_actions)
        self.image_panel.context_menu.connect(lambda pos: menus.show_image_menu(self, pos))
        self.show_provenance()
        self._unbind = [self.state.subscribe(self._on_state), self.channel_controls.unbind, self.cam_controls.unbind,
                        self.histogram_panel.unbind]
        self._populate()

    # ------------------------------------------------------------------ layout
    def _build_panels(self):
        self.cam_controls = CamControls(self.state, self.session.models.folds)
        self._show_auto_class(None)
        toolbar = self.addToolBar("Class activation map")
        toolbar.setMovable(False)
        toolbar.addWidget(self.cam_controls)
        splitter = QtWidgets.QSplitter()
        splitter.setChildrenCollapsible(False)
        self.setCentralWidget(splitter)
        splitter.addWidget(self._left_column())
        self.image_panel = ImagePanel()
        self.image_panel.hovered.connect(self._show_pixel)
        self.cam_strip = CamStrip()
        self.cam_strip.class_clicked.connect(self.pick_class)
        centre = QtWidgets.QWidget()
        column = QtWidgets.QVBoxLayout(centre)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(self.image_panel, 1)
        column.addWidget(self.cam_strip)
        splitter.addWidget(centre)
        self._build_error_dock()
        splitter.addWidget(self._right_column())
        # The image takes what the window gains or loses; the side columns keep a readable width.
        for index, stretch in enumerate((0, 1, 0)):
            splitter.setStretchFactor(index, stretch)
        splitter.setSizes([262, 778, 360])  # the left column fits the channel rows with their colour
        self.pixel_label = QtWidgets.QLabel("")
        self.statusBar().addPermanentWidget(self.pixel_label)

    def _left_column(self):
        left = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(left)
        layout.setContentsMargins(4, 4, 0, 4)
        self.id_panel = IdPanel()
        self.id_panel.current_changed.connect(lambda sample_id: self.state.update(sample_id=sample_id))
        self.id_panel.filters_changed.connect(self._apply_filters)
        self.channel_controls = ChannelControls(self.state)
        self.channel_controls.auto.clicked.connect(self.auto_contrast)
        self.channel_controls.pixel_edited.connect(self.set_pixel_size)
        layout.addWidget(self.id_panel, 1)
        layout.addWidget(self.channel_controls)
        self.histogram_panel = HistogramPanel(self.state)
        layout.addWidget(self.histogram_panel)
        # no fixed minimum: the splitter keeps the column at least as wide as its channel rows
        # need (with a fixed 200 px they were squeezed and "yellow" was cut at 1400 px)
        return left

    def _right_column(self):
        right = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(right)
        layout.setContentsMargins(0, 4, 4, 4)
        # where the model's training data is known to be synthetic, it says so above the bars
        self.provenance_label = QtWidgets.QLabel("")
        self.provenance_label.setWordWrap(True)
        self.provenance_label.setStyleSheet("background: #fff0c0; color: #804000; border: 1px solid #d09000; "
                                            "padding: 3px; font-weight: bold")
        layout.addWidget(self.provenance_label)
        self.chart = ProbabilityChart()
        self.chart.class_clicked.connect(self.pick_class)
        self.pred_label = QtWidgets.QLabel("")
        self.pred_label.setWordWrap(True)
        self.pred_label.setTextFormat(QtCore.Qt.RichText)
        layout.addWidget(self.chart, 1)
        layout.addWidget(self.pred_label)
        # *Decision*: the column scrolls rather than squeezes. Its banner, 28 rows and the lines
        # under them need about 700 px where a dozen classes are predicted, more than a 1000x650,
        # 1280x720 or 1366x768 window has; squeezed, the rows' labels ran into each other and the
        # text under the chart was drawn over its last rows. A minimum window size would not hold
        # (a window manager may ignore it, and it would refuse the small screens), and shrinking
        # the 8-point labels makes them unreadable. Where the window has the height (1400x900 and
        # up), the column fills it as before and no scroll bar shows.
        scroll = QtWidgets.QScrollArea()
        scroll.setWidget(right)
        scroll.setWidgetResizable(True)   # the column takes the viewport's size, and its heightForWidth
        scroll.setFrameShape(QtWidgets.QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(300)
        return scroll

    def _build_error_dock(self):
        """Errors per class (View > Errors per class), hidden until asked for, and opened
        floating (toggle_error_summary): it never takes the image's room unless the user docks it."""
        self.error_summary = ErrorSummary()
        self.error_summary.filter_changed.connect(self._error_filter_changed)
        self.error_dock = QtWidgets.QDockWidget("Errors per class", self)
        self.error_dock.setObjectName("errors-per-class")
        self.error_dock.setWidget(self.error_summary)
        self.addDockWidget(QtCore.Qt.RightDockWidgetArea, self.error_dock)
        self.error_dock.hide()
        self._dock_placed = False
        self.error_dock.visibilityChanged.connect(lambda visible: visible and self._update_error_summary())

    def _build_menus(self):
        menus = {}
        for entry in SHORTCUTS:
            menu = menus.get(entry.menu) or menus.setdefault(entry.menu, self.menuBar().addMenu(entry.menu))
            action = menu.addAction(entry.text)
            action.setShortcuts(list(entry.keys))
            # Application-wide: next/previous and the rest work whichever widget has the focus.
            action.setShortcutContext(QtCore.Qt.ApplicationShortcut)
            action.triggered.connect(getattr(self, entry.handler) if not entry.args else
                                     (lambda _checked=False, e=entry: getattr(self, e.handler)(*e.args)))

    # ------------------------------------------------------------------ data
    @property
    def models(self):
        return self.session.models

    def _populate(self, keep=None):
        self.predictions, self.unreadable = {}, {}
        self.id_panel.set_ids(self.session.listed_ids())
        for sample_id, reason in self.session.dataset.problems.items():
            self._mark_unreadable(sample_id, reason)
        self.id_panel.set_predictions_enabled(self.models.can_predict, "needs a model: File > Open model")
        self._apply_filters()
        listed = self.session.listed_ids()
        self.statusBar().showMessage(f"{len(self.session.ids)} images" + (
            "" if self.models.can_predict else "; no model: File > Open model for predictions"))
        if listed:
            self.id_panel.select(keep if keep in listed else listed[0])
        else:
            self._show_empty()
        self._predict_next_chunk()

    def _show_empty(self):
        """A folder without a single sample: say so where the image would be, and why."""
        message = self.session.dataset.empty_reason()
        self.rendered = None
        self.image_panel.clear()
        self.histogram_panel.set_histograms(None)
        self.image_panel.hide_overlay()
        self.image_panel.set_caption(f"<span style='color:#c08000'>{_escape(message)}</span>")
        self.chart.show_waiting([])
        self.pred_label.setText(_escape(message))
        self.statusBar().showMessage(message)

    def open_folder(self, data=None, dataset=None):
        """File > Open: another folder with the same models (nothing is reloaded)."""
        self.session = Session(models=self.models, dataset=dataset) if dataset is not None else \
            self.session.with_folder(data)
        self.error_summary.clear_filter()  # its Ids belong to the folder that was open
        self.current = Current()
        self._fixed = FixedLevels()  # the "fixed for the set" contrast, per opened set
        self.state.update(sample_id="")
        self._populate()

    def _mark_unreadable(self, sample_id, reason):
        self.unreadable[sample_id] = reason
        self.id_panel.mark_unreadable(sample_id, reason)

    def _apply_filters(self):
        predicted = {i: self.models.predicted(p) for i, p in self.predictions.items()}
        pending = len(self.session.ids) - len(self.predictions) - len(set(self.unreadable) - set(self.session.dataset.problems))
        self.id_panel.apply(self.session.labels, predicted, self.unreadable, max(pending, 0) if self.models.can_predict else 0)
        if self.error_summary.filter is not None:
            self.error_summary.set_errors(class_errors(self.session.labels, predicted), len(self.session.ids))
            restrict(self.id_panel, self.error_summary.filter_ids(), self.error_summary.filter_label(short=True))
        # A filter that hides the shown Id (e.g. "errors only") jumps to and loads the first Id it keeps.
        shown = self.id_panel.visible_ids()
        if shown and self.id_panel.current_id() not in shown:
            self.id_panel.select(shown[0])

    def visible_ids(self):
        return self.id_panel.visible_ids()

    def _update_error_summary(self):
        predicted = {i: self.models.predicted(p) for i, p in self.predictions.items()}
        self.error_summary.set_errors(class_errors(self.session.labels, predicted), len(self.session.ids))

    def _error_filter_changed(self, chosen):
        """A row of the error summary (or Clear): filter the list, load the first Id kept, and
        let the default map follow the filtered class."""
        self._apply_filters()
        shown = self.id_panel.visible_ids()
        if chosen is not None and shown:
            self.id_panel.select(shown[0])
        if chosen is not None and self.state.cam_class != -1:
            self.state.update(cam_class=-1)  # the default map shows the filtered class's error
        elif self.current.sample is not None:
            self._request_cam()

    def toggle_error_summary(self):
        """View > Errors per class: the dock opens as a window of its own beside the main window,
        or over the image's lower part where the screen has no room beside it (never over the
        prediction bars: viewer.placement), and nothing in the main window moves. Afterwards it
        opens where the user left it.

        *Decision*: floating, not docked. Docked, it took its width from the centre panel (the
        splitter gives the image all that the window gains or loses) and the image shrank and
        moved under the user's eyes; growing the window instead fails on a maximised window or
        a small screen. Dragged into the window it docks, and then the image makes room, by
        the user's choice."""
        dock = self.error_dock
        if dock.isVisible():
            dock.hide()
            return
        if not self._dock_placed:  # the first time; afterwards where the user left it
            self._dock_placed = True
            dock.setFloating(True)
            screen = (self.screen() or QtWidgets.QApplication.primaryScreen()).availableGeometry()
            panel = self.image_panel
            area = QtCore.QRect(panel.mapToGlobal(QtCore.QPoint(0, 0)), panel.size())
            width = max(dock.sizeHint().width(), self.error_summary.minimumWidth() + 20)
            dock.setGeometry(first_place(screen, self.frameGeometry(), self.geometry(), area, width))
        dock.show()
        dock.raise_()

    def pick_class(self, cls):
        """A class clicked in the strip or the chart: its map becomes the main one, for this
        sample (the next sample starts again from the default class; the class menu's choice
        is the one that stays while browsing)."""
        self._picked_for = self.state.sample_id
        self.state.update(cam_class=int(cls))

    def go(self, step):
        """Next (1), previous (-1) or further among the listed Ids. (Not ``move``: that is QWidget's.)"""
        self.id_panel.move(step)

    # ------------------------------------------------------------------ requests
    def _load(self, sample_id):
        self.current = Current(sample_id)
        self.cams.cancel("cam", "strip")  # maps of the previous sample: skipped if queued, dropped if done
        self.cam_strip.clear("" if self.models.can_explain else NO_MAPS)
        self.chart.set_selected(None)
        if self._picked_for is not None and self._picked_for != sample_id:
            self._picked_for = None
            self.state.update(cam_class=-1)
        self._refresh_readout()
        self.image_panel.hide_overlay()
        if sample_id in self.session.dataset.problems:
            self._show_failure(sample_id, self.session.dataset.problems[sample_id])
            return
        session = self.session
        self.statusBar().showMessage(f"loading {sample_id}...")
        self.images.request("load", lambda: (session, sample_id, session.shown_sample(sample_id)))

    def _request_probs(self):
        cur, fold = self.current, self.state.cam_fold
        if cur.sample is None or not self.models.can_predict:
            self._show_chart()
            if cur.sample is not None:
                self._request_cam()  # replaces the caption of what was shown before (e.g. "no image folder")
            return
        if fold == "mean" and cur.sample_id in self.predictions:
            cur.probs = self.predictions[cur.sample_id]
            self._show_chart()
            self._request_cam()
            return
        self._show_chart()
        models, sample, sample_id = self.models, cur.sample, cur.sample_id
        self.images.request("probs", lambda: (sample_id, fold, models.predict([sample], fold)[0], models))

    def _review(self):
        """(probabilities, predicted classes or None, true classes or None) of the sample on screen."""
        cur = self.current
        predicted = self.models.predicted(cur.probs, self.state.cam_fold) if cur.probs is not None else None
        return cur.probs, predicted, self.session.labels.get(cur.sample_id)

    def _cam_class(self):
        if self.state.cam_class >= 0:
            return self.state.cam_class
        focus = self.error_summary.filter[0] if self.error_summary.filter is not None else None
        return default_cam_class(*self._review(), focus=focus)

    def _show_auto_class(self, cls):
        """The class menu's first entry says which class "auto" stands for on this sample."""
        text = AUTO_IDLE
        tip = "auto (missed, else false positive, else top class)"
        if cls is not None:
            mark = dict(review_classes(*self._review(), limit=None)).get(cls)
            text = auto_text(cls, mark)
            tip = f"{tip}: here {cls} {CLASS_NAMES[cls]}" + (f", {MARKS[mark]}" if mark in MARKS else "")
        self.cam_controls.cls.setItemText(0, text)
        self.cam_controls.cls.setItemData(0, tip, QtCore.Qt.ToolTipRole)

    def _request_cam(self):
        cur = self.current
        if cur.sample is None or not self.state.show_cam:
            self._render_overlay()
            self._request_strip()
            return
        if not self.models.can_explain:
            self.image_panel.set_caption("CAM: needs the PyTorch checkpoints: File > Open model, a training run "
                                         "(or a deployment folder whose checkpoints exist)")
            return
        cls = self._cam_class()
        self._show_auto_class(cls if self.state.cam_class < 0 else None)
        if cls is None:
            return  # the default class is known once the probabilities arrive
        self.chart.set_selected(cls)
        self.cam_strip.set_selected(cls)
        key = (cur.sample_id, cls, self.state.cam_method, self.state.cam_fold)
        if key == cur.cam_key:
            self._render_overlay()  # this map is on screen already, or on its way
            self._request_strip()
            return
        cur.cam, cur.cam_key, cur.overlay = None, key, None
        self._refresh_readout()
        self.image_panel.hide_overlay()
        known = cur.maps.get(key[1:])
        if known is not None:  # computed for the strip already: no request
            self._got_cam((key, known))
            self._request_strip()
            return
        waiting = "computing the map..." if self.models.cam_ready else (
            f"loading the CAM models (PyTorch and {len(self.models.checkpoints())} checkpoint(s); "
            "a few seconds, once)...")
        self.image_panel.set_caption(f"{METHOD_LABELS[key[2]]} of {cls} {_escape(CLASS_NAMES[cls])}: {waiting}")
        if not self.models.cam_ready:
            self.statusBar().showMessage(waiting)
        models, sample = self.models, cur.sample
        self.cams.request("cam", lambda: (key, models.cam(sample, cls, key[2], key[3])))
        self._request_strip()

    def _request_strip(self):
        """The strip's maps: every predicted and true class of the sample (viewer.cam_request.
        review_classes), in one request on the CAM worker after the main map, the forward passes
        shared by its classes; maps computed already (the main one) are not asked again."""
        cur, method, fold = self.current, self.state.cam_method, self.state.cam_fold
        if cur.sample is None or cur.probs is None or not self.models.can_explain:
            return
        every = review_classes(*self._review(), limit=None)
        entries = every[:MAX_STRIP]
        key = (cur.sample_id, method, fold, tuple(entries))
        if key == cur.strip_key:
            return
        cur.strip_key = key
        placeholder = thumbnail(self.rendered, None) if self.rendered is not None else None
        self.cam_strip.set_classes(entries, cur.probs, placeholder, more=len(every) - len(entries))
        self.cam_strip.set_selected(cur.cam_key[1] if cur.cam_key else None)
        self._draw_strip_maps()
        main = cur.cam_key[1:] if cur.cam_key else None
        todo = [c for c, _ in entries if (c, method, fold) not in cur.maps and (c, method, fold) != main]
        if todo:
            models, sample = self.models, cur.sample
            self.cams.request("strip", lambda: (key, todo, models.cams(sample, todo, method, fold)))

    def strip_ready(self):
        """True when every tile of the strip shows its map (for --screenshot and the real-window
        check: a grab then shows the strip filled)."""
        return all(done for _, _, done in self.cam_strip.entries())

    def _draw_strip_maps(self):
        """Thumbnails of the maps known for the strip's classes (cheap: shrunk to 76 px first)."""
        cur = self.current
        if not cur.strip_key or self.rendered is None:
            return
        _, method, fold, entries = cur.strip_key
        for cls, _mark in entries:
            cam = cur.maps.get((cls, method, fold))
            if cam is not None:
                self.cam_strip.set_map(cls, thumbnail(self.rendered, cam))

    def _predict_next_chunk(self):
        if not self.models.can_predict:
            return
        done = set(self.predictions) | set(self.unreadable)
        todo = [i for i in self.session.ids if i not in done][:PREDICT_CHUNK]
        if not todo:
            if self.session.ids:
                self.statusBar().showMessage(f"predictions: {len(self.predictions)} of {len(self.session.ids)} "
                                             f"images ({len(self.unreadable)} unreadable)", 8000)
            return
        session = self.session
        self.images.request("predict", lambda: (session, *_predict_chunk(session, todo)))

    # ------------------------------------------------------------------ results
    def _on_result(self, rid, kind, value):
        worker = self.cams if kind in ("cam", "strip") else self.images
        if not worker.is_latest(rid, kind):
            return  # a newer request of this kind is on its way
        getattr(self, f"_got_{kind}")(value)

    def _got_load(self, value):
        session, sample_id, sample = value
        if session is not self.session or sample_id != self.state.sample_id:
            return
        self.current.sample = sample
        self.histogram_panel.set_histograms(histograms(sample))
        self.apply_file_pixel_size(sample_id)
        if not self._apply_contrast():
            self._render()
        self.statusBar().showMessage(f"{sample_id}: {sample.shape[1]}x{sample.shape[0]}", 4000)
        self._request_probs()
        if self.state.cam_class >= 0:
            self._request_cam()

    def _got_probs(self, value):
        sample_id, fold, probs, models = value
        if sample_id != self.current.sample_id or fold != self.state.cam_fold or models is not self.models:
            return
        self.current.probs = probs
        if fold == "mean" and sample_id not in self.predictions:
            self.predictions[sample_id] = probs
        self._show_chart()
        self._request_cam()

    def _got_cam(self, value):
        key, cam = value
        if key != self.current.cam_key:
            return
        self.current.cam = cam
        self.current.maps[key[1:]] = cam
        self._draw_strip_maps()
        self._render_overlay()
        if self.statusBar().currentMessage().startswith("loading the CAM models"):
            self.statusBar().showMessage("CAM models loaded", 4000)

    def _got_strip(self, value):
        key, classes, maps = value
        cur = self.current
        if key != cur.strip_key:
            return
        _, method, fold, _ = key
        for cls, cam in zip(classes, maps):
            cur.maps[(cls, method, fold)] = cam
        self._draw_strip_maps()

    def _got_predict(self, value):
        session, probs, errors = value
        if session is not self.session:
            return
        self.predictions.update(probs)
        for sample_id, reason in errors.items():
            self._mark_unreadable(sample_id, reason)
        total = len(self.session.ids)
        if not self.statusBar().currentMessage().startswith("loading"):
            self.statusBar().showMessage(f"predicting all images: {len(self.predictions)} of {total}...")
        if self.id_panel.needs_predictions() or errors or self.error_summary.filter is not None:
            self._apply_filters()
        if self.error_dock.isVisible():
            self._update_error_summary()
        self._predict_next_chunk()

    def _on_error(self, rid, kind, message):
        worker = self.cams if kind in ("cam", "strip") else self.images
        if not worker.is_latest(rid, kind):
            return
        self.failures.append((kind, self.state.sample_id, message))
        if kind == "open":
            self.statusBar().showMessage(f"not opened: {message}")
            self.show_error("Open", message)
        elif kind == "load":
            self._show_failure(self.state.sample_id, message)
        elif kind == "cam":
            self.current.cam_key = ()  # asking again retries
            self.image_panel.set_caption(f"<span style='color:#d04040'>CAM failed: {_escape(message)}</span>")
            self.statusBar().showMessage(f"CAM: {message}")
        elif kind == "strip":
            self.current.strip_key = ()  # asking again retries
            self.cam_strip.clear(f"maps failed: {message}")
            self.statusBar().showMessage(f"maps: {message}")
        elif kind == "predict":
            self.statusBar().showMessage(f"predictions stopped: {message}")
            self.id_panel.note.setText(f"predictions stopped: {message}")
            self.id_panel.note.setVisible(True)
        elif kind == "probs":
            self.current.error = message
            self.chart.show_waiting(self.session.labels.get(self.current.sample_id))
            self.pred_label.setText(f"<b>{_escape(self.current.sample_id)}</b><br>"
                                    f"<span style='color:#d04040'>prediction failed: {_escape(message)}</span>")
            self.statusBar().showMessage(f"prediction failed: {message}")
        else:
            self.statusBar().showMessage(f"{kind}: {message}")

    def _show_failure(self, sample_id, message):
        """A failed load: nothing of the previous image stays on screen."""
        self.current = Current(sample_id, error=message)
        self.rendered = None
        self.image_panel.clear()
        self.histogram_panel.set_histograms(None)
        self.image_panel.set_caption(f"<span style='color:#d04040'>{_escape(sample_id)}: cannot be shown</span>")
        self.chart.show_waiting(self.session.labels.get(sample_id))
        self.pred_label.setText(f"<b>{_escape(sample_id)}</b><br><span style='color:#d04040'>{_escape(message)}</span>")
        self._mark_unreadable(sample_id, message)
        self.statusBar().showMessage(f"{sample_id}: {message}")

    # ------------------------------------------------------------------ state
    def _on_state(self, changed):
        if "sample_id" in changed and self.state.sample_id:
            self._load(self.state.sample_id)
            return
        if "contrast_mode" in changed:
            self._fixed = FixedLevels()
            if self._apply_contrast():
                return
        if changed & {"channels", "levels", "gammas", "colormaps"}:
            self._render()
        elif "pixel_size" in changed:
            self._render_scale_bar()
        if "cam_fold" in changed:
            self.current.probs = None
            self._request_probs()  # the model choice drives the bars and the map
        elif changed & {"cam_class", "cam_method"} or ("show_cam" in changed and self.state.show_cam):
            self._request_cam()
        if "cam_style" in changed:
            self.current.overlay = None
            self._render_overlay()
        if changed & {"cam_opacity", "show_cam"}:
            self._render_overlay()

    # ------------------------------------------------------------------ drawing
    def _render(self):
        sample = self.current.sample
        if sample is None:
            return
        s = self.state
        self.rendered = composite_gamma(sample, s.channels, s.levels, s.gammas, s.colormaps)
        self.image_panel.show_image(self.rendered, channel_planes(sample, s.levels, s.gammas), s.channels)
        self._render_scale_bar()
        self._draw_strip_maps()  # the thumbnails show the composite as the main view does
        self._refresh_readout()

    def _render_scale_bar(self):
        g = None if self.rendered is None else scale_bar.geometry(self.rendered.shape, self.state.pixel_size)
        self.image_panel.set_scale_bar(None if g is None else (*g[:4], scale_bar.label(g[4])))

    def overlay_opacity(self):
        """The slider's opacity, dimmed for a class the chosen model does not predict."""
        cls = self.current.cam_key[1] if self.current.cam_key else None
        predicted = self.models.predicted(self.current.probs, self.state.cam_fold) if self.current.probs is not None else None
        dim = DIMMED if predicted is not None and cls not in predicted else 1.0
        return self.state.cam_opacity * dim

    def _render_overlay(self):
        self._refresh_readout()
        cur = self.current
        if not self.state.show_cam:
            self.image_panel.hide_overlay()
            if cur.sample is not None:
                self.image_panel.set_caption("CAM overlay hidden (Ctrl+H shows it)")
            return
        if cur.cam is None or cur.sample is None:
            self.image_panel.hide_overlay()
            return
        if cur.overlay is None:
            cur.overlay = overlay_rgba(cur.cam, self.state.cam_style, display_scale(cur.cam.shape))
        self.image_panel.show_overlay(cur.overlay, self.overlay_opacity())
        self.image_panel.set_caption(self._cam_caption())

    def _cam_caption(self):
        sample_id, cls, method, fold = self.current.cam_key
        views = self.models.views
        source = (f"mean of {self.models.folds} folds" if fold == "mean" else fold.replace("fold", "fold ")) + (
            f", {views} views" if views > 1 else "")
        mark = dict(review_classes(*self._review(), limit=None)).get(cls)
        mark = f" <span style='color:#d04040'>[{MARKS[mark].split(':')[0]}]</span>" if mark in ("FN", "FP") else ""
        head = f"<b>{METHOD_LABELS[method]}</b> of <b>{cls} {_escape(CLASS_NAMES[cls])}</b>{mark} ({source})"
        if self.current.cam.max() <= 0:
            return head + ": <span style='color:#c08000'>no positive evidence for this class anywhere</span>"
        probs = self.current.probs
        if probs is None:
            return head
        thresholds, _ = self.models.thresholds(fold)
        if thresholds is None:
            return head + f": p {probs[cls]:.2f} (no threshold for this model)"
        if probs[cls] > thresholds[cls]:
            return head + f": p {probs[cls]:.2f} &gt; threshold {thresholds[cls]:.2f}, predicted"
        return head + (f": <span style='color:#c08000'>not predicted (p {probs[cls]:.2f} &le; threshold "
                       f"{thresholds[cls]:.2f}); overlay dimmed</span>")

    def _show_chart(self):
        cur = self.current
        truth = self.session.labels.get(cur.sample_id, [])
        truth_text = ", ".join(f"{c} {_escape(CLASS_NAMES[c])}" for c in truth) if truth else "unknown"
        if cur.probs is None:
            self.chart.show_waiting(truth)
            waiting = "predicting..." if self.models.can_predict and cur.sample is not None else "no model loaded"
            self.pred_label.setText(f"<b>{_escape(cur.sample_id)}</b><br>{waiting}<br>ground truth: {truth_text}")
            return
        thresholds, which = self.models.thresholds(self.state.cam_fold)
        predicted = self.models.predicted(cur.probs, self.state.cam_fold)
        self.chart.show(cur.probs, thresholds, truth, predicted)
        names = (", ".join(f"{c} {_escape(CLASS_NAMES[c])} ({cur.probs[c]:.2f})" for c in predicted)
                 if predicted is not None else "— (no thresholds for this model)")
        self.pred_label.setText(f"<b>{_escape(cur.sample_id)}</b><br>predicted: {names}<br>ground truth: {truth_text}"
                                f"<br><span style='color:gray'>thresholds: {which}</span>")

    def _show_pixel(self, x, y):
        self._cursor = (x, y)
        sample = self.current.sample
        if sample is None or x < 0 or y >= sample.shape[0] or x >= sample.shape[1]:
            self.pixel_label.setText("")
            return
        values = "  ".join(f"{name[0].upper()} {sample[y, x, c]}" for c, name in enumerate(CHANNELS))
        cam, key = self.current.cam, self.current.cam_key
        extra = ""
        if self.state.show_cam and key:
            extra = f"  CAM {key[1]}: " + (f"{cam[y, x]:.2f}" if cam is not None else "…")
        self.pixel_label.setText(f"x {x}, y {y}:  {values}{extra}")

    def _refresh_readout(self):
        """The readout follows every change of sample, class, method or model, not only the mouse."""
        self._show_pixel(*self._cursor)

    # ------------------------------------------------------------------ actions (see shortcuts.py)
    def toggle_channel(self, index):
        self.state.toggle_channel(index)

    def toggle_overlay(self):
        self.state.update(show_cam=not self.state.show_cam)

    def reset_view(self):
        self.image_panel.reset_view()

    def auto_contrast(self):
        if self.current.sample is None:
            return
        self.state.update(contrast_mode="per image")
        self._apply_contrast()

    def _apply_contrast(self):
        """Set the levels the contrast mode gives for the current sample (viewer.contrast);
        True when that changed them (and so rendered)."""
        sample = self.current.sample
        if sample is None or self.state.contrast_mode == "manual":
            return False
        if self.state.contrast_mode == "fixed":
            levels = self._fixed.add(self.state.sample_id, sample)
        else:
            levels = percentile_levels(sample)
        return bool(self.state.update(levels=levels))

    def export_view(self, path):
        """Save the window's panels as they are on screen (PNG)."""
        if not self.centralWidget().grab().save(str(path), "PNG"):
            raise OSError(f"{path}: could not write the PNG (is the folder writable?)")
        return path

    def export_image(self, path):
        """The composite at the image's own resolution with the overlay as shown, and the map alone."""
        if self.rendered is None:
            raise ValueError("no image on screen to export")
        cur = self.current
        shown = cur.cam is not None and self.state.show_cam
        return export_image(path, self.rendered, cur.cam if shown else None, self.state.cam_style, self.overlay_opacity(),
                            self.state.pixel_size)

    def _export_view_dialog(self):
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export view", "view.png", "PNG (*.png)")
        if path:
            self._guarded("Export view", lambda: self.statusBar().showMessage(f"saved {self.export_view(path)}"))

    def _export_image_dialog(self):
        name = f"{self.current.sample_id or 'image'}.png"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export image", name, "PNG (*.png)")
        if path:
            self._guarded("Export image", lambda: self.statusBar().showMessage(
                "saved " + ", ".join(map(str, self.export_image(path)))))

    def _guarded(self, title, fn):
        """Run a user action; a failure is a dialog with one line, never a terminal traceback."""
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - whatever failed, the user gets told, the viewer stays up
            self.show_error(title, one_line(err))

    def show_error(self, title, message):
        QtWidgets.QMessageBox.critical(self, title, message)

    def _shortcuts_dialog(self):
        QtWidgets.QMessageBox.information(self, "Shortcuts", shortcuts_html())

    def closeEvent(self, event):
        unbind, self._unbind = self._unbind, []  # a second close finds nothing left to undo
        for undo in unbind:
            undo()
        stopped = True
        for worker in (self.images, self.cams) if unbind else ():
            worker.result.disconnect(self._on_result)  # what still arrives is for no window
            worker.error.disconnect(self._on_error)
            stopped = worker.stop() and stopped  # bounded (viewer.worker.STOP_WAIT_MS)
        if unbind and stopped:  # a worker still busy may be using the models: they go with the process
            self.session.close()
        super().closeEvent(event)


def _predict_chunk(session, ids):
    """({Id: probabilities}, {Id: reason}) for a few Ids: one unreadable Id is one error entry,
    the others are still predicted."""
    samples, errors = {}, {}
    for sample_id in ids:
        try:
            samples[sample_id] = session.sample(sample_id)
        except Exception as err:  # noqa: BLE001 - a decode failure belongs to that one Id
            errors[sample_id] = one_line(err)
    probs = {}
    if samples:
        out = session.models.predict(list(samples.values()))
        probs = dict(zip(samples, out))
    return probs, errors


def _escape(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
