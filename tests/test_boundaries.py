"""The layout rules that keep deployment lean, checked in a fresh interpreter."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_MODULES = sorted(p.stem for p in (ROOT / "runtime").glob("*.py") if p.stem not in ("__init__", "__main__"))


def imported_after(statement):
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", RUNTIME_MODULES)
def test_runtime_never_imports_torch_train_or_qt(module):
    loaded = imported_after(f"import runtime.{module}")
    forbidden = {m for m in loaded if m.split(".")[0] in ("torch", "train", "PyQt5", "pyqtgraph", "viewer", "export")}
    assert not forbidden, f"runtime.{module} pulls in {sorted(forbidden)[:5]}"


def test_train_never_imports_qt_or_tensorrt():
    loaded = imported_after("import train.fit, train.synth, train.model")
    assert not {m for m in loaded if m.split(".")[0] in ("PyQt5", "pyqtgraph", "tensorrt", "viewer")}


def test_scripts_are_thin_entry_points():
    for script in (ROOT / "scripts").glob("*.py"):
        code = [line for line in script.read_text().splitlines() if line.strip() and not line.strip().startswith("#")]
        assert len(code) <= 15, f"{script.name} holds logic; move it into a package"
