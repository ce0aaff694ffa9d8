import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
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
