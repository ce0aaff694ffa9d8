"""Reviewing a model's mistakes in the viewer (offscreen, synchronous workers): the default map of
an error, the strip of maps per predicted and true class, a click on a bar, the cursor readout
following every change, the errors per class and their filter. The same in a real X window:
tests/test_viewer_review_window.py."""

import numpy as np
import pytest
from PyQt5 import QtCore
from PyQt5.QtTest import QTest

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from viewer.app import configure
from viewer.cam_request import MAX_STRIP, default_cam_class, review_classes
from viewer.error_summary import ErrorSummary, class_errors
from viewer.session import Models, Session
from viewer.window import MainWindow
from viewer.worker import Worker


def _probs(**values):
    p = np.full(NUM_CLASSES, 0.01, np.float32)
    for name, v in values.items():
        p[int(name[1:])] = v
    return p


# ---------------------------------------------------------------------- which class, which strip (pure)
def test_default_class_is_the_missed_one_then_the_false_positive_then_the_top():
    probs = _probs(c0=0.9, c3=0.4, c5=0.2, c7=0.6)
    # truth {0, 3, 5}, predicted {0, 7}: 3 and 5 missed, 7 a false positive; 3 is the nearer miss
    assert default_cam_class(probs, [0, 7], [0, 3, 5]) == 3
    assert default_cam_class(probs, [0, 7], [0]) == 7               # no miss: the false positive
    assert default_cam_class(probs, [0], [0]) == 0                  # correct: the top class
    assert default_cam_class(probs, [0, 7], None) == 0              # truth unknown: the top class
    assert default_cam_class(probs, None, [3]) == 0                 # no thresholds: the top class
    assert default_cam_class(None, [0], [0]) is None                # no probabilities yet
    assert default_cam_class(probs, [0, 7], [0, 3, 5], focus=5) == 5  # the summary's class wins...
    assert default_cam_class(probs, [0, 7], [0, 3, 5], focus=0) == 3  # ...only when it is an error here


def test_review_classes_order_marks_and_bound():
    probs = _probs(c0=0.9, c3=0.4, c5=0.2, c7=0.6, c9=0.7)
    assert review_classes(probs, [0, 7, 9], [0, 3, 5]) == [(3, "FN"), (5, "FN"), (9, "FP"), (7, "FP"), (0, "TP")]
    assert review_classes(probs, [0, 7], None) == [(0, "pred"), (7, "pred")]
    assert review_classes(probs, None, [5, 3]) == [(3, "true"), (5, "true")]
    many = review_classes(np.linspace(0, 1, NUM_CLASSES), list(range(20)), list(range(10, 28)))
    assert len(many) == MAX_STRIP and [m for _, m in many[:MAX_STRIP]] == ["FN"] * MAX_STRIP


def test_class_errors_counts_a_hand_computed_set():
    labels = {"a": [0, 1], "b": [1], "c": [2], "d": [0], "e": [5]}
    predicted = {"a": [0], "b": [1, 2], "c": [0], "d": [0], "f": [3], "e": None}
    errors = class_errors(labels, predicted)
    # a: 1 missed; b: 2 false positive; c: 2 missed, 0 false positive; d: right; f: no truth; e: no thresholds
    assert errors.counted == 4
    assert errors.fn[1] == ["a"] and errors.fn[2] == ["c"] and errors.fn[0] == []
    assert errors.fp[2] == ["b"] and errors.fp[0] == ["c"] and errors.fp[3] == []
    assert errors.support[0] == 2 and errors.support[1] == 2 and errors.support[5] == 0
    assert errors.ids(2, "both") == ["b", "c"]
    with pytest.raises(ValueError):
        errors.ids(2, "tn")


def test_summary_table_shows_the_counts_and_sorts(qtbot):
    summary = ErrorSummary()
    qtbot.addWidget(summary)
    labels = {"a": [0, 1], "b": [1], "c": [2], "d": [0]}
    summary.set_errors(class_errors(labels, {"a": [0], "b": [1, 2], "c": [0], "d": [0]}), 5)
    assert summary.counts(0) == (2, 0, 1) and summary.counts(1) == (2, 1, 0) and summary.counts(2) == (1, 1, 1)
    assert [summary.row_of(c) for c in (0, 9, 10, 27)] == [0, 9, 10, 27]   # by class number, not as text
    summary.table.sortItems(3, QtCore.Qt.DescendingOrder)   # by FP: the rows move, the counts follow
    assert summary.counts(2) == (1, 1, 1) and summary.row_of(0) in (0, 1)
    assert "4 of 5" in summary.header.text()
    seen = []
    summary.filter_changed.connect(seen.append)
    summary._clicked(summary.row_of(2), 2)        # the FN cell of class 2
    assert seen == [(2, "fn")] and summary.filter_ids() == {"c"} and summary.clear_button.isEnabled()
    summary.clear_button.click()
    assert seen[-1] is None and summary.filter_ids() is None


def test_worker_cancel_makes_earlier_requests_stale():
    worker = Worker("t", sync=True)
    got = []
    worker.result.connect(lambda rid, kind, value: got.append((rid, worker.is_latest(rid, kind))))
    rid = worker.request("strip", lambda: 1)
    worker.cancel("strip", "cam")
    assert got == [(rid, True)] and not worker.is_latest(rid, "strip")
    later = worker.request("strip", lambda: 2)
    assert worker.is_latest(later, "strip")


# ---------------------------------------------------------------------- the window
@pytest.fixture
def window(qtbot, tiny_data, tiny_deploy, tiny_run):
    configure()
    win = MainWindow(Session(tiny_data / "test", tiny_deploy[0], tiny_run[0]), sync=True)
    qtbot.addWidget(win)
    win.show()
    return win


def _errors(window):
    """[(Id, predicted, truth)] of the samples the model gets wrong, with a missed class first."""
    out = []
    for sample_id in window.session.ids:
        predicted = set(window.models.predicted(window.predictions[sample_id]))
        truth = set(window.session.labels[sample_id])
        if predicted != truth:
            out.append((sample_id, predicted, truth))
    out.sort(key=lambda e: (not (e[2] - e[1]), len(e[1] | e[2])))   # a miss, fewest classes first
    assert out, "the tiny model makes no mistake on the tiny test set: nothing to review"
    return out


def test_error_opens_on_its_missed_class_and_the_menu_says_so(window):
    sample_id, predicted, truth = _errors(window)[0]
    window.id_panel.select(sample_id)
    probs = window.current.probs
    expected = default_cam_class(probs, sorted(predicted), sorted(truth))
    assert expected in (truth - predicted or predicted - truth)
    assert window.state.cam_class == -1 and window.current.cam_key[1] == expected
    menu = window.cam_controls.cls
    assert menu.currentIndex() == 0 and f"{expected} {CLASS_NAMES[expected]}" in menu.itemText(0)
    assert menu.itemText(0).startswith("auto FN:" if expected in truth else "auto FP:")
    assert ("[missed]" if expected in truth else "[false positive]") in window.image_panel.caption.text()
    window.state.update(cam_class=5)   # a class chosen in the menu: the menu shows it, "auto" says nothing
    assert menu.currentData() == 5 and "auto (" in menu.itemText(0)


def test_strip_holds_every_predicted_and_true_class_with_its_map(window, monkeypatch):
    sample_id, predicted, truth = _errors(window)[0]
    window.id_panel.select(next(i for i in window.session.ids if i != sample_id))
    calls = []
    original = window.models.cams
    monkeypatch.setattr(window.models, "cams", lambda *a, **kw: calls.append(a[1]) or original(*a, **kw))
    window.id_panel.select(sample_id)
    entries = window.cam_strip.entries()
    every = review_classes(window.current.probs, sorted(predicted), sorted(truth), limit=None)
    assert [c for c, _, _ in entries] == [c for c, _ in every[:MAX_STRIP]]   # bounded, misses first
    kept = predicted | truth if len(every) <= MAX_STRIP else {c for c, _ in every[:MAX_STRIP]}
    assert {c for c, _, _ in entries} == kept
    assert (f"+{len(every) - MAX_STRIP} more" in window.cam_strip.note.text()) == (len(every) > MAX_STRIP)
    assert all(done for _, _, done in entries) and window.strip_ready()
    marks = dict((c, m) for c, m, _ in entries)
    assert all(marks[c] == ("TP" if c in predicted and c in truth else "FN" if c in truth else "FP") for c in marks)
    # the main map, then one request for the rest of the strip (the main class is not asked twice)
    main = window.current.cam_key[1]
    others = sorted(c for c in marks if c != main)
    assert [sorted(c) for c in calls] == [[main]] + ([others] if others else [])
    assert window.cam_strip.buttons[main].isChecked()
    # each thumbnail shows its own map: equal to the map computed alone
    other = next((c for c in marks if c != main), None)
    if other is not None:
        shared = window.current.maps[(other, window.state.cam_method, "mean")]
        alone = window.models.cam(window.current.sample, other, window.state.cam_method, "mean")
        np.testing.assert_allclose(shared, alone, atol=1e-4)
        window.cam_strip.buttons[other].click()          # the thumbnail makes it the main map
        assert window.state.cam_class == other and window.current.cam_key[1] == other
        assert window.cam_strip.buttons[other].isChecked() and not window.cam_strip.buttons[main].isChecked()
        assert window.current.cam is shared               # from the strip: no second computation
        # the pick is for this sample: the next one starts from its own default again
        window.go(1)
        assert window.state.cam_class == -1


def test_strip_of_a_previous_sample_is_dropped(window):
    first, second = window.session.ids[:2]
    window.id_panel.select(first)
    old_key = window.current.strip_key
    window.id_panel.select(second)
    before = dict(window.current.maps)
    window._got_strip((old_key, [0], [np.ones((8, 8), np.float32)]))
    assert window.current.maps == before and window.current.sample_id == second


def test_clicking_a_bar_shows_that_class(window, qtbot):
    chart = window.chart
    chart.resize(360, 600)
    for cls in (4, 25):
        pos = chart.row_center(cls)
        QTest.mouseClick(chart.plot.viewport(), QtCore.Qt.LeftButton, QtCore.Qt.NoModifier, pos)
        assert window.state.cam_class == cls and window.current.cam_key[1] == cls
        assert chart.selection.isVisible() and chart.selection.opts["y"][0] == cls
    # a click on the class's label (left of the bars) works as well
    label = chart.row_center(9)
    label.setX(10)
    QTest.mouseClick(chart.plot.viewport(), QtCore.Qt.LeftButton, QtCore.Qt.NoModifier, label)
    assert window.state.cam_class == 9


def test_readout_follows_class_method_and_sample_without_mouse_moves(window):
    window._show_pixel(10, 12)          # the cursor rests over the image
    text = window.pixel_label.text
    cam = window.current.cam
    assert f"CAM {window.current.cam_key[1]}: {cam[12, 10]:.2f}" in text()
    for change in (dict(cam_class=7), dict(cam_method="gradcam")):
        window.state.update(**change)
        cam, cls = window.current.cam, window.current.cam_key[1]
        assert f"CAM {cls}: {cam[12, 10]:.2f}" in text(), (change, text())
    window.go(1)
    sample, cam = window.current.sample, window.current.cam
    assert text().startswith(f"x 10, y 12:  R {sample[12, 10, 0]} ")
    assert f"CAM {window.current.cam_key[1]}: {cam[12, 10]:.2f}" in text()


def test_error_summary_filters_the_list_and_clears(window):
    window.toggle_error_summary()
    assert window.error_dock.isVisible()
    predicted = {i: window.models.predicted(p) for i, p in window.predictions.items()}
    errors = class_errors(window.session.labels, predicted)
    cls = max(range(NUM_CLASSES), key=lambda c: len(errors.fn[c]))
    assert len(errors.fn[cls]) > 0
    summary = window.error_summary
    assert summary.counts(cls)[1] == len(errors.fn[cls])
    summary._clicked(summary.row_of(cls), 2)
    shown = window.visible_ids()
    assert shown == sorted(errors.fn[cls])
    assert window.id_panel.count.text().startswith(f"{len(shown)} of {len(window.session.ids)}")
    assert "FN of" in window.id_panel.count.text()
    assert window.state.sample_id == shown[0] and window.current.sample is not None
    assert window.current.cam_key[1] == cls           # the map shows the filtered class's miss
    summary.clear_button.click()
    assert len(window.visible_ids()) == len(window.session.ids)
    assert window.id_panel.count.text() == f"{len(window.session.ids)} of {len(window.session.ids)}"


def test_shared_forward_equals_one_class_at_a_time(tiny_deploy, tiny_run, tiny_data):
    from runtime.preprocess import preprocess

    models = Models(tiny_deploy[0], tiny_run[0])
    session = Session(tiny_data / "test")
    x = preprocess(session.sample(session.ids[0]), models.preprocess)[None]
    cams = models.cam_models()
    try:
        for method in ("layercam", "gradcam", "gradcam++"):
            for fold in ("mean", "fold1"):
                together = cams.cam_classes(x, [3, 0, 25], method, fold, views=models.views)
                for cls, shared in zip((3, 0, 25), together):   # against the batched path, one class each
                    alone = cams.cam(x, [cls], method, fold, views=models.views)[0]
                    np.testing.assert_allclose(shared, alone, atol=1e-5)
        with pytest.raises(ValueError):
            cams.cam_classes(x, [3, 28], "gradcam")
        with pytest.raises(ValueError):
            cams.cam_classes(np.concatenate([x, x]), [3], "gradcam")
    finally:
        models.close()


def test_opening_another_folder_clears_the_error_filter(window, tiny_data):
    predicted = {i: window.models.predicted(p) for i, p in window.predictions.items()}
    errors = class_errors(window.session.labels, predicted)
    cls = max(range(NUM_CLASSES), key=lambda c: len(errors.fp[c]))
    window.error_summary.set_filter(cls, "fp")
    assert window.visible_ids() == sorted(errors.fp[cls])
    window.open_folder(tiny_data / "train")
    assert window.error_summary.filter is None
    assert len(window.visible_ids()) == len(window.session.listed_ids())
    assert window.current.sample is not None and window.current.sample_id == window.visible_ids()[0]


def test_without_checkpoints_the_strip_says_why(make_window, tiny_data):
    win = make_window(Session(tiny_data / "test"))
    assert win.current.sample is not None and not win.cam_strip.buttons
    assert "PyTorch checkpoints" in win.cam_strip.note.text() and win.cam_strip.note.isVisibleTo(win)


def test_strip_never_moves_the_image(window, qtbot):
    qtbot.waitExposed(window)
    sample_id = _errors(window)[0][0]
    window.id_panel.select(next(i for i in window.session.ids if i != sample_id))
    window.cam_strip.clear()
    QtCore.QCoreApplication.processEvents()
    empty = (window.image_panel.geometry(), window.cam_strip.height())
    window.id_panel.select(sample_id)
    QtCore.QCoreApplication.processEvents()
    assert window.cam_strip.entries()
    assert (window.image_panel.geometry(), window.cam_strip.height()) == empty
