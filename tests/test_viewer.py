"""The viewer under pytest-qt with QT_QPA_PLATFORM=offscreen (set in conftest)."""

import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PyQt5 import QtCore

from runtime.composite import composite
from viewer.app import configure
from viewer.session import Session
from viewer.state import ViewerState
from viewer.window import MainWindow


@pytest.fixture
def window(qtbot, tiny_data, tiny_deploy, tiny_run):
    configure()
    win = MainWindow(Session(tiny_data / "test", tiny_deploy[0], tiny_run[0]), sync=True)
    qtbot.addWidget(win)
    win.show()
    return win


def test_state_is_qt_free_and_notifies():
    state = ViewerState()
    seen = []
    unsubscribe = state.subscribe(seen.append)
    state.toggle_channel(1)
    assert state.channels == (True, False, True, True) and seen == [{"channels"}]
    assert state.update(channels=(True, False, True, True)) == set()  # no change, no call
    unsubscribe()
    state.set_level(0, 10, 20)
    assert len(seen) == 1
    with pytest.raises(ValueError, match="unknown CAM method"):
        state.update(cam_method="nope")
    assert "PyQt5" not in ViewerState.__module__


def test_opens_folder_and_moves_through_the_list(window, qtbot):
    ids = window.session.ids
    assert len(ids) == 12 and window.state.sample_id == ids[0]
    assert window.sample is not None and window.probs.shape == (28,)
    window.setFocus()
    qtbot.keyClick(window, QtCore.Qt.Key_Down)
    assert window.state.sample_id == ids[1]
    window.move(10)
    assert window.state.sample_id == ids[11]
    window.move(-100)
    assert window.state.sample_id == ids[0]


def test_filters(window):
    window.search.setText(window.session.ids[3][:8])
    assert window.session.ids[3] in window.visible_ids() and len(window.visible_ids()) < 12
    window.search.setText("")
    cls = window.session.labels[window.session.ids[0]][0]
    window.gt_filter.setCurrentIndex(cls + 1)
    visible = window.visible_ids()
    assert visible and all(cls in window.session.labels[i] for i in visible)
    window.gt_filter.setCurrentIndex(0)
    window.errors_only.setChecked(True)
    for sample_id in window.visible_ids():
        assert sorted(window.session.labels[sample_id]) != window.session.predicted(window.all_predictions[sample_id])


def test_green_off_means_no_green(window):
    on = window.rendered.astype(int)
    assert (on[..., 1] > on[..., 0]).any()  # green patterns show as green
    window.state.toggle_channel(1)
    off = window.rendered.astype(int)
    # without green, the green plane only carries yellow (red + green), so it never exceeds red
    assert (off[..., 1] <= off[..., 0]).all()
    np.testing.assert_array_equal(window.rendered, composite(window.sample, (True, False, True, True)))
    assert not window.channel_checks[1].isChecked()


def test_contrast_level_brightens_a_channel(window):
    before = window.rendered[..., 2].astype(float).mean()
    window.level_high[2].setValue(60)
    assert window.state.levels[2] == (0.0, 60.0)
    assert window.rendered[..., 2].astype(float).mean() > before
    window.auto_contrast()
    assert all(high > low for low, high in window.state.levels)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "cbam-attention"])
def test_cam_for_a_chosen_class(window, method):
    window.state.update(cam_class=5, cam_method=method)
    assert window.cam.shape == window.sample.shape[:2]
    assert window.cam.std() > 0 and 0 <= window.cam.min() and window.cam.max() <= 1 + 1e-6
    ensemble = window.probs.copy()
    window.state.update(cam_fold="fold1")
    assert window.cam.shape == window.sample.shape[:2]
    assert not np.allclose(window.probs, ensemble)  # the bars now show fold 1 alone
    np.testing.assert_allclose(window.probs, window.session.predict(window.state.sample_id, "fold1"))


def test_corrupt_image_shows_an_error_and_the_viewer_keeps_working(qtbot, tiny_data, tiny_deploy, tmp_path):
    configure()
    folder = tmp_path / "test"
    shutil.copytree(tiny_data / "test", folder)
    ids = sorted({p.name.rsplit("_", 1)[0] for p in folder.glob("*.png")})
    data = (folder / f"{ids[1]}_green.png").read_bytes()
    (folder / f"{ids[1]}_green.png").write_bytes(data[: len(data) // 3])
    win = MainWindow(Session(folder, tiny_deploy[0]), sync=True)
    qtbot.addWidget(win)
    win.move(1)
    assert win.state.sample_id == ids[1] and win.sample is None
    assert "truncated" in win.statusBar().currentMessage()
    win.move(1)
    assert win.state.sample_id == ids[2] and win.sample is not None and win.probs is not None


def test_export_view_writes_the_screen(window, tmp_path):
    path = window.export_view(tmp_path / "view.png")
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 5


def test_worker_runs_off_the_gui_thread_and_drops_stale_results(qtbot, tiny_data):
    configure()
    win = MainWindow(Session(tiny_data / "test"), sync=False)
    qtbot.addWidget(win)
    ids = win.session.ids
    win.state.update(sample_id=ids[3])
    win.state.update(sample_id=ids[4])  # supersedes the request for ids[3]
    qtbot.waitUntil(lambda: win.sample is not None and win.state.sample_id == ids[4], timeout=10000)
    np.testing.assert_array_equal(win.sample, win.session.sample(ids[4]))
    win.close()


def test_bundled_real_sample_opens():
    from viewer.__main__ import SAMPLE

    session = Session(SAMPLE)
    assert session.ids == ["57_F11_1"]
    assert session.sample("57_F11_1").shape == (512, 512, 4)
    assert (SAMPLE / "NOTICE.md").read_text().count("CC BY-SA 3.0") >= 1


def test_pointing_game_scores(tiny_run, tiny_data):
    from viewer.score_cam import format_scores, pointing_game

    results = pointing_game(tiny_run[0], tiny_data, ("gradcam", "layercam"), limit=4)
    for r in results.values():
        assert r["pairs"] >= 4 and 0 <= r["overall"] <= 1
    assert "overall" in format_scores(results)


def test_real_window_under_xvfb(tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run not installed (apt-get install xvfb)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "QT_QPA_PLATFORM"}
    out = subprocess.run(["xvfb-run", "-a", sys.executable, "-m", "viewer", "--sample", "--screenshot",
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert cv2.imread(str(tmp_path / "x-composite.png")) is not None
