"""Decoding is the end-to-end bottleneck (four PNG decodes per sample): decode and preprocess on a
pool of threads (OpenCV releases the GIL) feeding a bounded window, so the model never waits
while decoding can keep up. Batches come out in input order; a bad sample becomes an error
record and never shifts another sample's result."""

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from runtime.errors import DataError
from runtime.preprocess import image_chw

# Decode threads by default: one per core, at least 4. Decoding scales with cores (16 threads on a
# 16-core GPU host decoded 353 real-size samples/s, and set the pace of the whole GPU pipeline);
# on a 2-core CPU 4 threads keep decoding ahead of the model (docs/benchmarks.md).
DEFAULT_WORKERS = max(4, os.cpu_count() or 1)


@dataclass
class Batch:
    ids: list          # Ids in this batch that decoded
    images: np.ndarray  # uint8 (len(ids), 4, S, S): resized, channels first, not normalised
    errors: list       # (Id, file, reason) for the Ids of this stretch that could not be read


def _load(folder, pp, sample_id):
    try:
        return image_chw(folder.read(sample_id), pp)
    except DataError as err:
        return err


def decoded_batches(folder, ids, pp, batch_size, workers=4, prefetch_batches=3):
    """Yield Batch objects in order. ``workers=0`` decodes sequentially in the caller's thread."""
    if workers <= 0:
        yield from _sequential(folder, ids, pp, batch_size)
        return
    window = batch_size * prefetch_batches
    with ThreadPoolExecutor(workers) as pool:
        pending = deque()
        it = iter(ids)
        for sample_id in it:
            pending.append((sample_id, pool.submit(_load, folder, pp, sample_id)))
            if len(pending) >= window:
                break
        good, images, errors = [], [], []
        while pending:
            sample_id, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_load, folder, pp, nxt)))
            _collect(sample_id, future.result(), good, images, errors)
            if len(good) == batch_size:
                yield Batch(good, np.stack(images), errors)
                good, images, errors = [], [], []
        if good or errors:
            yield Batch(good, np.stack(images) if images else np.zeros((0, 4, pp.size, pp.size), np.uint8), errors)


def _sequential(folder, ids, pp, batch_size):
    good, images, errors = [], [], []
    for sample_id in ids:
        _collect(sample_id, _load(folder, pp, sample_id), good, images, errors)
        if len(good) == batch_size:
            yield Batch(good, np.stack(images), errors)
            good, images, errors = [], [], []
    if good or errors:
        yield Batch(good, np.stack(images) if images else np.zeros((0, 4, pp.size, pp.size), np.uint8), errors)


def _collect(sample_id, result, good, images, errors):
    if isinstance(result, DataError):
        errors.append((sample_id, result.path, result.reason))
    else:
        good.append(sample_id)
        images.append(result)
