#!/usr/bin/env python
"""What the reader's safety checks cost next to decoding, per channel file:
bench_reader_checks.py FOLDER [FOLDER ...] (PNG folders; at most 400 files each)."""
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.reader import ImageFolder, header_size  # noqa: E402


def bench(folder, limit=400, repeats=7):
    """(decode, checks) median microseconds per file: OpenCV's decode against the header's size
    check and the symlink check, timed in interleaved passes over the same bytes."""
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
    return [statistics.median(x) / len(files) * 1e6 for x in (decode, checks)], len(files)


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        (d, c), n = bench(folder)
        print(f"{folder}: {n} files; decode {d:.0f} us/file; checks {c:.1f} us/file = {100 * c / d:.1f}% of decode")
