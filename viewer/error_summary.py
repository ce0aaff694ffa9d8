"""Errors per class over the set: for each class, the Ids where it was missed (false negatives:
true, not predicted) and where it was predicted wrongly (false positives), from the predictions
the window already has. A row (or its FN / FP cell) filters the Id list to those Ids.

:func:`class_errors` is plain Python (tests count against it); :class:`ErrorSummary` is the table
in its dock; :func:`restrict` applies the chosen filter on top of the Id list's own filters.
"""

from dataclasses import dataclass, field

from PyQt5 import QtCore, QtWidgets

from runtime.classes import CLASS_NAMES, NUM_CLASSES

KINDS = {"fn": "false negatives (missed)", "fp": "false positives", "both": "errors (FN or FP)"}
SHORT = {"fn": "FN", "fp": "FP", "both": "FN or FP"}


@dataclass
class ClassErrors:
    """Per class: the Ids of its false negatives and false positives, and its true count, over
    ``counted`` Ids (those with both a ground truth and a prediction)."""
    fn: list = field(default_factory=lambda: [[] for _ in range(NUM_CLASSES)])
    fp: list = field(default_factory=lambda: [[] for _ in range(NUM_CLASSES)])
    support: list = field(default_factory=lambda: [0] * NUM_CLASSES)
    counted: int = 0

    def ids(self, cls, kind):
        if kind not in KINDS:
            raise ValueError(f"unknown error kind {kind!r}; valid: {', '.join(KINDS)}")
        if kind == "both":
            return sorted(set(self.fn[cls]) | set(self.fp[cls]))
        return list(getattr(self, kind)[cls])


def class_errors(labels, predicted):
    """``labels``: {Id: true classes}; ``predicted``: {Id: predicted classes, or None when the
    model has no thresholds}. Ids missing from either are not counted."""
    out = ClassErrors()
    for sample_id in sorted(predicted):
        truth, pred = labels.get(sample_id), predicted[sample_id]
        if truth is None or pred is None:
            continue
        truth, pred = set(truth), set(pred)
        out.counted += 1
        for c in truth:
            out.support[c] += 1
        for c in truth - pred:
            out.fn[c].append(sample_id)
        for c in pred - truth:
            out.fp[c].append(sample_id)
    return out


def restrict(id_panel, keep, label):
    """Hide the Id list's rows outside ``keep`` (after its own filters ran) and say so in its
    count line: "N of M · label"."""
    shown = 0
    for row in range(id_panel.list.count()):
        item = id_panel.list.item(row)
        if not item.isHidden() and item.data(QtCore.Qt.UserRole) not in keep:
            item.setHidden(True)
        shown += not item.isHidden()
    id_panel.count.setText(f"{shown} of {id_panel.list.count()} · {label}")
    id_panel.count.setToolTip(f"{shown} of {id_panel.list.count()} · {label}")


class _Class(QtWidgets.QTableWidgetItem):
    """A class's name, sorted by its index (not as text: "10" after "9")."""

    def __init__(self, cls):
        super().__init__(f"{cls} {CLASS_NAMES[cls]}")
        self.setData(QtCore.Qt.UserRole, cls)
        self.setToolTip(f"{cls} {CLASS_NAMES[cls]}")

    def __lt__(self, other):
        return self.data(QtCore.Qt.UserRole) < other.data(QtCore.Qt.UserRole)


class _Number(QtWidgets.QTableWidgetItem):
    def __init__(self, value):
        super().__init__()
        self.setData(QtCore.Qt.DisplayRole, int(value))
        self.setTextAlignment(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter)


class ErrorSummary(QtWidgets.QWidget):
    """The table (class, true, FN, FP), sortable by any column. ``filter_changed`` is emitted
    with the new filter, (class, kind) or None when cleared."""

    filter_changed = QtCore.pyqtSignal(object)
    COLUMNS = ("class", "true", "FN", "FP")

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.header = QtWidgets.QLabel("")
        self.header.setWordWrap(True)
        layout.addWidget(self.header)
        top = QtWidgets.QHBoxLayout()
        self.active = QtWidgets.QLabel("no filter: click a row (FN or FP cell) to list those Ids")
        self.active.setWordWrap(True)
        self.clear_button = QtWidgets.QPushButton("Clear filter")
        self.clear_button.setToolTip("show every Id again (the list's own filters stay)")
        self.clear_button.clicked.connect(self.clear_filter)
        top.addWidget(self.active, 1)
        top.addWidget(self.clear_button)
        layout.addLayout(top)
        self.table = QtWidgets.QTableWidget(NUM_CLASSES, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectItems)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.Stretch)
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QtWidgets.QHeaderView.ResizeToContents)
        self.table.sortByColumn(0, QtCore.Qt.AscendingOrder)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 4)
        self.table.setToolTip("click FN or FP: list that class's false negatives or false positives; "
                              "the class name: both")
        self.table.cellClicked.connect(self._clicked)
        layout.addWidget(self.table, 1)
        self.setMinimumWidth(300)  # the class names and the three counts side by side
        self.errors = ClassErrors()
        self.filter = None      # (class, kind) or None
        self._update_active()

    def set_errors(self, errors, total):
        """Show the counts of ``errors`` (a ClassErrors) over a set of ``total`` Ids."""
        self.errors = errors
        self.header.setText(f"errors per class over {errors.counted} of {total} Id(s) "
                            "(with ground truth and a prediction)")
        self.table.setSortingEnabled(False)
        for row, cls in enumerate(range(NUM_CLASSES)):
            self.table.setItem(row, 0, _Class(cls))
            for col, value in ((1, errors.support[cls]), (2, len(errors.fn[cls])), (3, len(errors.fp[cls]))):
                self.table.setItem(row, col, _Number(value))
        self.table.setSortingEnabled(True)  # sorts again by the column the user chose (class at first)
        self._update_active()

    def row_of(self, cls):
        """The table row showing class ``cls`` (rows move when the table is sorted)."""
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and item.data(QtCore.Qt.UserRole) == cls:
                return row
        return None

    def counts(self, cls):
        """(true, FN, FP) as the table shows them for class ``cls``."""
        row = self.row_of(cls)
        return tuple(self.table.item(row, col).data(QtCore.Qt.DisplayRole) for col in (1, 2, 3))

    def _clicked(self, row, col):
        cls = self.table.item(row, 0).data(QtCore.Qt.UserRole)
        self.set_filter(cls, {2: "fn", 3: "fp"}.get(col, "both"))

    def set_filter(self, cls, kind):
        self.errors.ids(cls, kind)  # checks the kind
        self.filter = (int(cls), kind)
        self._update_active()
        self.filter_changed.emit(self.filter)

    def clear_filter(self):
        if self.filter is not None:
            self.filter = None
            self._update_active()
            self.filter_changed.emit(None)

    def filter_ids(self):
        """The Ids the active filter keeps (None: no filter)."""
        return None if self.filter is None else set(self.errors.ids(*self.filter))

    def filter_label(self, short=False):
        cls, kind = self.filter
        return f"{(SHORT if short else KINDS)[kind]} of {cls} {CLASS_NAMES[cls]}"

    def _update_active(self):
        self.clear_button.setEnabled(self.filter is not None)
        if self.filter is None:
            self.active.setText("no filter: click a row (FN or FP cell) to list those Ids")
        else:
            n = len(self.filter_ids())
            self.active.setText(f"<b>listing {n}</b> {self.filter_label()}")
