"""What the reader's safety checks cost next to decoding, per channel file: the header's
decoded-size check and the symlink check (runtime/reader.py) against OpenCV's decode of the same
bytes, timed in interleaved passes (docs/reliability.md quotes the figures)."""

import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from runtime.reader import ImageFolder, header_size


def bench_checks(folder, limit=400, repeats=7):
    """(files, decode, checks): median microseconds per file over ``repeats`` interleaved passes."""
    images = ImageFolder(folder)
    files = sorted(Path(folder) / n for n in os.listdir(folder) if n.endswith(".png"))[:limit]
    blobs = [np.fromfile(f, np.uint8) for f in files]
    decode, checks = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for blob in blobs:
            cv2.imdecode(blob, cv2.IMREAD_UNCHANGED)
        decode.append(time.perf_counter() - t)
        t = time.perf_counter()
        for blob, path in zip(blobs, files):
            header_size(blob, path)
            images.check_inside(path)
        checks.append(time.perf_counter() - t)
    return len(files), *(statistics.median(x) / len(files) * 1e6 for x in (decode, checks))


def main(argv=None):
    for folder in sys.argv[1:] if argv is None else argv:
        n, decode, checks = bench_checks(folder)
        print(f"{folder}: {n} files; decode {decode:.0f} us/file; checks {checks:.1f} us/file "
              f"= {100 * checks / decode:.1f}% of decode")
    return 0
