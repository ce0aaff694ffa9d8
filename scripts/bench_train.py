#!/usr/bin/env python
"""Training images/s and peak memory for the demo settings: python scripts/bench_train.py [--help]."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.cli import guarded  # noqa: E402
from train.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(guarded(main))
