"""Files, menus, provenance and scale in a real X window (Xvfb, as tests/test_viewer_window.py):
the viewer starts with images only; a right-click on the composite pops up the viewer's own menu
(not pyqtgraph's); File > Open model (its dialog answered) loads a deployment folder on the
worker and the synthetic-training banner appears; a training run dropped on the image (Qt drag
events, as a file manager's drop arrives) replaces the model; a TIFF folder whose tags record
0.65 um per pixel draws a scale bar of the right length, also where the calibrated channels
were resized on load; File > Open model refuses an image folder naming the right menu; the Id
list (full Ids in the tooltips, the count) and the channel rows fit at 1400 px. pytest runs this
file as a script under xvfb-run and checks the grabs of the X screen.

By hand: PYTHONPATH=. xvfb-run -a -s "-screen 0 1600x1000x24" python tests/test_viewer_files_window.py \\
    --data DIR --model DEPLOY --run RUN --tiff TIFFDIR --out OUT
"""

import json
import sys

import numpy as np
import pytest

from tests.xwindow import Driver, load_grab, run_driver, script_args

UM = 0.65          # the TIFFs' calibration: 10000 / 0.65 pixels per centimetre
SIZE = 200         # their width: a fifth is 26 um, so a 20 um bar of 30.8 pixels


@pytest.fixture(scope="module")
def files_report(tiny_data, tiny_deploy, tiny_run, tmp_path_factory):
    from PIL import Image

    tiff = tmp_path_factory.mktemp("tiff")
    rng = np.random.default_rng(2)
    for name in ("red", "green", "blue", "yellow"):
        plane = (rng.random((SIZE, SIZE)) * 60).astype(np.uint8)
        Image.fromarray(plane).save(tiff / f"cal_{name}.tif", resolution=10000 / UM, resolution_unit=3)
        # "res": red uncalibrated at SIZE, the others at twice the size and half the pixel size;
        # runtime.reader shows them at red's size, where one pixel is UM again
        if name == "red":
            Image.fromarray(plane).save(tiff / f"res_{name}.tif")
        else:
            Image.fromarray(np.kron(plane, np.ones((2, 2), np.uint8))).save(
                tiff / f"res_{name}.tif", resolution=2 * 10000 / UM, resolution_unit=3)
    return run_driver(__file__, ["--data", tiny_data / "test", "--model", tiny_deploy[0], "--run", tiny_run[0],
                                 "--tiff", tiff], tmp_path_factory.mktemp("xvfb-files"), 300)


def _grab(report, name, rect=None):
    return load_grab(report, name, rect)


def test_right_click_shows_the_viewers_menu(files_report):
    r = files_report
    assert r["menu_entries"] == ["Copy Id", "Export view (window as shown)...",
                                 "Export image (own resolution, and the map alone)...", "Reset view (fit the image)"]
    assert not r["pyqtgraph_menu_visible"]
    assert r["other_popups"] == [None, None]  # right-click on a histogram or the chart: no developer menu
    before, after = _grab(r, "start", r["menu_rect"]), _grab(r, "menu", r["menu_rect"])
    assert np.abs(after - before).mean() > 20      # the menu is drawn where it popped up
    assert r["copied"] == r["shown_id"]            # its Copy Id put the Id on the clipboard


def test_open_model_shows_the_synthetic_banner(files_report):
    r = files_report
    assert r["banner_before"] == "" and "synthetic data" in r["banner_after"]
    banner = _grab(r, "model", r["banner_rect"])
    # the banner's pale yellow (#fff0c0) fills it on screen; no banner before a model was opened
    assert (np.abs(banner - [255, 240, 192]).sum(-1) < 30).mean() > 0.4
    before = _grab(r, "start", r["banner_rect"])
    assert (np.abs(before - [255, 240, 192]).sum(-1) < 30).mean() < 0.05
    assert r["predicted_after_open"]
    assert not r["model_loaded_on_the_gui_thread"]


def test_dropped_run_replaces_the_model(files_report):
    r = files_report
    assert r["after_drop"] == {"model": None, "run": r["run"]}


def test_tiff_calibration_draws_the_scale_bar(files_report):
    r = files_report
    assert abs(r["tiff_pixel_size"] - UM) < 1e-3
    # a field whose calibrated channels were resized on load: their size scaled to the shown one
    assert abs(r["resized_pixel_size"] - UM) < 1e-3 and "scaled from its 400 px" in r["resized_source"]
    for grab in ("tiff", "resized"):
        image = _grab(r, grab, r["image_rect"])
        white = image.min(-1) > 240
        expected = r["image_rect"][2] * (20 / UM) / SIZE   # a 20 um bar, 30.8 of the 200 image pixels
        assert abs(white.sum(1).max() - expected) <= max(3, 0.1 * expected), (grab, white.sum(1).max(), expected)


def test_open_model_tells_an_image_folder_apart(files_report):
    message = files_report["open_model_on_images"]
    assert "is an image folder, not a model (File > Open image folder opens it)" in message
    assert "\n" not in message and "--" not in message


def test_list_and_channel_rows_fit_at_1400_px(files_report):
    r = files_report
    assert r["selected_text"].count("…") == 1 and r["selected_text_width"] <= r["list_width"]
    assert not r["list_scrolls_sideways"]
    assert all(gap > 0 for gap in r["name_gaps"]), r["name_gaps"]
    assert r["id_tooltip"] == r["shown_id"]        # the full Id, where the row shows it elided
    assert r["count"] == f"{r['listed']} of {r['listed']}"


# ---------------------------------------------------------------------- the driver (xvfb side)
def drive(args):
    from PyQt5 import QtCore, QtGui, QtWidgets
    from PyQt5.QtTest import QTest

    from viewer.__main__ import build, parser

    app, window = build(parser().parse_args(["--data", args.data]))
    x = Driver(app, window, args.out, size=(1400, 860))
    out, rect_of, grab = x.out, x.rect_of, x.grab
    report = {"run": args.run}

    def settle(condition=lambda: True, timeout=60, what="the window"):
        x.wait(condition, what, timeout)

    settle(lambda: window.current.sample is not None, what="the first image")
    report["shown_id"] = window.current.sample_id
    report["banner_before"] = window.provenance_label.text()
    report["banner_rect"] = rect_of(window.provenance_label.parentWidget())
    report["banner_rect"][3] = 40
    # the Id list and the channel rows at 1400 px
    ids = window.id_panel.list
    option = QtWidgets.QStyleOptionViewItem()
    option.initFrom(ids)
    option.state |= QtWidgets.QStyle.State_Selected
    ids.itemDelegate().initStyleOption(option, ids.model().index(ids.currentRow(), 0))
    report["selected_text"] = option.text
    report["selected_text_width"] = ids.fontMetrics().horizontalAdvance(option.text)
    report["list_width"] = ids.viewport().width()
    report["list_scrolls_sideways"] = ids.horizontalScrollBar().maximum() > 0
    report["id_tooltip"] = ids.currentItem().toolTip()
    report["count"], report["listed"] = window.id_panel.count.text(), len(window.session.listed_ids())
    controls = window.channel_controls
    report["name_gaps"] = [low.geometry().left() - check.geometry().right()
                           for check, low in zip(controls.checks, controls.lows)]
    grab("start")

    # right-click on the composite: the viewer's menu, at the click
    panel = window.image_panel
    centre = panel.graphics.mapFromScene(panel.image_item.sceneBoundingRect().center())
    QTest.mouseClick(panel.graphics.viewport(), QtCore.Qt.RightButton, pos=centre)
    settle(lambda: isinstance(app.activePopupWidget(), QtWidgets.QMenu), what="the menu")
    menu = app.activePopupWidget()
    report["menu_entries"] = [a.text() for a in menu.actions()]
    report["pyqtgraph_menu_visible"] = panel.view.menu.isVisible()
    report["menu_rect"] = [menu.geometry().x(), menu.geometry().y(), menu.width(), menu.height()]
    grab("menu")
    menu.actions()[0].trigger()  # Copy Id
    menu.close()
    report["copied"] = app.clipboard().text()
    # the histograms and the chart: no pyqtgraph menu either
    report["other_popups"] = []
    for owner in (window.histogram_panel.plots[0], window.chart):
        view = owner if isinstance(owner, QtWidgets.QGraphicsView) else owner.findChild(QtWidgets.QGraphicsView)
        widget = view.viewport()
        QTest.mouseClick(widget, QtCore.Qt.RightButton, pos=QtCore.QPoint(widget.width() // 2, widget.height() // 2))
        settle()
        popup = app.activePopupWidget()
        report["other_popups"].append(type(popup).__name__ if popup is not None else None)
        if popup is not None:
            popup.close()

    # File > Open model answered with the image folder: refused in one line naming the right menu
    shown = []
    window.show_error = lambda title, message: shown.append(message)  # the dialog, recorded
    QtWidgets.QFileDialog.getExistingDirectory = staticmethod(lambda *a, **k: args.data)
    action = next(a for m in window.menuBar().actions() for a in m.menu().actions() if "Open &model" in a.text())
    action.trigger()
    settle(lambda: shown, what="the refusal")
    report["open_model_on_images"] = shown[0]

    # File > Open model, its dialog answered with the deployment folder
    QtWidgets.QFileDialog.getExistingDirectory = staticmethod(lambda *a, **k: args.model)
    action.trigger()
    report["model_loaded_on_the_gui_thread"] = window.models.model_path is not None  # it is read on the worker
    settle(lambda: window.models.model_path is not None and window.current.probs is not None,
           what="the model's predictions")
    report["banner_after"] = window.provenance_label.text()
    report["predicted_after_open"] = window.current.probs is not None
    grab("model")

    # a training run dropped on the image
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(args.run)])
    target = panel.graphics.viewport()
    pos = QtCore.QPoint(target.width() // 2, target.height() // 2)
    enter = QtGui.QDragEnterEvent(pos, QtCore.Qt.CopyAction, mime, QtCore.Qt.LeftButton, QtCore.Qt.NoModifier)
    app.sendEvent(target, enter)
    drop = QtGui.QDropEvent(QtCore.QPointF(pos), QtCore.Qt.CopyAction, mime, QtCore.Qt.LeftButton, QtCore.Qt.NoModifier)
    app.sendEvent(target, drop)
    settle(lambda: window.models.run_path == args.run and window.models.spec is None, what="the dropped run")
    report["after_drop"] = {"model": window.models.model_path, "run": window.models.run_path}

    # a calibrated TIFF folder: the bar from its tags
    window.open_path(args.tiff, want="images")
    settle(lambda: window.current.sample is not None and window.current.sample_id == "cal", what="the TIFF field")
    report["tiff_pixel_size"] = window.state.pixel_size
    # a black field without the map's contours: only the bar is white
    window.state.update(channels=(False, False, False, False), show_cam=False)
    report["image_rect"] = x.image_rect()
    grab("tiff")
    window.id_panel.select("res")
    settle(lambda: window.current.sample is not None and window.current.sample_id == "res", what="the resized field")
    report["resized_pixel_size"] = window.state.pixel_size
    report["resized_source"] = window.channel_controls.pixel.toolTip()
    grab("resized")
    (out / "report.json").write_text(json.dumps(report))
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(drive(script_args("--data", "--model", "--run", "--tiff").parse_args()))
