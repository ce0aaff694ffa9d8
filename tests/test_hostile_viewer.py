"""The viewer never hangs and never hides a failure: every wait has a bound, an error on a worker
thread reaches the window (status bar, the prediction panel) and, with --screenshot, is one line
``error: ...`` and exit status 2; an empty folder says so. Every test here is bounded: the window
ones by pytest-qt's waitUntil, the command-line ones by a subprocess timeout."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from viewer.session import Session

ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 30000     # the longest a window test waits for a worker's answer
CLI_TIMEOUT_S = 180  # the longest a `python -m viewer --screenshot` may take here


def viewer(*argv, timeout=CLI_TIMEOUT_S):
    """``python -m viewer ...`` offscreen, as make demo runs it: (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-m", "viewer", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(code, err, *says):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for text in says:
        assert text in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------- hostile deployments
def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rehash(folder, spec):
    for entry in spec["files"]:
        path = folder / entry["path"]
        entry["sha256"], entry["bytes"] = _sha256(path), path.stat().st_size
    (folder / "model.json").write_text(json.dumps(spec, indent=2))


@pytest.fixture(scope="module")
def deploy_27_classes(tiny_deploy, tmp_path_factory):
    """tiny_deploy whose every ONNX graph returns 27 classes instead of 28 (model.json's hashes
    updated, so only the output is wrong)."""
    import onnx
    from onnx import helper, numpy_helper
    import numpy as np

    folder = tmp_path_factory.mktemp("deploy27") / "deploy"
    shutil.copytree(tiny_deploy[0], folder)
    spec = json.loads((folder / "model.json").read_text())
    for entry in spec["files"]:
        path = folder / entry["path"]
        if entry["format"] != "onnx":
            continue
        model = onnx.load(str(path))
        graph = model.graph
        for k, out in enumerate(graph.output):
            cut = f"{out.name}__27"
            names = [f"{cut}_{n}" for n in ("starts", "ends", "axes")]
            for name, value in zip(names, (0, 27, 1)):
                graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
            for node in graph.node:
                node.output[:] = [cut if o == out.name else o for o in node.output]
            graph.node.append(helper.make_node("Slice", [cut, *names], [out.name]))
            out.type.tensor_type.shape.dim[1].dim_value = 27
        onnx.save(model, str(path))
    _rehash(folder, spec)
    return folder


@pytest.fixture(scope="module")
def deploy_float_size(tiny_deploy, tmp_path_factory):
    """tiny_deploy whose model.json gives the preprocessing size as a float ("size": 48.0)."""
    folder = tmp_path_factory.mktemp("deployfloat") / "deploy"
    shutil.copytree(tiny_deploy[0], folder)
    spec = json.loads((folder / "model.json").read_text())
    spec["preprocess"]["size"] = float(spec["preprocess"]["size"])
    (folder / "model.json").write_text(json.dumps(spec, indent=2))
    return folder


# ---------------------------------------------------------------------- an empty folder
def test_an_empty_folder_says_so_in_the_window(make_window, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    win = make_window(Session(empty), sync=True)
    assert win.session.listed_ids() == []
    for text in (win.image_panel.caption.text(), win.statusBar().currentMessage(), win.pred_label.text()):
        assert "empty: no images (a sample is four files {Id}_red" in text, text
    assert win.current.sample is None and win.rendered is None


def test_an_empty_folder_refuses_a_screenshot_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = viewer("--data", empty, "--screenshot", tmp_path / "shot")
    assert_one_line_error(code, err, f"error: {empty}: no images", "nothing for --screenshot")
    assert not list(tmp_path.glob("shot*"))


def test_no_folder_at_all_refuses_a_screenshot_in_one_line(tmp_path):
    code, out, err = viewer("--screenshot", tmp_path / "shot")
    assert_one_line_error(code, err, "no image folder", "nothing for --screenshot")
    assert not list(tmp_path.glob("shot*"))


# ---------------------------------------------------------------------- a worker raises
def test_a_model_of_27_classes_fails_in_the_window_not_silently(make_window, tiny_data, deploy_27_classes, qtbot):
    win = make_window(Session(tiny_data / "test", deploy_27_classes), sync=False)
    qtbot.waitUntil(lambda: any(kind == "probs" for kind, _, _ in win.failures), timeout=WAIT_MS)
    assert win.current.sample is not None  # the image itself is shown
    assert "prediction failed" in win.pred_label.text() and "27" in win.pred_label.text()
    qtbot.waitUntil(lambda: "27" in win.statusBar().currentMessage() or "27" in win.id_panel.note.text(),
                    timeout=WAIT_MS)
    assert win.current.probs is None


def test_a_model_of_27_classes_fails_a_screenshot_in_one_line(tiny_data, deploy_27_classes, tmp_path):
    t0 = time.monotonic()
    code, out, err = viewer("--data", tiny_data / "test", "--model", deploy_27_classes, "--screenshot",
                            tmp_path / "shot")
    line = assert_one_line_error(code, err, "model returned (", "27) for a batch of", "--screenshot: predicting")
    assert time.monotonic() - t0 < CLI_TIMEOUT_S and not (tmp_path / "shot-cam.png").exists()


def test_a_float_size_in_model_json_never_hangs_a_screenshot(tiny_data, deploy_float_size, tmp_path):
    # refused when model.json is read, or failing on the worker: either way one line, status 2
    code, out, err = viewer("--data", tiny_data / "test", "--model", deploy_float_size, "--screenshot",
                            tmp_path / "shot")
    assert_one_line_error(code, err)
    assert not (tmp_path / "shot-cam.png").exists()


def test_every_kind_of_worker_failure_reaches_the_window(make_window, tiny_data, tiny_deploy, qtbot, monkeypatch):
    from viewer.session import Models

    def broken(*args, **kwargs):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(Models, "predict", broken)
    monkeypatch.setattr(Models, "cam", broken)
    win = make_window(Session(tiny_data / "test", tiny_deploy[0]), sync=False)
    qtbot.waitUntil(lambda: {"predict", "probs"} <= {kind for kind, _, _ in win.failures}, timeout=WAIT_MS)
    assert "prediction failed: RuntimeError: the model broke" in win.pred_label.text()
    assert "predictions stopped: RuntimeError: the model broke" in win.id_panel.note.text()
    win.state.update(cam_class=0, show_cam=True)
    qtbot.waitUntil(lambda: any(kind == "cam" for kind, _, _ in win.failures), timeout=WAIT_MS)
    assert "CAM failed: RuntimeError: the model broke" in win.image_panel.caption.text()


# ---------------------------------------------------------------------- bounded waits
def test_a_screenshot_whose_image_never_comes_gives_up_in_one_line(tiny_data, tmp_path, monkeypatch, capsys):
    import viewer.__main__ as cli
    import viewer.worker as worker

    release = threading.Event()
    threading.Timer(60, release.set).start()  # a blocked read returns at last even if the bound fails
    real = Session.sample

    def blocked(self, sample_id):
        release.wait(120)
        return real(self, sample_id)

    monkeypatch.setattr(Session, "sample", blocked)
    monkeypatch.setattr(cli, "SCREENSHOT_TIMEOUT_S", 1)
    monkeypatch.setattr(worker, "STOP_WAIT_MS", 200)
    t0 = time.monotonic()
    try:
        code = cli.main(["--data", str(tiny_data / "test"), "--screenshot", str(tmp_path / "shot")])
    finally:
        release.set()
    assert time.monotonic() - t0 < 30
    assert_one_line_error(code, capsys.readouterr().err, "--screenshot: gave up after waiting 1 s for the image")
    assert worker.stuck  # the thread blocked in its read was not waited for forever
    worker.stuck[-1][0].wait(10000)
    worker.stuck.clear()


def test_closing_the_window_does_not_wait_forever_for_a_blocked_worker(make_window, tiny_data, monkeypatch, qtbot):
    import viewer.worker as worker

    release = threading.Event()
    threading.Timer(60, release.set).start()
    monkeypatch.setattr(worker, "STOP_WAIT_MS", 200)
    win = make_window(Session(tiny_data / "test"), sync=False)
    qtbot.waitUntil(lambda: win.current.sample is not None, timeout=WAIT_MS)
    win.images.request("load", lambda: (None, "", release.wait(120)))  # a load answer, for no session
    t0 = time.monotonic()
    try:
        win.close()
    finally:
        release.set()
    assert time.monotonic() - t0 < 10
    assert worker.stuck
    worker.stuck[-1][0].wait(10000)
    worker.stuck.clear()


# ---------------------------------------------------------------------- a FIFO among the images
@pytest.fixture
def folder_with_fifo(tiny_data, tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    folder = tmp_path / "test"
    shutil.copytree(tiny_data / "test", folder)
    shutil.copy(tiny_data / "test_labels.csv", tmp_path / "test_labels.csv")
    ids = sorted({p.name.rsplit("_", 1)[0] for p in folder.glob("*.png")})
    fifo = ids[2]
    (folder / f"{fifo}_red.png").unlink()
    os.mkfifo(folder / f"{fifo}_red.png")  # opening it for reading would block until a writer comes
    return folder, ids, fifo


def test_a_fifo_channel_is_that_samples_error_and_the_viewer_goes_on(make_window, folder_with_fifo, qtbot):
    folder, ids, fifo = folder_with_fifo
    win = make_window(Session(folder), sync=False)
    assert fifo in win.session.listed_ids()
    win.id_panel.select(fifo)
    qtbot.waitUntil(lambda: fifo in win.unreadable, timeout=WAIT_MS)
    assert "red" in win.unreadable[fifo] and win.current.sample is None
    assert "cannot be shown" in win.image_panel.caption.text()
    shown = win.visible_ids()
    win.go(1)  # the next Id still loads
    qtbot.waitUntil(lambda: win.current.sample is not None, timeout=WAIT_MS)
    assert win.state.sample_id == shown[shown.index(fifo) + 1]


def test_a_fifo_channel_never_hangs_a_screenshot(folder_with_fifo, tiny_deploy, tmp_path):
    folder, ids, fifo = folder_with_fifo
    code, out, err = viewer("--data", folder, "--model", tiny_deploy[0], "--screenshot", tmp_path / "shot")
    assert code == 0 and "Traceback" not in err, err
    assert (tmp_path / "shot-composite.png").is_file() and (tmp_path / "shot-cam.png").is_file()


# ---------------------------------------------------------------------- the same in a real X window
@pytest.mark.parametrize("case", ["empty-folder", "27-classes"])
def test_a_failing_screenshot_in_a_real_window_is_one_line(case, tiny_data, deploy_27_classes, tmp_path):
    # as tests/test_viewer_window.py runs it: Xvfb with Mesa, the screen grabbed rather than rendered
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (make xvfb installs it on Debian/Ubuntu as root)")
    if case == "empty-folder":
        data, model, says = tmp_path / "empty", [], "no images"
        data.mkdir()
    else:
        data, model, says = tiny_data / "test", ["--model", str(deploy_27_classes)], "27) for a batch of"
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "QT_XCB_GL_INTEGRATION")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, "-m", "viewer",
                           "--data", str(data), *model, "--screenshot", str(tmp_path / "shot")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=CLI_TIMEOUT_S)
    assert_one_line_error(proc.returncode, proc.stderr, says, "--screenshot")
    assert not (tmp_path / "shot-cam.png").exists()


# ---------------------------------------------------------------------- bad samples first in line
@pytest.mark.parametrize("bad", [1, "all"])
def test_a_screenshot_skips_unreadable_samples(bad, tiny_data, tiny_deploy, tmp_path):
    # the first labelled samples unreadable: the screenshots show the first one that reads; a
    # folder where none reads is one line naming the first
    folder = tmp_path / "test"
    shutil.copytree(tiny_data / "test", folder)
    shutil.copy(tiny_data / "test_labels.csv", tmp_path / "test_labels.csv")
    ids = sorted({p.name.rsplit("_", 1)[0] for p in folder.glob("*.png")})
    for sample_id in ids if bad == "all" else ids[:bad]:
        (folder / f"{sample_id}_green.png").write_bytes(b"not a png")
    code, out, err = viewer("--data", folder, "--model", tiny_deploy[0], "--screenshot", tmp_path / "shot")
    if bad == "all":
        assert_one_line_error(code, err, "--screenshot: none of the first", f"{ids[0]} was the first")
        assert not (tmp_path / "shot-composite.png").exists()
    else:
        assert code == 0 and "Traceback" not in err, err
        assert (tmp_path / "shot-composite.png").stat().st_size > 0 and (tmp_path / "shot-cam.png").exists()
