"""The viewer in a real X window: Xvfb with its default Mesa OpenGL, as on a Linux desktop.

The offscreen platform of the other viewer tests never loads Mesa's libLLVM, which is what the
first CAM would crash against without the viewer's guard. Here pytest starts this file as a script under
``xvfb-run``: it builds the window as ``python -m viewer`` does, with real worker threads, drives
it through keys and the state (CAMs with every method, channel toggles, next/previous from a
focused spin box, File > Open, exports, two window sizes), and saves grabs of the X screen. The
test then checks the grabs themselves: the composite loses its green with green off, the overlay
changes the image, the chart's axis shows 28 separate rows of labels.

Run by hand (screenshots land in OUT; the common pattern is tests/xwindow.py)::

    PYTHONPATH=. xvfb-run -a -s "-screen 0 1600x1000x24" python tests/test_viewer_window.py \\
        --data DIR --model DEPLOY --run RUN --out OUT
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.xwindow import Driver, crop, load_grab, run_driver, script_args

TIMEOUT_S = 240


# ---------------------------------------------------------------------- the test (pytest side)
@pytest.fixture(scope="module")
def xvfb_report(tiny_data, tiny_deploy, tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("xvfb")
    other = out / "other"
    shutil.copytree(tiny_data / "test", other)
    return run_driver(__file__, ["--data", tiny_data / "test", "--model", tiny_deploy[0], "--run", tiny_run[0],
                                 "--open", other, "--t0", repr(time.time())], out, TIMEOUT_S + 60)


def _grab(report, name):
    return load_grab(report, name)


def _green_dominant(rgb):
    return int(((rgb[..., 1] > rgb[..., 0] + 40) & (rgb[..., 1] > rgb[..., 2] + 40)).sum())


def test_real_window_runs_with_a_model(xvfb_report):
    assert xvfb_report["first_image_s"] < 30  # the 2-s figure is measured on the demo (docs/viewer.md)
    assert xvfb_report["methods_done"] == xvfb_report["methods"] and len(xvfb_report["methods"]) >= 2


def test_mesa_gl_was_loaded_as_on_a_desktop(xvfb_report):
    if not list(Path("/usr/lib").glob("*/dri/swrast_dri.so")) and not list(Path("/usr/lib").glob("*/dri/*_dri.so")):
        pytest.skip("no Mesa DRI driver installed (make xvfb installs libgl1-mesa-dri)")
    assert xvfb_report["gl"], "Qt did not load GL: this run did not take the path that crashed on desktops"


def test_composite_loses_its_green_when_green_is_off(xvfb_report):
    on = crop(_grab(xvfb_report, "green-on"), xvfb_report["image_rect"])
    off = crop(_grab(xvfb_report, "green-off"), xvfb_report["image_rect"])
    assert _green_dominant(on) > 50
    assert _green_dominant(off) == 0


def test_overlay_is_on_screen(xvfb_report):
    shown = crop(_grab(xvfb_report, "overlay-on"), xvfb_report["image_rect"])
    hidden = crop(_grab(xvfb_report, "overlay-off"), xvfb_report["image_rect"])
    changed = (np.abs(shown - hidden).sum(-1) > 60).mean()
    assert changed > 0.01
    contour = ((shown.min(-1) > 180) & (hidden.min(-1) < 150)).mean()   # the white isolines
    assert contour > 0.002
    for method, share in xvfb_report["overlay_share"].items():
        assert share > 0.005, method


def test_chart_shows_28_labelled_rows(xvfb_report):
    for size in ("1600x1000", "1000x650"):
        labels = xvfb_report["labels"][size]
        assert len(labels) == 28 and labels[23].startswith("23 Mitochondria")
        text = crop(_grab(xvfb_report, f"window-{size}"), xvfb_report["label_rect"][size])
        ink = (np.abs(text - np.median(text.reshape(-1, 3), 0)).sum(-1) > 120).any(1)
        rows = int((ink[1:] & ~ink[:-1]).sum() + ink[0])
        assert rows == 28, f"{size}: {rows} rows of label text on screen"
        assert xvfb_report["bars_visible"][size] == 28


def test_image_keeps_its_share_at_1000x650(xvfb_report):
    x, y, w, h = xvfb_report["image_on_screen"]["1000x650"]
    assert min(w, h) >= 0.4 * 650 - 60


def test_navigation_zoom_open_and_export(xvfb_report):
    r = xvfb_report
    assert r["next_from_spinbox"] and r["spinbox_unchanged"]
    assert r["zoom_kept"]
    assert r["open_kept_models"] and r["open_cam"]
    assert all(Path(p).is_file() for p in r["exported"])
    assert r["export_shape"] == r["sample_shape"]


# ---------------------------------------------------------------------- the driver (xvfb side)
def drive(args):
    from PyQt5 import QtCore

    from viewer.__main__ import build, parser

    t0 = args.t0 if args.t0 is not None else _process_start()
    app, window = build(parser().parse_args(["--data", args.data, "--model", args.model, "--run", args.run]))
    x = Driver(app, window, args.out)
    out, wait, grab, rect_of, image_rect, keys = x.out, x.wait, x.grab, x.rect_of, x.image_rect, x.keys
    report = {"methods": [window.cam_controls.method.itemData(i) for i in range(window.cam_controls.method.count())]}

    def cam_done():
        return window.current.cam is not None and window.image_panel.overlay_item.isVisible()

    wait(lambda: window.current.sample is not None and window.image_panel.image_item.image is not None, "the first image", 60)
    report["first_image_s"] = time.time() - t0
    print(f"first image on screen {report['first_image_s']:.2f} s after the process started", flush=True)
    report["gl"] = any("libGLX" in line or "libGL.so" in line for line in open("/proc/self/maps"))
    wait(lambda: app.activeWindow() is window, "the window to become active")
    wait(cam_done, "the first CAM", TIMEOUT_S)
    # the overlay checks need a map drawn at full opacity: the top predicted class's (the default
    # map of a wrongly predicted field is its missed class, dimmed as not predicted)
    top = int(np.argmax(window.current.probs))
    window.state.update(cam_class=top)
    wait(lambda: cam_done() and window.current.cam_key[1] == top, "the top class's CAM")
    report["image_rect"] = image_rect()
    grab("green-on")
    keys(window.channel_controls.gammas[0], QtCore.Qt.Key_2)      # Ctrl+2 from a spin box: green off
    wait(lambda: not window.state.channels[1], "green off")
    grab("green-off")
    keys(window.id_panel.list, QtCore.Qt.Key_2)
    grab("overlay-on")
    keys(window.id_panel.search, QtCore.Qt.Key_H)                  # Ctrl+H: overlay off
    wait(lambda: not window.image_panel.overlay_item.isVisible(), "overlay off")
    grab("overlay-off")
    keys(window.id_panel.search, QtCore.Qt.Key_H)

    report["overlay_share"], report["methods_done"] = {}, []
    hidden = _crop_rgb(out / "overlay-off.png", report["image_rect"])
    for method in report["methods"]:
        window.state.update(cam_method=method)
        wait(lambda: cam_done() and window.current.cam_key[2] == method, f"the {method} CAM")
        grab(f"cam-{method}")
        shown = _crop_rgb(out / f"cam-{method}.png", report["image_rect"])
        report["overlay_share"][method] = float((np.abs(shown - hidden).sum(-1) > 60).mean())
        report["methods_done"].append(method)
    window.state.update(cam_method=report["methods"][0])

    # next/previous from a focused spin box, which keeps its value
    spin = window.channel_controls.lows[2]
    first, value = window.state.sample_id, spin.value()
    keys(spin, QtCore.Qt.Key_Down)
    report["next_from_spinbox"] = window.state.sample_id == window.session.listed_ids()[1]
    keys(spin, QtCore.Qt.Key_Up)
    report["next_from_spinbox"] &= window.state.sample_id == first
    report["spinbox_unchanged"] = spin.value() == value
    wait(cam_done, "the CAM after moving back")

    # zoom survives a channel toggle, a contrast change and a CAM change
    window.image_panel.view.scaleBy((0.5, 0.5))
    app.processEvents()
    before = window.image_panel.view.viewRange()
    window.state.toggle_channel(0)
    window.state.set_level(2, 0, 120)
    window.state.update(cam_method=report["methods"][1])
    wait(lambda: cam_done() and window.current.cam_key[2] == report["methods"][1], "the CAM after zooming")
    report["zoom_kept"] = np.allclose(window.image_panel.view.viewRange(), before)
    window.state.toggle_channel(0)
    window.state.set_level(2, 0, 255)
    window.reset_view()

    for size in ("1600x1000", "1000x650"):
        w, h = map(int, size.split("x"))
        window.resize(w, h)
        wait(lambda: True, "the resize")
        time.sleep(0.3)
        app.processEvents()
        grab(f"window-{size}")
        report.setdefault("labels", {})[size] = [text for text, _ in window.chart.tick_labels()]
        axis = window.chart.plot.getPlotItem().getAxis("left")
        labels = QtCore.QRectF()
        for _, rect in window.chart.tick_labels():
            labels = labels.united(rect)
        view_rect = window.chart.plot.mapFromScene(axis.mapRectToScene(labels)).boundingRect()
        report.setdefault("label_rect", {})[size] = rect_of(window.chart.plot.viewport(), view_rect)
        vb = window.chart.plot.getPlotItem().getViewBox()
        visible = vb.viewRect()
        report.setdefault("bars_visible", {})[size] = int(sum(visible.top() <= c <= visible.bottom() for c in range(28)))
        report.setdefault("image_on_screen", {})[size] = image_rect()
    window.resize(1600, 1000)

    # exports at the image's own resolution, and the window as shown
    exported = window.export_image(out / "export.png")
    exported.append(window.export_view(out / "export-view.png"))
    report["exported"] = [str(p) for p in exported]
    import cv2

    report["export_shape"] = list(cv2.imread(str(exported[0])).shape[:2])
    report["sample_shape"] = list(window.current.sample.shape[:2])

    # File > Open keeps the models and shows the new folder's first image with its CAM
    models = window.models
    window.open_folder(args.open)
    wait(lambda: window.current.sample is not None, "the opened folder's first image")
    wait(cam_done, "the opened folder's CAM")
    report["open_kept_models"] = window.models is models and window.models.can_predict
    report["open_cam"] = window.current.cam is not None
    grab("opened")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    window.close()
    return 0


def _process_start():
    """When this process started (Linux: /proc), so a start-up time includes the interpreter's."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return time.time()


def _crop_rgb(path, rect):
    return load_grab({"out": Path(path).parent}, Path(path).stem, rect)


if __name__ == "__main__":
    p = script_args("--data", "--model", "--run", "--open")
    p.add_argument("--t0", type=float, default=None, help="epoch seconds to count from (default: this process's start)")
    sys.exit(drive(p.parse_args()))
