"""Small windows in a real X window (Xvfb, the pattern of tests/xwindow.py): at 1000x650,
1280x720 and 1366x768 (laptop screens) no text in the right column overlaps: the 28 class labels
each have a row of their own, the legend and the lines under the chart sit below the plot, every
label gets the height its wrapped text needs, and what does not fit is reached by scrolling the
column. At 1400x900 the column fits without a scroll bar.

By hand (screenshots land in OUT)::

    PYTHONPATH=. xvfb-run -a -s "-screen 0 1600x1000x24" python tests/test_viewer_small_window.py \\
        --data DIR --model DEPLOY --run RUN --out OUT
"""

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.xwindow import Driver, load_grab, run_driver, script_args

TIMEOUT_S = 240
SMALL = ("1000x650", "1280x720", "1366x768")
ROW_MIN_PX = 14   # the least plot height per class row: an 8-point label is 13 px high, and 1 px apart


@pytest.fixture(scope="module")
def small_report(tiny_data, tiny_deploy, tiny_run, tmp_path_factory):
    return run_driver(__file__, ["--data", tiny_data / "test", "--model", tiny_deploy[0], "--run", tiny_run[0]],
                      tmp_path_factory.mktemp("xvfb-small"), TIMEOUT_S + 60)


def _intersects(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def test_chart_and_text_under_it_do_not_overlap(small_report):
    for size in SMALL:
        r = small_report[size]
        boxes = {name: rect for name, rect in r["boxes"].items() if rect is not None}
        assert {"plot", "legend", "predictions"} <= set(boxes), (size, boxes)
        names = sorted(boxes)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                assert not _intersects(boxes[a], boxes[b]), f"{size}: {a} {boxes[a]} overlaps {b} {boxes[b]}"
        for name, (height, needs) in r["text_fits"].items():
            assert height >= needs, f"{size}: {name} is {height} px high, its wrapped text needs {needs}"


def test_28_class_labels_each_on_a_row_of_their_own(small_report):
    for size in SMALL:
        r = small_report[size]
        assert r["plot_rows_px"] >= 28 * ROW_MIN_PX, f"{size}: {r['plot_rows_px']} px of plot for 28 rows"
        labels = r["labels"]
        assert len(labels) == 28, size
        for (text_a, a), (text_b, b) in zip(labels, labels[1:]):
            assert not _intersects(a, b), f"{size}: label {text_a!r} {a} runs into {text_b!r} {b}"
        # and on the screen: 28 separate rows of ink where the labels are drawn
        text = load_grab(small_report, f"small-{size}", r["label_rect"])
        ink = (np.abs(text - np.median(text.reshape(-1, 3), 0)).sum(-1) > 120).any(1)
        rows = int((ink[1:] & ~ink[:-1]).sum() + ink[0])
        assert rows == 28, f"{size}: {rows} rows of label text on screen"


def test_what_does_not_fit_is_reached_by_scrolling(small_report):
    for size in SMALL:
        r = small_report[size]
        assert r["chart_visible_at_top"], f"{size}: the plot is not whole in the column as it opens"
        assert r["predictions_visible_at_bottom"], f"{size}: the lines under the chart cannot be scrolled to"
    assert small_report["1400x900"]["scroll_max"] == 0, "a scroll bar at 1400x900, where the column fits"


def test_wheel_over_the_chart_scrolls_the_column(small_report):
    scrolled = small_report["wheel_scrolled"]
    if scrolled is None:
        pytest.skip("xdotool is not installed: no real wheel to turn in the X server")
    assert scrolled > 0, "the wheel over the chart did not scroll the column at 1000x650"


# ---------------------------------------------------------------------- the driver (xvfb side)
def drive(args):
    from PyQt5 import QtCore, QtWidgets

    from viewer.__main__ import build, parser

    app, window = build(parser().parse_args(["--data", args.data, "--model", args.model, "--run", args.run]))
    x = Driver(app, window, args.out)
    x.wait(lambda: window.current.probs is not None and window.current.cam is not None, "the first prediction", TIMEOUT_S)
    chart, plot = window.chart, window.chart.plot

    def screen_rect(widget):
        return x.rect_of(widget) if widget.isVisible() else None

    def scroll_area():
        parent = chart.parentWidget()
        while parent is not None and not isinstance(parent, QtWidgets.QScrollArea):
            parent = parent.parentWidget()
        return parent

    def inside(rect, outer):
        return (rect[0] >= outer[0] and rect[1] >= outer[1] and rect[0] + rect[2] <= outer[0] + outer[2]
                and rect[1] + rect[3] <= outer[1] + outer[3])

    report = {}
    for size in (*SMALL, "1400x900"):
        w, h = map(int, size.split("x"))
        window.resize(w, h)
        x.wait(what="the resize")
        scroll = scroll_area()
        bar = scroll.verticalScrollBar() if scroll is not None else None
        if bar is not None:
            bar.setValue(0)
            x.events()
        x.grab(f"small-{size}")
        texts = {"banner": window.provenance_label, "legend": chart.legend, "predictions": window.pred_label}
        r = {"boxes": {"plot": screen_rect(plot), **{name: screen_rect(label) for name, label in texts.items()}},
             "text_fits": {name: [label.height(), label.heightForWidth(label.width())]
                           for name, label in texts.items() if label.isVisible()}}
        view = plot.getPlotItem().getViewBox()
        r["plot_rows_px"] = view.sceneBoundingRect().height()
        axis = plot.getPlotItem().getAxis("left")
        labels, united = [], QtCore.QRectF()
        for text, rect in chart.tick_labels():
            labels.append([text, x.rect_of(plot.viewport(), plot.mapFromScene(axis.mapRectToScene(rect)).boundingRect())])
            united = united.united(rect)
        r["labels"] = labels
        r["label_rect"] = x.rect_of(plot.viewport(), plot.mapFromScene(axis.mapRectToScene(united)).boundingRect())
        # without a scroll area the column is all there is: what lies outside the window is lost
        port = x.rect_of(scroll.viewport()) if scroll is not None else x.rect_of(window.centralWidget())
        r["chart_visible_at_top"] = inside(r["boxes"]["plot"], port)
        r["scroll_max"] = bar.maximum() if bar is not None else 0
        if bar is not None:
            bar.setValue(bar.maximum())
            x.events()
            x.grab(f"small-{size}-scrolled")
        r["predictions_visible_at_bottom"] = inside(x.rect_of(window.pred_label), port)
        if bar is not None:
            bar.setValue(0)
        report[size] = r
    # the X server's wheel (xdotool's button 5) over the chart: the chart does not zoom, the column scrolls
    report["wheel_scrolled"] = None
    if shutil.which("xdotool"):
        window.resize(1000, 650)
        x.wait(what="the resize")
        scroll = scroll_area()
        bar = scroll.verticalScrollBar() if scroll is not None else None
        if bar is not None:
            bar.setValue(0)
        x.pointer(plot.mapToGlobal(plot.rect().center()))
        subprocess.run(["xdotool", "click", "--repeat", "3", "5"], check=True, timeout=30)
        end = time.time() + 5
        while time.time() < end and not (bar is not None and bar.value() > 0):
            x.events(5)
        report["wheel_scrolled"] = bar.value() if bar is not None else 0
    (x.out / "report.json").write_text(json.dumps(report, indent=1))
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(drive(script_args("--data", "--model", "--run").parse_args()))
