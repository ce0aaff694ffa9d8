"""What the reader's safety checks cost next to decoding, per channel file: the regular-file check
(a stat), the header's decoded-size check and the symlink check (runtime/reader.py) against
OpenCV's decode of the same bytes, timed in interleaved passes (docs/reliability.md quotes the
figures). ``scripts/bench_reader_checks.py PNG_FOLDER [PNG_FOLDER ...]``."""

import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from runtime.cli import ArgumentParser, positive_int
from runtime.reader import ImageFolder, header_size
from runtime.regular import NotRegularFile, check_regular, open_regular


def _regular_pngs(folder, limit):
    """Up to ``limit`` PNG files of ``folder`` (sorted) with their bytes; what is not a regular
    file (a FIFO named x.png) is skipped, never opened."""
    files, blobs = [], []
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".png")):
        try:
            handle, _ = open_regular(Path(folder) / name)
        except NotRegularFile:
            continue
        with handle:
            blobs.append(np.frombuffer(handle.read(), np.uint8))
        files.append(Path(folder) / name)
        if len(files) == limit:
            break
    return files, blobs


def bench_checks(folder, limit=400, repeats=7):
    """(files, decode, checks): median microseconds per file over ``repeats`` interleaved passes."""
    images = ImageFolder(folder)
    files, blobs = _regular_pngs(folder, limit)
    if not files:
        raise ValueError(f"{folder}: no PNG files to time")
    decode, checks = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for blob in blobs:
            cv2.imdecode(blob, cv2.IMREAD_UNCHANGED)
        decode.append(time.perf_counter() - t)
        t = time.perf_counter()
        for blob, path in zip(blobs, files):
            check_regular(images.check_inside(path))
            header_size(blob, path)
        checks.append(time.perf_counter() - t)
    return len(files), *(statistics.median(x) / len(files) * 1e6 for x in (decode, checks))


def main(argv=None):
    p = ArgumentParser(prog="scripts/bench_reader_checks.py",
                       description="what the reader's safety checks cost next to decoding, per channel PNG file")
    p.add_argument("folders", nargs="+", metavar="PNG_FOLDER", help="folders of channel PNG files")
    p.add_argument("--limit", type=positive_int, default=400, help="PNG files timed per folder (default 400)")
    p.add_argument("--repeats", type=positive_int, default=7, help="interleaved passes (default 7)")
    args = p.parse_args(argv)
    for folder in args.folders:
        n, decode, checks = bench_checks(folder, args.limit, args.repeats)
        print(f"{folder}: {n} files; decode {decode:.0f} us/file; checks {checks:.1f} us/file "
              f"= {100 * checks / decode:.1f}% of decode")
    return 0
