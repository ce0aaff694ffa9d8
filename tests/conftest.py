import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# auto's INT8 probe caches its timings (runtime.probe); keep the tests' out of the user's cache
os.environ.setdefault("HPA_TOOLKIT_CACHE", tempfile.mkdtemp(prefix="hpa-toolkit-cache-"))
REAL = ROOT.parent / "shared" / "hpa-real"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny synthetic dataset (48 fields of 64 px) with a held-out test set of 12."""
    from train.synth import generate

    out = tmp_path_factory.mktemp("tiny")
    generate(out, images=48, size=64, seed=3, min_per_class=2, test_images=12, workers=1)
    return out


@pytest.fixture
def real_dir():
    if not REAL.is_dir():
        pytest.skip("shared/hpa-real is not beside this checkout")
    return REAL


TINY_SETTINGS = dict(folds=2, width=8, size=48, epochs=2, batch_size=8, lr=3e-3, seed=1, threads=1)


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """A finished 2-fold run on tiny_data: (run folder, metrics)."""
    from train.config import FitConfig
    from train.fit import fit

    out = tmp_path_factory.mktemp("run")
    metrics = fit(FitConfig(data=str(tiny_data), out=str(out), **TINY_SETTINGS), progress=False)
    return out, metrics


@pytest.fixture(scope="session")
def tiny_deploy(tiny_run, tmp_path_factory):
    """tiny_run exported to ONNX in every precision: (deploy folder, ModelSpec).

    The F1 gate is opened (bound 1.0): on a 1-epoch model a 7-bit INT8 flavour can lose more than
    0.01 macro-F1 on one CPU and not on another, and the tests that use this fixture must choose the
    same files on every machine. test_export checks the gate itself with bounds of its own."""
    from export.pipeline import export_run

    out = tmp_path_factory.mktemp("deploy")
    spec = export_run(tiny_run[0], out, ("fp32", "fp16", "int8"), calib_images=16, report=lambda *_: None,
                      int8_targets=("cpu-vnni", "cpu-avx2", "tensorrt"), max_f1_drop=1.0)
    return out, spec


@pytest.fixture
def make_window(qtbot):
    """Viewer windows for a test (``make(session, sync=True)``), kept referenced until pytest-qt
    has closed them: it keeps only weak references, and a visible window that the cyclic garbage
    collector frees in the middle of a paint event takes the process down."""
    from viewer.app import configure
    from viewer.window import MainWindow

    made = []

    def make(session, sync=True):
        configure()
        win = MainWindow(session, sync=sync)
        qtbot.addWidget(win)
        win.show()
        made.append(win)
        return win

    yield make
