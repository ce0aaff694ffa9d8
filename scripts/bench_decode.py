#!/usr/bin/env python
"""How decoding scales with cores, per decoder and kind of worker:
bench_decode.py [FOLDER ...] [--channels SINGLE_CHANNEL_PNGS --samples N] (runtime/bench_decode.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.bench_decode import main  # noqa: E402
from runtime.cli import guarded  # noqa: E402

if __name__ == "__main__":
    sys.exit(guarded(main))
