#!/usr/bin/env python
"""Split SRC into numbered sub-folders of at most N samples: split_dataset.py SRC DST --per-dir N [--move] [--dry-run]."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.cli import ArgumentParser, dispatch, positive_int  # noqa: E402
from runtime.split import split_command  # noqa: E402

parser = ArgumentParser(description=__doc__)
parser.add_argument("src")
parser.add_argument("dst")
parser.add_argument("--per-dir", type=positive_int, required=True)
parser.add_argument("--move", action="store_true", help="move instead of copy")
parser.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
parser.set_defaults(command="split")
sys.exit(dispatch(parser, {"split": split_command}))
