"""The viewer under pytest-qt with QT_QPA_PLATFORM=offscreen (set in conftest); workers run
synchronously. The real X window (Xvfb, Mesa GL) is tests/test_viewer_window.py."""

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PyQt5 import QtCore, QtWidgets

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from runtime.composite import composite
from viewer.app import configure
from viewer.cam_request import CAM_METHODS
from viewer.session import Models, Session
from viewer.state import ViewerState
from viewer.window import MainWindow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def window(qtbot, tiny_data, tiny_deploy, tiny_run):
    configure()
    win = MainWindow(Session(tiny_data / "test", tiny_deploy[0], tiny_run[0]), sync=True)
    qtbot.addWidget(win)
    win.show()
    return win


def _broken_copy(tiny_data, tmp_path, index=1):
    folder = tmp_path / "test"
    shutil.copytree(tiny_data / "test", folder)
    ids = sorted({p.name.rsplit("_", 1)[0] for p in folder.glob("*.png")})
    data = (folder / f"{ids[index]}_green.png").read_bytes()
    (folder / f"{ids[index]}_green.png").write_bytes(data[: len(data) // 3])
    return folder, ids


# ---------------------------------------------------------------------- state and layering
def test_state_notifies_and_checks_values():
    state = ViewerState()
    seen = []
    unsubscribe = state.subscribe(seen.append)
    state.toggle_channel(1)
    assert state.channels == (True, False, True, True) and seen == [{"channels"}]
    assert state.update(channels=(True, False, True, True)) == set()  # no change, no call
    unsubscribe()
    state.set_level(0, 10, 20)
    assert len(seen) == 1
    for bad in (dict(cam_method="nope"), dict(cam_class=28), dict(cam_class=-2), dict(gammas=(1, 0, 1, 1)),
                dict(levels=((5, 5),) * 4), dict(cam_style="inferno"), dict(nonsense=1)):
        with pytest.raises(ValueError):
            state.update(**bad)


def test_qt_free_and_torch_free_modules():
    # viewer.state/session/render/cam_request are the Qt-free core; the window never needs torch
    # (only viewer.cam and viewer.score_cam import it, when a CAM is asked for).
    code = ("import sys; import viewer.state, viewer.session, viewer.render, viewer.cam_request; "
            "a = {m.split('.')[0] for m in sys.modules}; import viewer.window; b = {m.split('.')[0] for m in sys.modules}; "
            "print(sorted(a & {'PyQt5', 'pyqtgraph', 'torch'}), sorted(b & {'torch', 'pytorch_grad_cam'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "[]"], out.stdout


def test_only_the_cam_modules_import_torch():
    allowed = {"cam.py", "score_cam.py"}
    heavy = ("import torch", "from torch", "pytorch_grad_cam", "train.checkpoint", "train.model")
    for path in (ROOT / "viewer").glob("*.py"):
        text = path.read_text()
        if path.name not in allowed:
            assert not any(h in text for h in heavy), f"viewer/{path.name} imports torch-side code"


# ---------------------------------------------------------------------- list, moving, filters
def test_opens_folder_and_moves_from_anywhere(window, qtbot):
    ids = window.session.ids
    assert len(ids) == 12 and window.state.sample_id == ids[0]
    assert window.current.sample is not None and window.current.probs.shape == (NUM_CLASSES,)
    spin = window.channel_controls.lows[1]
    spin.setFocus()
    value = spin.value()
    qtbot.keyClick(spin, QtCore.Qt.Key_Down, QtCore.Qt.ControlModifier)   # application-wide Ctrl+Down
    assert window.state.sample_id == ids[1] and spin.value() == value
    qtbot.keyClick(window.cam_controls.method, QtCore.Qt.Key_Up, QtCore.Qt.ControlModifier)
    assert window.state.sample_id == ids[0]
    window.id_panel.list.setFocus()
    qtbot.keyClick(window.id_panel.list, QtCore.Qt.Key_Down)             # plain Down in the list
    assert window.state.sample_id == ids[1]
    window.go(10)
    assert window.state.sample_id == ids[11]
    window.go(-100)
    assert window.state.sample_id == ids[0]


def test_shortcuts_are_listed_under_help(window):
    from viewer.shortcuts import SHORTCUTS, shortcuts_html

    html = shortcuts_html()
    for entry in SHORTCUTS:
        assert entry.keys[0] in html
    actions = {a.text(): a for m in window.menuBar().actions() for a in m.menu().actions()}
    assert actions["&Next image"].shortcut().toString() == "Ctrl+Down"
    assert all(a.shortcutContext() == QtCore.Qt.ApplicationShortcut for a in actions.values())


def test_filters(window):
    window.id_panel.search.setText(window.session.ids[3][:8])
    assert window.session.ids[3] in window.visible_ids() and len(window.visible_ids()) < 12
    window.id_panel.search.setText("")
    cls = window.session.labels[window.session.ids[0]][0]
    window.id_panel.gt_filter.setCurrentIndex(cls + 1)
    visible = window.visible_ids()
    assert visible and all(cls in window.session.labels[i] for i in visible)
    window.id_panel.gt_filter.setCurrentIndex(0)
    assert len(window.predictions) == 12
    window.id_panel.errors_only.setChecked(True)
    wrong = [i for i in window.session.ids
             if sorted(window.session.labels[i]) != window.models.predicted(window.predictions[i])]
    assert wrong and window.visible_ids() == wrong


def test_prediction_filters_say_they_are_waiting(make_window, tiny_data, tiny_deploy, monkeypatch):
    monkeypatch.setattr(MainWindow, "_predict_next_chunk", lambda self: None)  # predictions never arrive
    win = make_window(Session(tiny_data / "test", tiny_deploy[0]))
    assert not win.id_panel.note.isVisibleTo(win)
    win.id_panel.pred_filter.setCurrentIndex(1)
    assert win.id_panel.note.isVisibleTo(win) and "waiting for predictions" in win.id_panel.note.text()


def test_a_broken_image_is_one_entry(make_window, tiny_data, tiny_deploy, tmp_path):
    folder, ids = _broken_copy(tiny_data, tmp_path)
    win = make_window(Session(folder, tiny_deploy[0]))
    assert len(win.predictions) == 11 and set(win.unreadable) == {ids[1]}   # the others are predicted
    item = win.id_panel.list.item(1)
    assert not item.icon().isNull() and "truncated" in item.toolTip()
    win.id_panel.errors_only.setChecked(True)
    assert ids[1] not in win.visible_ids() and "1 unreadable" in win.id_panel.note.text()
    win.id_panel.errors_only.setChecked(False)
    win.id_panel.pred_filter.setCurrentIndex(1 + win.models.predicted(win.predictions[ids[0]])[0])
    assert win.visible_ids()


def test_failed_load_clears_the_previous_image(make_window, tiny_data, tiny_deploy, tmp_path):
    folder, ids = _broken_copy(tiny_data, tmp_path)
    win = make_window(Session(folder, tiny_deploy[0]))
    assert win.image_panel.image_item.image is not None
    win.go(1)
    assert win.state.sample_id == ids[1] and win.current.sample is None
    assert "truncated" in win.statusBar().currentMessage()
    assert win.image_panel.image_item.image is None
    assert all(item.image is None for item in win.image_panel.channel_items)
    assert not np.asarray(win.chart.bars.opts["width"]).any()
    assert ids[1] in win.pred_label.text() and ids[0] not in win.pred_label.text()
    win.go(1)
    assert win.state.sample_id == ids[2] and win.current.sample is not None and win.current.probs is not None


def test_ids_missing_a_channel_are_listed_with_the_reason(make_window, tiny_data, tmp_path):
    folder = tmp_path / "test"
    shutil.copytree(tiny_data / "test", folder)
    ids = sorted({p.name.rsplit("_", 1)[0] for p in folder.glob("*.png")})
    (folder / f"{ids[2]}_yellow.png").unlink()
    win = make_window(Session(folder))
    assert ids[2] in win.session.listed_ids() and ids[2] not in win.session.ids
    win.id_panel.select(ids[2])
    assert "missing yellow" in win.statusBar().currentMessage()
    assert "yellow" in win.id_panel.list.item(2).toolTip()


def test_open_folder_keeps_the_model(window, tiny_data, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_data / "test", other)
    models = window.models
    window.open_folder(other)
    assert window.models is models and window.session.dataset.path == other
    assert window.current.probs is not None and len(window.predictions) == 12
    assert window.current.cam is not None


# ---------------------------------------------------------------------- drawing
def test_green_off_means_no_green(window):
    on = window.rendered.astype(int)
    assert (on[..., 1] > on[..., 0]).any()  # green patterns show as green
    window.state.toggle_channel(1)
    expected = composite(window.current.sample, (True, False, True, True), window.state.levels)
    np.testing.assert_array_equal(window.rendered, expected)
    assert not window.channel_controls.checks[1].isChecked()
    assert window.image_panel.channel_labels[1].textItem.toPlainText() == "green (off)"


def test_contrast_and_gamma_brighten_a_channel(window):
    window.state.update(contrast_mode="manual", levels=((0.0, 255.0),) * 4)
    before = window.rendered[..., 2].astype(float).mean()
    window.channel_controls.highs[2].setValue(60)
    assert window.state.levels[2] == (0.0, 60.0) and window.state.contrast_mode == "manual"
    brighter = window.rendered[..., 2].astype(float).mean()
    assert brighter > before
    window.channel_controls.gammas[2].setValue(0.5)
    assert window.state.gammas[2] == 0.5 and window.rendered[..., 2].astype(float).mean() > brighter
    window.auto_contrast()
    assert all(high > low for low, high in window.state.levels) and window.state.contrast_mode == "per image"


def test_zoom_survives_channel_contrast_and_cam_changes(window):
    view = window.image_panel.view
    view.scaleBy((0.5, 0.5))
    before = view.viewRange()
    window.state.toggle_channel(0)
    window.state.set_level(1, 0, 100)
    window.state.update(cam_method="layercam", cam_class=3)
    np.testing.assert_allclose(view.viewRange(), before)
    window.go(1)                                   # same image size: the view stays
    np.testing.assert_allclose(view.viewRange(), before)
    window.reset_view()
    assert not np.allclose(view.viewRange(), before)


def test_pixel_readout_shows_the_four_channels(window):
    sample = window.current.sample
    window._show_pixel(5, 7)
    text = window.pixel_label.text()
    assert text.startswith("x 5, y 7") and f"G {sample[7, 5, 1]}" in text and "CAM" in text


def test_chart_has_28_labelled_rows(window):
    window.resize(1000, 650)
    window.chart.plot.repaint()
    labels = window.chart.tick_labels()
    assert [t for t, _ in labels] == [f"{c} {n}" for c, n in enumerate(CLASS_NAMES)]
    rects = [r for _, r in labels]
    assert all(a.bottom() <= b.top() + 0.5 for a, b in zip(rects, rects[1:]))   # no two overlap


# ---------------------------------------------------------------------- CAM in the window
@pytest.mark.parametrize("method", CAM_METHODS)
def test_cam_for_a_chosen_class(window, method):
    window.state.update(cam_class=5, cam_method=method)
    cam = window.current.cam
    assert cam.shape == window.current.sample.shape[:2] and window.current.cam_key[1:3] == (5, method)
    assert 0 <= cam.min() and cam.max() <= 1 + 1e-6 and cam.std() > 0
    assert window.image_panel.overlay_item.isVisible()
    ensemble = window.current.probs.copy()
    window.state.update(cam_fold="fold1")
    assert window.current.cam_key[3] == "fold1" and window.current.cam.shape == cam.shape
    assert not np.allclose(window.current.probs, ensemble)  # the bars now show fold 1 alone
    np.testing.assert_allclose(window.current.probs,
                               window.models.predict([window.current.sample], "fold1")[0], rtol=1e-5)


def test_fold_bars_use_that_folds_thresholds(window, tiny_run):
    from train.run import Run

    window.state.update(cam_fold="fold1")
    views = window.models.views
    expected = Run(tiny_run[0]).thresholds().for_views(views, fold=1)
    np.testing.assert_allclose(window.chart.threshold_marks.getData()[0], expected)
    window.state.update(cam_fold="mean")
    # the ensemble's thresholds are those of the file that runs: auto may take the INT8 file (its
    # own thresholds) when its timing probe finds it faster, which a loaded machine can flip
    running = window.models._backends["mean"].file
    np.testing.assert_allclose(window.chart.threshold_marks.getData()[0],
                               window.models.spec.thresholds_for(views, running)[0])


def test_overlay_is_cleared_when_the_image_changes(window, monkeypatch):
    assert window.image_panel.overlay_item.isVisible()
    seen = []
    original = window.cams.request
    monkeypatch.setattr(window.cams, "request", lambda kind, fn, **kw: (
        kind == "cam" and seen.append(window.image_panel.overlay_item.isVisible())) or original(kind, fn, **kw))
    window.go(1)
    assert seen == [False]   # the old map was gone before the new one was asked for


def test_map_of_an_unpredicted_class_is_dimmed_and_labelled(window):
    predicted = window.models.predicted(window.current.probs)
    other = next(c for c in range(NUM_CLASSES) if c not in predicted)
    window.state.update(cam_class=predicted[0])
    assert window.overlay_opacity() == pytest.approx(window.state.cam_opacity)
    window.state.update(cam_class=other)
    # dimmed, yet still visible (0.35 of the slider's opacity left the heat map nearly invisible)
    assert 0.5 * window.state.cam_opacity <= window.overlay_opacity() < 0.75 * window.state.cam_opacity
    assert "not predicted" in window.image_panel.caption.text()
    assert f"p {window.current.probs[other]:.2f}" in window.image_panel.caption.text()


def test_bad_cam_requests_raise(tiny_deploy, tiny_run, tiny_data):
    models = Models(tiny_deploy[0], tiny_run[0])
    sample = Session(tiny_data / "test").sample(Session(tiny_data / "test").ids[0])
    for cls, method, fold in ((28, "gradcam", "mean"), (-1, "gradcam", "mean"), (3, "nope", "mean"), (3, "gradcam", "fold7")):
        with pytest.raises(ValueError):
            models.cam(sample, cls, method, fold)
    models.close()


def test_checkpoint_sha256_is_checked(tiny_deploy, tiny_data, tmp_path):
    import json

    from runtime.errors import DataError

    deploy = tmp_path / "deploy"
    shutil.copytree(tiny_deploy[0], deploy)
    spec = json.loads((deploy / "model.json").read_text())
    spec["checkpoints"][0]["sha256"] = "0" * 64
    (deploy / "model.json").write_text(json.dumps(spec))
    models = Models(deploy)
    with pytest.raises(DataError, match="sha256"):
        models.cam_models()
    models.close()


# ---------------------------------------------------------------------- export
def test_export_view_and_image(window, tmp_path):
    path = window.export_view(tmp_path / "view.png")
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 5
    written = window.export_image(tmp_path / "field")
    shown, cam = (cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in written)
    h, w = window.current.sample.shape[:2]
    assert shown.shape == (h, w, 3) and cam.shape == (h, w)
    assert not np.array_equal(shown[..., ::-1], window.rendered)   # the overlay is in it
    np.testing.assert_allclose(cam / 255.0, window.current.cam, atol=1 / 255)
    window.state.update(show_cam=False)
    (only,) = window.export_image(tmp_path / "plain.png")
    np.testing.assert_array_equal(cv2.imread(str(only))[..., ::-1], window.rendered)


def test_export_errors_go_to_a_dialog(window, tmp_path, monkeypatch, capsys):
    shown = []
    monkeypatch.setattr(window, "show_error", lambda title, message: shown.append((title, message)))
    target = tmp_path / "no-such-folder" / "x.png"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    window._export_image_dialog()
    window._export_view_dialog()
    assert [t for t, _ in shown] == ["Export image", "Export view"]
    assert "No such file or directory" in shown[0][1] or "no-such-folder" in shown[0][1]
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------------- threads, sample, CLI
def test_workers_run_off_the_gui_thread_and_drop_stale_results(qtbot, make_window, tiny_data):
    win = make_window(Session(tiny_data / "test"), sync=False)
    ids = win.session.ids
    win.state.update(sample_id=ids[3])
    win.state.update(sample_id=ids[4])  # supersedes the request for ids[3]
    qtbot.waitUntil(lambda: win.current.sample is not None and win.state.sample_id == ids[4], timeout=10000)
    np.testing.assert_array_equal(win.current.sample, win.session.sample(ids[4]))


def test_superseded_requests_are_skipped(qtbot):
    from viewer.worker import Worker

    worker = Worker(sync=False)
    ran, results = [], []
    worker.result.connect(lambda rid, kind, value: results.append(value))
    gate = threading.Event()
    worker.request("slow", lambda: gate.wait(5))
    first = worker.request("load", lambda: ran.append(1) or 1)
    second = worker.request("load", lambda: ran.append(2) or 2)
    assert not worker.is_latest(first, "load") and worker.is_latest(second, "load")
    gate.set()
    qtbot.waitUntil(lambda: 2 in results, timeout=5000)
    assert ran == [2]
    worker.stop()


def test_bundled_real_sample_opens():
    from viewer.__main__ import SAMPLE

    session = Session(SAMPLE)
    assert session.ids == ["57_F11_1"]
    assert session.sample("57_F11_1").shape == (512, 512, 4)
    assert (SAMPLE / "NOTICE.md").read_text().count("CC BY-SA 3.0") >= 1


def test_screenshot_mode_for_make_demo(qtbot, tiny_data, tiny_deploy, tiny_run, tmp_path):
    from viewer.__main__ import main

    prefix = tmp_path / "viewer"
    assert main(["--data", str(tiny_data / "test"), "--model", str(tiny_deploy[0]), "--run", str(tiny_run[0]),
                 "--screenshot", str(prefix)]) == 0
    plain, cam = (cv2.imread(f"{prefix}-{n}.png") for n in ("composite", "cam"))
    assert plain.shape == cam.shape and (np.abs(plain.astype(int) - cam).sum(-1) > 60).mean() > 0.002


def test_bad_arguments_are_one_line(capsys):
    from viewer.__main__ import main

    assert main(["--data", "/no/such/folder"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: /no/such/folder") and "Traceback" not in err


def test_id_list_shows_full_ids_a_count_and_keeps_the_selection_visible(qtbot):
    from viewer.id_list import IdPanel

    panel = IdPanel()
    qtbot.addWidget(panel)
    long_id = "plate07_well_B12_field_004_" + "x" * 40
    ids = [f"id{n:03d}" for n in range(200)] + [long_id]
    panel.set_ids(ids)
    assert panel.count.text() == "201 of 201"
    item = panel.list.item(200)
    assert item.text() == long_id and item.toolTip() == long_id
    assert panel.list.textElideMode() == QtCore.Qt.ElideMiddle
    panel.search.setText("id00")
    panel.apply({}, {}, {}, 0)
    assert panel.count.text() == "10 of 201"
    panel.search.setText("")
    panel.apply({}, {}, {}, 0)
    panel.resize(200, 150)
    panel.show()
    panel.select(long_id)
    QtWidgets.QApplication.processEvents()
    rect = panel.list.visualItemRect(panel.list.item(200))
    assert panel.list.viewport().rect().intersects(rect)


def test_a_filter_hiding_the_shown_id_jumps_to_and_loads_the_first_id_it_keeps(window):
    ids = window.session.ids
    window.id_panel.select(ids[0])
    window.id_panel.search.setText(ids[-1])
    assert window.id_panel.current_id() == ids[-1]
    assert window.current.sample_id == ids[-1]
    assert window.id_panel.count.text() == f"1 of {len(ids)}"


def test_a_run_folder_given_as_the_model_says_to_open_it_as_the_run(tiny_run):
    with pytest.raises(Exception, match="training run folder: open it as the run"):
        Models(tiny_run[0], None)


def test_a_long_caption_is_read_in_full_and_never_moves_the_image(window, qtbot):
    """The 'not predicted ... overlay dimmed' caption once wrapped to two lines and pushed the image
    down by about 15 px, then was cut at the panel's edge on one line. It wraps onto two lines of
    a fixed height now: shown whole where two lines hold it, elided at the end (the whole text in
    its tooltip) where they do not, and the image stays where it was either way."""
    panel = window.image_panel
    panel.set_caption("short")
    qtbot.wait(50)
    top, height = panel.graphics.geometry().top(), panel.caption.height()
    two_lines = ("LayerCAM of 11 Intermediate filaments [missed] (mean of 2 folds, 4 views): "
                 "<span style='color:#c08000'>not predicted (p 0.51 &le; threshold 0.53); overlay dimmed</span>")
    panel.set_caption(two_lines)
    qtbot.wait(50)
    assert panel.caption.text() == two_lines and not panel.caption.elided()
    assert panel.caption.heightForWidth(panel.caption.width()) <= panel.caption.height()
    long_text = "LayerCAM of 27 Rods &amp; rings: not predicted (p 0.01 &lt; threshold 0.40); overlay dimmed " * 4
    panel.set_caption(long_text)
    qtbot.wait(50)
    assert panel.caption.elided() and panel.caption.text().endswith("…")
    assert panel.caption.heightForWidth(panel.caption.width()) <= panel.caption.height()
    assert panel.caption.height() == height
    assert panel.graphics.geometry().top() == top
    assert panel.caption.toolTip() == long_text
