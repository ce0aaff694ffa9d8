"""Decoding is the end-to-end bottleneck (four PNG decodes per sample): decode and preprocess on a
pool of workers feeding a bounded window, so the model never waits while decoding can keep up.
Batches come out in input order; a bad sample becomes an error record and never shifts another
sample's result.

Workers are threads (``processes=False``) or processes. Both run the same ``_load`` (decode,
resize, normalise), so their batches are byte-identical. Threads need the decoders to release the
GIL (OpenCV and pywuffs do) and hold it only for the Python between calls; processes hold no
shared lock at all, at the price of starting (about a second) and of sending each preprocessed
sample back through a pipe. While a pool runs, OpenCV's own thread pool is held to one thread:
the pool's workers already fill the cores, and OpenCV's threads (which wait actively for work
after each call) would take cores from them (docs/benchmarks.md, "Decoding on every core").
"""

import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.errors import DataError
from runtime.preprocess import preprocess

# Decode workers by default: one per core, at least 4. Decoding scales with cores (16 workers on a
# 16-core GPU host set the pace of the whole GPU pipeline); on a 2-core CPU 4 threads keep
# decoding ahead of the model (docs/benchmarks.md).
DEFAULT_WORKERS = max(4, os.cpu_count() or 1)
# Samples per task sent to a worker process: fewer round trips through the pipe for small images.
PROCESS_CHUNK = 4


@dataclass
class Batch:
    ids: list          # Ids in this batch that decoded
    images: np.ndarray  # float32 (len(ids), 4, S, S)
    errors: list       # (Id, file, reason) for the Ids of this stretch that could not be read


def _load(folder, pp, sample_id):
    try:
        return preprocess(folder.read(sample_id), pp)
    except DataError as err:
        return err


@contextmanager
def opencv_single_threaded():
    """OpenCV's own thread pool held to one thread for the block, then restored."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


# ---------------------------------------------------------------- worker processes

_process_state = {}


def _process_init(folder, pp):
    cv2.setNumThreads(1)
    _process_state.update(folder=folder, pp=pp)


def _process_load(sample_ids):
    return [_load(_process_state["folder"], _process_state["pp"], i) for i in sample_ids]


def _process_context():
    # forkserver: a clean child (never a fork of a process holding ONNX Runtime or CUDA threads);
    # spawn where there is none (Windows).
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class _Processes:
    """The pool interface decoded_batches uses (submit one Id, get a future of its result),
    over worker processes fed PROCESS_CHUNK Ids per task."""

    def __init__(self, folder, pp, workers):
        self.pool = ProcessPoolExecutor(workers, _process_context(), initializer=_process_init,
                                        initargs=(folder, pp))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def map_ordered(self, ids, window):
        """(Id, result) in ``ids`` order, at most ``window`` Ids in flight."""
        chunks = (ids[i:i + PROCESS_CHUNK] for i in range(0, len(ids), PROCESS_CHUNK))
        pending = deque()
        for chunk in chunks:
            pending.append((chunk, self.pool.submit(_process_load, chunk)))
            while len(pending) * PROCESS_CHUNK >= window:
                yield from zip(*_popleft_result(pending))
        while pending:
            yield from zip(*_popleft_result(pending))


def _popleft_result(pending):
    chunk, future = pending.popleft()
    return chunk, future.result()


class _Threads:
    def __init__(self, folder, pp, workers):
        self.folder, self.pp = folder, pp
        self.pool = ThreadPoolExecutor(workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def map_ordered(self, ids, window):
        pending = deque()
        for sample_id in ids:
            pending.append((sample_id, self.pool.submit(_load, self.folder, self.pp, sample_id)))
            if len(pending) >= window:
                sample_id, future = pending.popleft()
                yield sample_id, future.result()
        while pending:
            sample_id, future = pending.popleft()
            yield sample_id, future.result()


def decoded_batches(folder, ids, pp, batch_size, workers=4, prefetch_batches=3, processes=False):
    """Yield Batch objects in order. ``workers=0`` decodes sequentially in the caller's thread;
    otherwise ``workers`` threads, or processes with ``processes=True``."""
    ids = list(ids)
    if workers <= 0:
        results = ((i, _load(folder, pp, i)) for i in ids)
        yield from _batches(results, pp, batch_size)
        return
    window = batch_size * prefetch_batches
    with opencv_single_threaded(), (_Processes if processes else _Threads)(folder, pp, workers) as pool:
        yield from _batches(pool.map_ordered(ids, window), pp, batch_size)


def _batches(results, pp, batch_size):
    good, images, errors = [], [], []
    for sample_id, result in results:
        if isinstance(result, DataError):
            errors.append((sample_id, result.path, result.reason))
        else:
            good.append(sample_id)
            images.append(result)
        if len(good) == batch_size:
            yield Batch(good, np.stack(images), errors)
            good, images, errors = [], [], []
    if good or errors:
        yield Batch(good, np.stack(images) if images else np.zeros((0, 4, pp.size, pp.size), np.float32), errors)
