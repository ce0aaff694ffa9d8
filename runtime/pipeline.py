"""Decoding is the end-to-end bottleneck (four PNG decodes per sample): decode and preprocess on a
pool of workers feeding a bounded window, so the model never waits while decoding can keep up.
Batches come out in input order; a bad sample becomes an error record and never shifts another
sample's result.

Workers are threads or processes; both run ``_load`` (decode, resize, channels first: the model's
uint8 input, which the graph normalises), processes sending each sample back through a pipe, so
the batches are byte-identical. Threads need the decoders to release the GIL (OpenCV and pywuffs do) and hold it
only for the Python between calls; processes share no lock, at the price of starting (about half
a second) and of the pipe.

*Decision* (measured on a 16-core Xeon, docs/benchmarks.md "Wuffs and OpenCV, and decoding on
every core"): the GIL is what stops threads on small images. A 128-px PNG decodes in about 0.1 ms,
so the Python around each call (reading, checks, the GIL handed back and forth) is a large share
of a sample: 16 threads decoded demo-size samples at 1.2-1.9x one thread, 16 processes at 6.5x. A
512-px PNG takes milliseconds, the share is small, and 16 threads reach 9x, while processes pay
for sending each sample back (measured with float samples: 1.9-11x, depending on the model's input
size). So ``processes=None`` (auto) takes processes for images under PROCESS_BELOW_PIXELS
per channel when there are enough samples to pay for starting them (PROCESS_MIN_SAMPLES), threads
otherwise. While a pool runs, OpenCV's own thread pool is held to one thread: the pool's workers
already fill the cores (16 threads: 474 against 446 samples/s).
"""

import logging
import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.classes import CHANNELS
from runtime.errors import DataError
from runtime.preprocess import image_chw
from runtime.reader import header_size
from runtime.regular import open_regular_fd

# Decode workers by default: one per core, at least 4. Decoding scales with cores (16 workers on a
# 16-core GPU host set the pace of the whole GPU pipeline); on a 2-core CPU 4 threads keep
# decoding ahead of the model (docs/benchmarks.md).
DEFAULT_WORKERS = max(4, os.cpu_count() or 1)
# Samples per task sent to a worker process: fewer round trips through the pipe for small images.
PROCESS_CHUNK = 4
# auto takes processes for channels under 256x256 pixels (threads won at 512 px, processes at
# 128 px) and at least this many samples (their start, about 0.5 s, must pay back).
PROCESS_BELOW_PIXELS = 256 * 256
PROCESS_MIN_SAMPLES = 1000


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
    # Ctrl-C is the parent's to handle (one line, runtime.cli); a worker ignores it and ends when
    # the parent shuts the pool down. Warnings (a colour channel) read as the parent's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    cv2.setNumThreads(1)
    _process_state.update(folder=folder, pp=pp)


def _process_load(sample_ids):
    """The samples as ``_load`` gives them (the model's uint8 input, or the sample's DataError)."""
    folder, pp = _process_state["folder"], _process_state["pp"]
    return [_load(folder, pp, sample_id) for sample_id in sample_ids]


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


def use_processes(folder, ids, workers):
    """auto's choice: processes for many samples of small images (the module's decision)."""
    if workers < 2 or len(ids) < PROCESS_MIN_SAMPLES:
        return False
    for sample_id in ids[:3]:  # the first readable red channel's header stands for the set
        try:
            path = folder.check_inside(folder.channel_path(sample_id, CHANNELS[0]))
            fd, _ = open_regular_fd(path)  # never a FIFO's blocking open
            try:
                width, height = header_size(fd, path)
            finally:
                os.close(fd)
        except (DataError, OSError):
            continue
        return width * height < PROCESS_BELOW_PIXELS
    return False


def worker_kind(folder, ids, workers, processes=None):
    """'threads' or 'processes': what decoded_batches runs ``workers`` on (``processes``: None is auto)."""
    return "processes" if (use_processes(folder, list(ids), workers) if processes is None else processes) \
        else "threads"


def decoded_batches(folder, ids, pp, batch_size, workers=4, prefetch_batches=3, processes=None):
    """Yield Batch objects in order. ``workers=0`` decodes sequentially in the caller's thread;
    otherwise on ``workers`` processes (``processes=True``), threads (False), or, with None, the
    kind ``use_processes`` picks."""
    ids = list(ids)
    if workers <= 0:
        results = ((i, _load(folder, pp, i)) for i in ids)
        yield from _batches(results, pp, batch_size)
        return
    processes = worker_kind(folder, ids, workers, processes) == "processes"
    window = batch_size * prefetch_batches
    with opencv_single_threaded(), (_Processes if processes else _Threads)(folder, pp, workers) as pool:
        yield from _batches(pool.map_ordered(ids, window), pp, batch_size)


def _batches(results, pp, batch_size):
    """Batches of the (Id, result) pairs: uint8 (N, 4, S, S) and the errors among them."""
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
        yield Batch(good, np.stack(images) if images else np.zeros((0, 4, pp.size, pp.size), np.uint8), errors)
