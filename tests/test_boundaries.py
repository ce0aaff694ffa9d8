"""The layout rules, as static import contracts (pyproject.toml [tool.importlinter]): every module,
imports inside functions included, is checked by import-linter."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "train", "export", "viewer")


def lint_imports(cwd):
    exe = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True)


def test_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_function_level_torch_import_in_runtime_breaks_the_contract(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "sample"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "runtime" / "sneaky.py").write_text("def f():\n    import torch\n    return torch\n")
    (tmp_path / "train" / "sneaky.py").write_text("def f():\n    from train import fit\n")  # train.fit -> ... -> fit
    (tmp_path / "train" / "fit.py").write_text((ROOT / "train" / "fit.py").read_text() + "\nfrom train import sneaky\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "runtime.sneaky -> torch" in result.stdout
    assert "No cycles are allowed in train" in result.stdout


def test_scripts_are_thin_entry_points():
    for script in (ROOT / "scripts").glob("*.py"):
        code = [line for line in script.read_text().splitlines() if line.strip() and not line.strip().startswith("#")]
        assert len(code) <= 15, f"{script.name} holds logic; move it into a package"
