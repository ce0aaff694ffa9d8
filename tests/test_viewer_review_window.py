"""Error review in a real X window (Xvfb with Mesa GL, real worker threads, as
tests/test_viewer_window.py): the strip of maps fills for a wrongly predicted sample without
stalling the GUI, a click on a thumbnail and a click on a bar change the main map on screen, the
cursor readout follows a class change without a mouse move, and the errors-per-class table
filters the list. pytest runs this file as a script under xvfb-run and checks its screen grabs.

By hand (screenshots land in OUT)::

    PYTHONPATH=. xvfb-run -a -s "-screen 0 1600x1000x24" python tests/test_viewer_review_window.py \\
        --data DIR --model DEPLOY --run RUN --out OUT
"""

import json
import os
import sys
import time

import numpy as np
import pytest

from tests.xwindow import Driver, load_grab, run_driver, script_args

TIMEOUT_S = 240
STALL_MS = 100   # the longest the GUI thread may be busy while the strip fills


@pytest.fixture(scope="module")
def review_report(tiny_data, tiny_deploy, tiny_run, tmp_path_factory):
    return run_driver(__file__, ["--data", tiny_data / "test", "--model", tiny_deploy[0], "--run", tiny_run[0]],
                      tmp_path_factory.mktemp("xvfb-review"), TIMEOUT_S + 60)


def _grab(report, name, rect=None):
    return load_grab(report, name, rect)


def _near(rgb, colour, tol=40):
    return (np.abs(rgb - np.asarray(colour)).sum(-1) < tol)


def _hex(colour):
    return [int(colour[i:i + 2], 16) for i in (1, 3, 5)]


def test_strip_fills_with_marked_maps_without_stalling(review_report):
    r = review_report
    assert r["strip_classes"] and all(done for _, _, done in r["strip"])
    assert {c for c, _, _ in r["strip"]} == set(r["strip_classes"])
    # What the viewer itself puts on the GUI thread: its CPU time between two ticks of a 10-ms
    # timer. The wall-clock gap adds the time the OS gave other processes: it is held to the same
    # bound where the machine has a core to spare (on a shared, overloaded one it is printed).
    assert r["max_cpu_ms"] < STALL_MS, f"the GUI thread was busy {r['max_cpu_ms']:.0f} ms while the strip filled"
    if not r["overloaded"]:
        assert r["max_gap_ms"] < STALL_MS, f"the GUI stalled {r['max_gap_ms']:.0f} ms while the strip filled"
    from viewer.cam_strip import MARK_COLOURS

    assert len(r["on_screen"]) >= min(4, len(r["strip"]))            # 4 tiles fit 1600x1000 at least
    marks = {c: m for c, m, _ in r["strip"]}
    for cls, icon_rect, tile_rect in zip(r["on_screen"], r["icon_rects"], r["tile_rects"]):
        mark = marks[cls]
        tile = _grab(r, "strip", tile_rect)
        assert _near(tile, _hex(MARK_COLOURS[mark])).sum() > 100, f"class {cls}: no {mark} border on screen"
        icon = _grab(r, "strip", icon_rect)
        heat = (icon[..., 0] > 120) & (icon[..., 2] > 120) & (icon[..., 1] < icon[..., 0] - 40)
        assert heat.sum() > 20 or r["empty_maps"].get(str(cls)), f"class {cls}: no map drawn in its thumbnail"


def test_clicking_a_thumbnail_shows_its_map(review_report):
    r = review_report
    assert r["clicked_class"] in r["strip_classes"] and r["after_click_class"] == r["clicked_class"]
    before = _grab(r, "strip", r["image_rect"])
    after = _grab(r, "strip-clicked", r["image_rect"])
    assert (np.abs(after - before).sum(-1) > 60).mean() > 0.002   # another map over the same image
    # the clicked tile is the checked one now: its border is thicker on screen
    from viewer.cam_strip import MARK_COLOURS

    colour = _hex(MARK_COLOURS[r["clicked_mark"]])
    was = _near(_grab(r, "strip", r["clicked_tile"]), colour).sum()
    now = _near(_grab(r, "strip-clicked", r["clicked_tile"]), colour).sum()
    assert now > was * 1.3, (was, now)


def test_clicking_a_bar_shows_that_class(review_report):
    r = review_report
    assert r["bar_class"] not in r["strip_classes"] and r["after_bar_class"] == r["bar_class"]
    before = _grab(r, "strip-clicked", r["image_rect"])
    after = _grab(r, "bar-clicked", r["image_rect"])
    assert (np.abs(after - before).sum(-1) > 60).mean() > 0.002
    assert r["bar_caption"].count(f"{r['bar_class']} ") >= 1
    # the row's pale band is on screen behind the clicked class, beyond its bar
    band = _grab(r, "bar-clicked", r["band_rect"]).mean()
    plain = _grab(r, "bar-clicked", r["plain_rect"]).mean()
    assert band > plain + 15, (band, plain)


def test_readout_follows_the_class_without_a_mouse_move(review_report):
    r = review_report
    assert r["readout_before"] != r["readout_after"]
    assert f"CAM {r['bar_class']}: " in r["readout_after"] and r["readout_after"].endswith(r["expected_cam_text"])


def test_error_summary_filters_the_list_on_screen(review_report):
    r = review_report
    assert r["summary_visible"] and r["filtered_ids"] == r["expected_fn_ids"]
    assert r["filter_count"].startswith(f"{len(r['expected_fn_ids'])} of ") and "FN of" in r["filter_count"]
    assert r["loaded_after_filter"] == r["expected_fn_ids"][0]
    assert r["cleared_count"] == r["total_count"]


# ---------------------------------------------------------------------- the driver (xvfb side)
def drive(args):
    from PyQt5 import QtCore, QtTest

    from viewer.__main__ import build, parser
    from viewer.cam_request import MAX_STRIP, review_classes
    from viewer.error_summary import class_errors

    app, window = build(parser().parse_args(["--data", args.data, "--model", args.model, "--run", args.run]))
    x = Driver(app, window, args.out)
    out, wait, grab, rect_of, image_rect = x.out, x.wait, x.grab, x.rect_of, x.image_rect
    report = {}

    def cam_of(cls):
        return lambda: (window.current.cam is not None and window.current.cam_key[1] == cls
                        and window.image_panel.overlay_item.isVisible())

    def strip_done():
        return bool(window.cam_strip.entries()) and window.strip_ready() and window.current.cam is not None

    wait(lambda: window.current.sample is not None, "the first image", 60)
    wait(lambda: len(window.predictions) == len(window.session.ids), "the predictions", TIMEOUT_S)
    wait(lambda: window.current.cam is not None, "the first CAM", TIMEOUT_S)

    # the wrongly predicted sample with a miss and the most classes that fit the strip
    labels = window.session.labels
    candidates = []
    for sample_id in window.session.ids:
        every = review_classes(window.predictions[sample_id], window.models.predicted(window.predictions[sample_id]),
                               labels.get(sample_id), limit=None)
        if any(m == "FN" for _, m in every) and sample_id != window.state.sample_id:
            candidates.append((len(every) > MAX_STRIP, -min(len(every), MAX_STRIP), sample_id))
    sample_id = sorted(candidates)[0][2]

    # every tick of a 10-ms timer on the GUI thread while the strip fills: the longest gap is the
    # longest the GUI was busy (decoding, the maps and the drawing run on the workers)
    ticks = []
    timer = QtCore.QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append((time.perf_counter(), time.thread_time())))
    timer.start()
    window.id_panel.select(sample_id)
    wait(lambda: window.current.sample_id == sample_id and strip_done(), "the strip", TIMEOUT_S)
    timer.stop()
    wall, cpu = (np.diff(np.array(ticks)[:, k]) * 1000 for k in (0, 1))
    worst = int(wall.argmax())
    report["max_gap_ms"] = float(wall.max())
    report["max_gap_cpu_ms"] = float(cpu[worst])   # of it, the GUI thread's own CPU time
    report["max_cpu_ms"] = float(cpu.max())
    report["ticks"] = len(ticks)
    report["overloaded"] = os.getloadavg()[0] > (os.cpu_count() or 1)
    print(f"strip of {len(window.cam_strip.entries())} maps filled in {ticks[-1][0] - ticks[0][0]:.2f} s; "
          f"longest GUI gap {wall.max():.0f} ms ({cpu[worst]:.0f} ms of it GUI-thread CPU) over {len(ticks)} ticks; "
          f"most GUI-thread CPU between two ticks {cpu.max():.0f} ms; load average {os.getloadavg()[0]:.1f}",
          flush=True)
    strip = window.cam_strip
    report["strip"] = strip.entries()
    report["strip_classes"] = [c for c, _, _ in report["strip"]]
    report["empty_maps"] = {str(c): float(window.current.maps[(c, window.state.cam_method, "mean")].max()) <= 0
                            for c in report["strip_classes"]}
    # the tiles the strip's scroll area shows without scrolling (8 tiles may not all fit)
    port = strip.scroll.viewport()
    def fits(button):
        left = button.mapTo(port, QtCore.QPoint(0, 0)).x()
        return left >= 0 and left + button.width() <= port.width()

    shown = [c for c in report["strip_classes"] if fits(strip.buttons[c])]
    report["on_screen"] = shown
    report["tile_rects"] = [rect_of(strip.buttons[c]) for c in shown]
    report["icon_rects"] = []
    for c in shown:
        b = strip.buttons[c]
        side = b.iconSize().width()
        report["icon_rects"].append(rect_of(b, QtCore.QRect((b.width() - side) // 2, 6, side, side - 4)))
    report["image_rect"] = image_rect()
    grab("strip")

    # a click on another thumbnail: its map is the main one
    main = window.current.cam_key[1]
    clicked = next(c for c in shown if c != main)
    button = strip.buttons[clicked]
    report["clicked_class"], report["clicked_mark"] = clicked, strip.marks[clicked]
    report["clicked_tile"] = rect_of(button)
    QtTest.QTest.mouseClick(button, QtCore.Qt.LeftButton)
    wait(cam_of(clicked), "the clicked thumbnail's map", 30)
    report["after_click_class"] = window.current.cam_key[1]
    grab("strip-clicked")

    # the cursor rests over the image; then a bar click changes the class: the readout follows
    panel = window.image_panel
    centre = panel.graphics.mapFromScene(panel.image_item.mapToScene(QtCore.QPointF(20.5, 24.5)))
    QtTest.QTest.mouseMove(panel.graphics.viewport(), centre)
    wait(lambda: window.pixel_label.text().startswith("x 20, y 24"), "the readout", 10)
    report["readout_before"] = window.pixel_label.text()
    chart = window.chart
    bar = next(c for c in range(27, -1, -1) if c not in report["strip_classes"])
    QtTest.QTest.mouseClick(chart.plot.viewport(), QtCore.Qt.LeftButton, QtCore.Qt.NoModifier, chart.row_center(bar))
    wait(cam_of(bar), "the clicked bar's map", TIMEOUT_S)
    report["bar_class"], report["after_bar_class"] = bar, window.current.cam_key[1]
    report["bar_caption"] = window.image_panel.caption.text()
    report["readout_after"] = window.pixel_label.text()
    report["expected_cam_text"] = f"{window.current.cam[24, 20]:.2f}"
    plot = chart.plot
    vb = plot.getPlotItem().getViewBox()

    def row_rect(row):
        a = plot.mapFromScene(vb.mapViewToScene(QtCore.QPointF(1.0, row - 0.3)))
        b = plot.mapFromScene(vb.mapViewToScene(QtCore.QPointF(1.04, row + 0.3)))
        return rect_of(plot.viewport(), QtCore.QRect(a, b).normalized())

    other_row = (bar + 2) % 28 if (bar + 2) % 28 != bar else (bar + 3) % 28
    report["band_rect"], report["plain_rect"] = row_rect(bar), row_rect(other_row)
    grab("bar-clicked")

    # errors per class: Ctrl+Shift+R shows the table; a click on a class's FN cell filters the list
    QtTest.QTest.keyClick(window.id_panel.list, QtCore.Qt.Key_R, QtCore.Qt.ControlModifier | QtCore.Qt.ShiftModifier)
    wait(lambda: window.error_dock.isVisible(), "the errors per class", 10)
    report["summary_visible"] = window.error_dock.isVisible()
    predicted = {i: window.models.predicted(p) for i, p in window.predictions.items()}
    errors = class_errors(labels, predicted)
    cls = max(range(28), key=lambda c: len(errors.fn[c]))
    report["expected_fn_ids"] = sorted(errors.fn[cls])
    table = window.error_summary.table
    row = window.error_summary.row_of(cls)
    table.scrollToItem(table.item(row, 2))
    app.processEvents()
    QtTest.QTest.mouseClick(table.viewport(), QtCore.Qt.LeftButton, QtCore.Qt.NoModifier,
                            table.visualItemRect(table.item(row, 2)).center())
    wait(lambda: window.current.sample_id == report["expected_fn_ids"][0] and window.current.sample is not None,
         "the first false negative", 30)
    report["filtered_ids"] = window.visible_ids()
    report["filter_count"] = window.id_panel.count.text()
    report["loaded_after_filter"] = window.current.sample_id
    grab("summary")
    window.error_summary.clear_button.click()
    app.processEvents()
    report["cleared_count"] = window.id_panel.count.text()
    n = len(window.session.listed_ids())
    report["total_count"] = f"{n} of {n}"
    (out / "report.json").write_text(json.dumps(report, indent=1))
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(drive(script_args("--data", "--model", "--run").parse_args()))
