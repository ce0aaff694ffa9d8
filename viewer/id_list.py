"""The Id list with its search box and filters.

Filters by prediction need every Id predicted; until then they show the Ids predicted so far and
say they are waiting. An Id that cannot be read (a broken file, a missing channel) stays in the
list with a warning marker and its reason as tooltip: one entry, never an empty filter."""

from PyQt5 import QtCore, QtGui, QtWidgets

from runtime.classes import CLASS_NAMES

ID_ROLE = QtCore.Qt.UserRole


class ElidedIdDelegate(QtWidgets.QStyledItemDelegate):
    """Draws every row's Id elided in the middle to the width the list shows, the selected row
    included. (Left to QListView, rows were as wide as the longest Id: the list scrolled sideways,
    the other rows were elided to that width and then cut at the column's edge, and the selected
    row was cut without an ellipsis.)"""

    def initStyleOption(self, option, index):  # noqa: N802 - Qt's name
        super().initStyleOption(option, index)
        view = self.parent()
        margin = view.style().pixelMetric(QtWidgets.QStyle.PM_FocusFrameHMargin, None, view) + 1
        icon = option.decorationSize.width() + 2 * margin if option.features & option.HasDecoration else 0
        width = view.viewport().width() - 2 * margin - icon - 2
        option.text = option.fontMetrics.elidedText(option.text, QtCore.Qt.ElideMiddle, max(width, 10))
        option.textElideMode = QtCore.Qt.ElideNone  # elided here already, to the visible width

    def sizeHint(self, option, index):  # noqa: N802
        size = super().sizeHint(option, index)
        size.setWidth(min(size.width(), self.parent().viewport().width()))
        return size


class IdPanel(QtWidgets.QWidget):
    current_changed = QtCore.pyqtSignal(str)
    filters_changed = QtCore.pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.search = QtWidgets.QLineEdit(placeholderText="search Ids")
        self.gt_filter = QtWidgets.QComboBox()
        self.pred_filter = QtWidgets.QComboBox()
        for combo, label in ((self.gt_filter, "ground truth"), (self.pred_filter, "predicted")):
            combo.addItem(f"any {label}", -1)
            for c, name in enumerate(CLASS_NAMES):
                combo.addItem(f"{c} {name}", c)
        self.errors_only = QtWidgets.QCheckBox("errors only (≠ ground truth)")
        self.note = QtWidgets.QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #c08000")
        self.list = QtWidgets.QListWidget()
        self.list.setUniformItemSizes(True)
        # Full Ids: elided in the middle only when the column is too narrow, full Id as tooltip;
        # no sideways scrolling, rows re-laid out when the column is resized.
        self.list.setTextElideMode(QtCore.Qt.ElideMiddle)
        self.list.setItemDelegate(ElidedIdDelegate(self.list))
        self.list.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        self.list.setResizeMode(QtWidgets.QListView.Adjust)
        self.count = QtWidgets.QLabel("")
        for widget in (self.search, self.gt_filter, self.pred_filter, self.errors_only, self.note):
            layout.addWidget(widget)
        layout.addWidget(self.count)
        layout.addWidget(self.list, 1)
        self.search.textChanged.connect(self.filters_changed)
        self.gt_filter.currentIndexChanged.connect(self.filters_changed)
        self.pred_filter.currentIndexChanged.connect(self.filters_changed)
        self.errors_only.toggled.connect(self.filters_changed)
        self.list.currentItemChanged.connect(self._current)
        self._rows = {}
        self._warning = self.style().standardIcon(QtWidgets.QStyle.SP_MessageBoxWarning)

    def set_ids(self, ids):
        self.list.clear()
        self._rows = {}
        self.list.setUpdatesEnabled(False)
        for sample_id in ids:
            item = QtWidgets.QListWidgetItem(sample_id)
            item.setData(ID_ROLE, sample_id)
            item.setToolTip(sample_id)
            self.list.addItem(item)
            self._rows[sample_id] = self.list.count() - 1
        self.list.setUpdatesEnabled(True)
        self._update_count()

    def mark_unreadable(self, sample_id, reason):
        row = self._rows.get(sample_id)
        if row is None:
            return
        item = self.list.item(row)
        item.setIcon(self._warning)
        item.setForeground(QtGui.QBrush(QtGui.QColor("#d04040")))
        item.setToolTip(f"{sample_id}: {reason}")

    def set_predictions_enabled(self, enabled, why=""):
        for widget in (self.pred_filter, self.errors_only):
            widget.setEnabled(enabled)
            widget.setToolTip("" if enabled else why)

    def needs_predictions(self):
        return self.pred_filter.currentData() >= 0 or self.errors_only.isChecked()

    def apply(self, labels, predicted, unreadable, pending):
        """Hide rows that fail the filters. ``predicted``: {Id: predicted classes} so far;
        ``unreadable``: {Id: reason}; ``pending``: how many Ids still wait for a prediction."""
        text = self.search.text().strip().lower()
        gt, pred, errors = self.gt_filter.currentData(), self.pred_filter.currentData(), self.errors_only.isChecked()
        by_prediction = pred >= 0 or errors
        for row in range(self.list.count()):
            item = self.list.item(row)
            sample_id = item.data(ID_ROLE)
            truth = labels.get(sample_id)
            classes = predicted.get(sample_id)
            hide = bool(text) and text not in sample_id.lower()
            hide |= gt >= 0 and (truth is None or gt not in truth)
            hide |= pred >= 0 and (classes is None or pred not in classes)
            hide |= errors and (truth is None or classes is None or sorted(truth) == sorted(classes))
            item.setHidden(hide)
        notes = []
        if by_prediction and pending:
            notes.append(f"waiting for predictions: {pending} Id(s) not predicted yet, shown once they are")
        if by_prediction and unreadable:
            notes.append(f"{len(unreadable)} unreadable Id(s) (marked) cannot be predicted")
        self.note.setText("; ".join(notes))
        self.note.setVisible(bool(notes))
        self._update_count()

    def _update_count(self):
        total = self.list.count()
        shown = sum(not self.list.item(r).isHidden() for r in range(total))
        self.count.setText(f"{shown} of {total}")

    # ------------------------------------------------------------------ moving
    def visible_ids(self):
        return [self.list.item(r).data(ID_ROLE) for r in range(self.list.count()) if not self.list.item(r).isHidden()]

    def current_id(self):
        item = self.list.currentItem()
        return item.data(ID_ROLE) if item is not None else ""

    def select(self, sample_id):
        row = self._rows.get(sample_id)
        if row is not None:
            self.list.setCurrentRow(row)
            self.list.scrollToItem(self.list.item(row))

    def move(self, step):
        rows = [r for r in range(self.list.count()) if not self.list.item(r).isHidden()]
        if not rows:
            return
        current = self.list.currentRow()
        pos = rows.index(current) if current in rows else (-1 if step > 0 else len(rows))
        row = rows[max(0, min(len(rows) - 1, pos + step))]
        self.list.setCurrentRow(row)
        self.list.scrollToItem(self.list.item(row))

    def _current(self, item, _previous):
        if item is not None:
            self.current_changed.emit(item.data(ID_ROLE))
