#!/usr/bin/env python
"""Put a split folder back together: merge_dataset.py SPLIT DST [--move]."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.cli import ArgumentParser, dispatch  # noqa: E402
from runtime.split import merge_command  # noqa: E402

parser = ArgumentParser(description=__doc__)
parser.add_argument("src")
parser.add_argument("dst")
parser.add_argument("--move", action="store_true", help="move instead of copy")
parser.set_defaults(command="merge")
sys.exit(dispatch(parser, {"merge": merge_command}))
