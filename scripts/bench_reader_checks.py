#!/usr/bin/env python
"""What the reader's safety checks cost next to decoding: bench_reader_checks.py PNG_FOLDER [PNG_FOLDER ...]."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.bench_reader import main  # noqa: E402
from runtime.cli import guarded  # noqa: E402

if __name__ == "__main__":
    sys.exit(guarded(main))
