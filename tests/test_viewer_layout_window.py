"""Layout and input in a real X window (Xvfb, the pattern of tests/xwindow.py): text read in
full at 1400 and 1600 px (the caption over the image, the class menu), the errors-per-class
window opening and the next sample loading without moving the image, that window opening clear of
the prediction bars (beside the window, else over the image's lower part) and reopening where moved, the cursor readout clearing when the X pointer leaves
the image, the contrast boxes applying on Enter (not per keystroke), "errors only" jumping to
and showing the first error on its missed class, and what the window says without a model or
a folder speaking of its menus, not of command-line options.

By hand (screenshots land in OUT)::

    PYTHONPATH=. xvfb-run -a -s "-screen 0 1600x1000x24" python tests/test_viewer_layout_window.py \\
        --data DIR --model DEPLOY --run RUN --out OUT
"""

import json
import sys

import numpy as np
import pytest

from tests.xwindow import Driver, load_grab, run_driver, script_args

TIMEOUT_S = 240
SIZES = ("1400x900", "1600x1000")


@pytest.fixture(scope="module")
def layout_report(tiny_data, tiny_deploy, tiny_run, tmp_path_factory):
    return run_driver(__file__, ["--data", tiny_data / "test", "--model", tiny_deploy[0], "--run", tiny_run[0]],
                      tmp_path_factory.mktemp("xvfb-layout"), TIMEOUT_S + 60)


def test_caption_and_class_menu_read_in_full(layout_report):
    for size in SIZES:
        for key in (size, f"{size} errors open"):
            r = layout_report["text"][key]
            # the longest caption there is (missed class, not predicted, threshold, dimmed) whole
            assert "not predicted" in r["caption"] and "overlay dimmed" in r["caption"], r["caption"]
            assert not r["caption_elided"], key
            assert r["caption_needs"] <= r["caption_height"], key
            assert r["menu_cut"] == [], f"{key}: cut in the class menu: {r['menu_cut']}"
            assert r["menu_visible"], key


def test_errors_window_opens_without_moving_the_image(layout_report):
    r = layout_report
    for size in SIZES:
        moved = r["dock"][size]
        assert moved["visible"] and moved["floating"], moved
        assert moved["image_before"] == moved["image_after"], moved
        assert moved["caption_before"] == moved["caption_after"], moved
        # and the table is on screen: its part of the screen changed when it opened
        before = load_grab(r, f"dock-before-{size}", moved["dock_rect"])
        after = load_grab(r, f"dock-after-{size}", moved["dock_rect"])
        assert (np.abs(after - before).sum(-1) > 60).mean() > 0.2


def _overlap(a, b):
    return max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])) * max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))


def test_errors_window_leaves_the_prediction_bars_in_sight(layout_report):
    """No room beside the window (1400 and 1600 px on a 1600-px screen): it opens over the image's
    lower part, on screen, and the bars look as they did before it opened."""
    r = layout_report
    for size in SIZES:
        d = r["dock"][size]
        dock, bars, panel = d["dock_frame"], d["bars"], d["image_panel"]
        assert _overlap(dock, bars) == 0, (size, dock, bars)
        assert dock[0] >= 0 and dock[1] >= 0 and dock[0] + dock[2] <= 1600 and dock[1] + dock[3] <= 1000, (size, dock)
        assert _overlap(dock, panel) == dock[2] * dock[3], (size, dock, panel)  # inside the image panel
        assert dock[1] + dock[3] // 2 > panel[1] + panel[3] // 2, (size, dock, panel)  # its lower part
        before, after = load_grab(r, f"dock-before-{size}", bars), load_grab(r, f"dock-after-{size}", bars)
        assert (np.abs(after - before).sum(-1) > 60).mean() < 0.01, size


def test_errors_window_opens_beside_where_there_is_room_and_stays_where_moved(layout_report):
    b, m = layout_report["beside"], layout_report["remembered"]
    assert b["dock_frame"][0] >= b["window"][0] + b["window"][2], b  # right of the 1100-px window
    assert b["dock_frame"][0] + b["dock_frame"][2] <= 1600, b
    assert m["visible"] and m["reopened"] == m["moved"], m


def test_next_sample_moves_nothing(layout_report):
    r = layout_report["next_sample"]
    assert r["before"] == r["after"]


def test_readout_clears_when_the_pointer_leaves_the_image(layout_report):
    r = layout_report["readout"]
    assert r["over_image"].startswith(f"x {r['pixel'][0]}, y {r['pixel'][1]}:"), r
    assert r["left_panel"] == "" and r["outside_window"] == "", r


def test_contrast_boxes_apply_on_enter(layout_report):
    r = layout_report["boxes"]
    assert r["gamma_while_typing"] == r["gamma_before"]     # nothing applied per keystroke
    assert r["gamma_after"] == pytest.approx(0.65) and r["gamma_text"] == "0.65"
    assert r["low_while_typing"] == r["low_before"]
    assert r["low_after"] == 12 and r["low_text"] == "12"


def test_errors_only_jumps_to_the_first_error_on_its_missed_class(layout_report):
    r = layout_report["errors_only"]
    assert r["count"] == f"{len(r['error_ids'])} of {r['total']}"
    assert r["shown"] == r["error_ids"][0] and r["listed"] == r["error_ids"]
    assert r["image_shown"] and r["selected_row_visible"]
    assert r["map_class"] == r["expected_class"]
    assert r["mark"] in r["caption"]


def test_messages_in_the_window_name_menus_not_options(layout_report):
    for where, texts in layout_report["messages"].items():
        for text in texts:
            assert "--" not in text, f"{where}: {text}"
        assert any("File > Open" in t for t in texts), (where, texts)


# ---------------------------------------------------------------------- the driver (xvfb side)
def _rect(r):
    return [r.x(), r.y(), r.width(), r.height()]


def drive(args):
    from PyQt5 import QtCore, QtTest, QtWidgets

    from viewer.__main__ import build, parser
    from viewer.cam_request import default_cam_class
    from viewer.controls import class_texts

    app, window = build(parser().parse_args(["--data", args.data, "--model", args.model, "--run", args.run]))
    x = Driver(app, window, args.out)
    report = {"text": {}, "dock": {}}

    def cam_of(cls):
        return lambda: (window.current.cam is not None and window.current.cam_key[1] == cls
                        and window.image_panel.overlay_item.isVisible())

    x.wait(lambda: len(window.predictions) == len(window.session.ids), "the predictions", TIMEOUT_S)
    x.wait(lambda: window.current.cam is not None, "the first CAM", TIMEOUT_S)

    # a sample whose default map is a missed class the model does not predict: the longest caption
    labels, errors = window.session.labels, []
    for sample_id in window.session.ids:
        probs = window.predictions[sample_id]
        predicted, truth = window.models.predicted(probs), labels.get(sample_id)
        if truth is not None and set(predicted) != set(truth):
            errors.append(sample_id)
    missed = next(i for i in errors if set(labels[i]) - set(window.models.predicted(window.predictions[i])))
    window.id_panel.select(missed)
    x.wait(lambda: window.current.sample_id == missed and window.current.cam is not None
           and "not predicted" in window.image_panel.caption.html, "the missed class's map", TIMEOUT_S)

    def text_report():
        caption, menu = window.image_panel.caption, window.cam_controls.cls
        option = QtWidgets.QStyleOptionComboBox()
        menu.initStyleOption(option)
        field = menu.style().subControlRect(QtWidgets.QStyle.CC_ComboBox, option,
                                            QtWidgets.QStyle.SC_ComboBoxEditField, menu)
        toolbar = window.cam_controls.parentWidget()
        return {"caption": caption.text(), "caption_elided": caption.elided(),
                "caption_needs": caption.heightForWidth(caption.width()), "caption_height": caption.height(),
                "menu_cut": [t for t in class_texts() if menu.fontMetrics().horizontalAdvance(t) > field.width()],
                "menu_visible": menu.isVisible() and menu.mapTo(toolbar, QtCore.QPoint(menu.width(), 0)).x()
                <= toolbar.width()}

    for size in SIZES:
        w, h = map(int, size.split("x"))
        window.resize(w, h)
        x.wait(what="the resize")
        report["text"][size] = text_report()
        before = {"image_before": x.image_rect(), "caption_before": x.rect_of(window.image_panel.caption)}
        x.grab(f"dock-before-{size}")
        window._dock_placed = False  # each size as a session's first open (placed, not remembered)
        x.keys(window.id_panel.list, QtCore.Qt.Key_R, QtCore.Qt.ControlModifier | QtCore.Qt.ShiftModifier)
        x.wait(lambda: window.error_dock.isVisible(), "the errors per class")
        x.wait(what="the layout")
        x.grab(f"dock-after-{size}")
        dock = window.error_dock
        report["dock"][size] = {**before, "image_after": x.image_rect(),
                                "caption_after": x.rect_of(window.image_panel.caption),
                                "visible": dock.isVisible(), "floating": dock.isFloating(),
                                "dock_rect": x.rect_of(window.error_summary.table),
                                "dock_frame": _rect(dock.frameGeometry()), "window": _rect(window.frameGeometry()),
                                "bars": x.rect_of(window.chart), "image_panel": x.rect_of(window.image_panel)}
        report["text"][f"{size} errors open"] = text_report()
        x.keys(window.id_panel.list, QtCore.Qt.Key_R, QtCore.Qt.ControlModifier | QtCore.Qt.ShiftModifier)
        x.wait(lambda: not window.error_dock.isVisible(), "the errors per class to close")
    # room beside the window: it opens there; moved by the user, it reopens where it was left
    window.resize(1100, 800)
    x.wait(what="the resize")
    window._dock_placed = False
    x.keys(window.id_panel.list, QtCore.Qt.Key_R, QtCore.Qt.ControlModifier | QtCore.Qt.ShiftModifier)
    x.wait(lambda: window.error_dock.isVisible(), "the errors per class")
    report["beside"] = {"dock_frame": _rect(window.error_dock.frameGeometry()), "window": _rect(window.frameGeometry())}
    window.error_dock.move(700, 150)
    x.wait(what="the move")
    moved = _rect(window.error_dock.frameGeometry())
    for _ in range(2):
        x.keys(window.id_panel.list, QtCore.Qt.Key_R, QtCore.Qt.ControlModifier | QtCore.Qt.ShiftModifier)
        x.wait(what="the toggle")
    report["remembered"] = {"moved": moved, "reopened": _rect(window.error_dock.frameGeometry()),
                            "visible": window.error_dock.isVisible()}
    x.keys(window.id_panel.list, QtCore.Qt.Key_R, QtCore.Qt.ControlModifier | QtCore.Qt.ShiftModifier)
    x.wait(lambda: not window.error_dock.isVisible(), "the errors per class to close")
    window.resize(1400, 900)
    x.wait(what="the resize")

    # the next sample (Ctrl+Down), its map and strip loading: nothing above or beside the image moves
    before = {"image": x.image_rect(), "caption": x.rect_of(window.image_panel.caption),
              "strip": x.rect_of(window.cam_strip)}
    shown = window.current.sample_id
    x.keys(window.id_panel.list, QtCore.Qt.Key_Down)
    x.wait(lambda: window.current.sample_id != shown and window.current.cam is not None and window.strip_ready(),
           "the next sample with its maps", TIMEOUT_S)
    report["next_sample"] = {"before": before, "after": {
        "image": x.image_rect(), "caption": x.rect_of(window.image_panel.caption), "strip": x.rect_of(window.cam_strip)}}

    # the X pointer over a pixel, over the Id list, off the window
    pixel = (20, 24)
    x.pointer(x.image_point(*pixel))
    x.wait(lambda: window.pixel_label.text().startswith(f"x {pixel[0]}, y {pixel[1]}"), "the readout", 10)
    readout = {"pixel": pixel, "over_image": window.pixel_label.text()}
    x.pointer(window.id_panel.list.viewport().mapToGlobal(QtCore.QPoint(20, 20)))
    x.wait(what="the pointer")
    readout["left_panel"] = window.pixel_label.text()
    x.pointer(x.image_point(*pixel))
    x.wait(lambda: window.pixel_label.text().startswith(f"x {pixel[0]}"), "the readout again", 10)
    x.pointer(QtCore.QPoint(1590, 990))   # the window is 1400x900 at the screen's corner
    x.wait(what="the pointer")
    readout["outside_window"] = window.pixel_label.text()
    x.grab("pointer-outside")
    report["readout"] = readout

    # typing in the contrast boxes: applied on Enter
    boxes = {}
    gamma = window.channel_controls.gammas[0]
    boxes["gamma_before"] = window.state.gammas[0]
    gamma.setFocus()
    gamma.selectAll()
    QtTest.QTest.keyClicks(gamma, "0.65")
    x.events()
    boxes["gamma_while_typing"] = window.state.gammas[0]
    QtTest.QTest.keyClick(gamma, QtCore.Qt.Key_Return)
    x.events()
    boxes["gamma_after"], boxes["gamma_text"] = window.state.gammas[0], gamma.text()
    low = window.channel_controls.lows[2]
    boxes["low_before"] = window.state.levels[2][0]
    low.setFocus()
    low.selectAll()
    QtTest.QTest.keyClicks(low, "12")
    x.events()
    boxes["low_while_typing"] = window.state.levels[2][0]
    QtTest.QTest.keyClick(low, QtCore.Qt.Key_Return)
    x.events()
    boxes["low_after"], boxes["low_text"] = window.state.levels[2][0], low.text()
    report["boxes"] = boxes
    window.auto_contrast()
    window.state.set_gamma(0, 1.0)

    # errors only, ticked with the mouse: the count, the first error shown, on its missed class
    ids = window.id_panel
    # the tiny model gets every test field wrong: one is made right (its ground truth set to what
    # the model predicts) and shown, so that ticking the box has to move away from it
    right = next(i for i in window.session.listed_ids()[1:] if window.models.predicted(window.predictions[i]))
    labels[right] = sorted(window.models.predicted(window.predictions[right]))
    errors = [i for i in errors if i != right]
    ids.select(right)
    x.wait(lambda: window.current.sample is not None and window.current.sample_id not in errors, "a correct sample")
    box = ids.errors_only
    QtTest.QTest.mouseClick(box, QtCore.Qt.LeftButton, pos=QtCore.QPoint(8, box.height() // 2))
    listed = [i for i in window.session.listed_ids() if i in errors]
    x.wait(lambda: window.current.sample_id == listed[0] and window.current.cam is not None, "the first error", TIMEOUT_S)
    probs = window.current.probs
    predicted, truth = window.models.predicted(probs), labels.get(listed[0])
    expected = default_cam_class(probs, predicted, truth)
    x.wait(cam_of(expected), "the first error's map", TIMEOUT_S)
    row = ids.list.currentRow()
    report["errors_only"] = {
        "count": ids.count.text(), "total": len(window.session.listed_ids()), "error_ids": listed,
        "listed": window.visible_ids(), "shown": window.current.sample_id,
        "image_shown": window.image_panel.image_item.image is not None,
        "selected_row_visible": ids.list.viewport().rect().intersects(ids.list.visualItemRect(ids.list.item(row))),
        "map_class": window.current.cam_key[1], "expected_class": expected,
        "mark": "[missed]" if expected in truth else "[false positive]",
        "caption": window.image_panel.caption.text()}
    x.grab("errors-only")
    window.close()

    # without a model, and without a folder: what the window says
    messages = {}
    _, bare = build(parser().parse_args(["--data", args.data]))
    y = Driver(app, bare, args.out, size=(1400, 900))
    y.wait(lambda: bare.current.sample is not None, "the image without a model")
    messages["no model"] = [bare.statusBar().currentMessage(), bare.image_panel.caption.html,
                            bare.cam_strip.note.text(), bare.id_panel.errors_only.toolTip(),
                            bare.channel_controls.pixel.toolTip()]
    y.grab("no-model")
    bare.close()
    _, empty = build(parser().parse_args([]))
    z = Driver(app, empty, args.out, size=(1400, 900))
    z.wait(what="the empty window")
    messages["no folder"] = [empty.statusBar().currentMessage(), empty.image_panel.caption.html, empty.pred_label.text()]
    z.grab("no-folder")
    empty.close()
    report["messages"] = messages
    (x.out / "report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(drive(script_args("--data", "--model", "--run").parse_args()))
