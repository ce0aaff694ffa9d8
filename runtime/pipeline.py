"""The inference data path, from a channel file to a label; this module is its middle (batches).

One image, top to bottom (``runtime infer``; ``runtime bench`` times the same stages):

1. **Find and read** -- ``runtime.reader.ImageFolder``: ``ids()`` lists the samples; for each,
   ``read_planes(Id)`` takes its four channel files ``{Id}_{red,green,blue,yellow}.png``
   (``find_channel_file``), refuses a link leading out of the folder (``check_inside``), opens
   regular files only (``runtime.regular``), checks the header's width x height against the
   decoded-size limit and the byte size against what such an image can hold, then reads the file
   with one ``pread`` (``reader._read_checked``). Every failure is a ``DataError`` naming the file.
2. **Decode** -- ``runtime.decoders.imdecode``: Wuffs for the PNG kinds where its pixels equal
   OpenCV's, OpenCV for the rest (the module's table); 16-bit becomes 8-bit, a colour file where
   grayscale is expected keeps one plane (``reader.decode_channel``).
3. **Preprocess** -- ``runtime.preprocess.image_chw_into``: each plane resized (model.json's size
   and interpolation) straight into its slot of the batch: the uint8 (4, S, S) image the graph
   takes. Nothing here normalises: a version-3 graph does it itself, a version-2 file's backend
   does it once on the host (``Backend.infer``), the torch backend on its device.
4. **Batch** -- this module: ``decoded_batches`` hands stretches of ``batch_size`` Ids to a pool
   of decode workers (``_Threads`` or ``_Processes``, ``load_into`` per sample) that write into a
   new uint8 (N, 4, S, S) buffer per batch; ``assembled`` keeps stretches in flight ahead of the
   one being waited for; ``Prefetch`` runs that on a background thread with one finished batch
   waiting, so the model runs on batch k while batch k+1 waits and the ones after it decode. A
   ``Batch`` carries the Ids that decoded, their images, and the errors of its stretch.
5. **Feed and run** -- ``runtime.backends`` (one contract, ``base.Backend``): ``predict(images,
   views)`` averages ``infer`` over the test-time views (``runtime.tta``); ``infer`` checks the
   batch against model.json and hands it to the engine: ONNX Runtime (``onnxruntime_backend``,
   CPU or CUDA), TensorRT (``tensorrt_backend``), PyTorch (``torch_backend``: pinned copy,
   normalised on the device). Out come (N, 28) probabilities.
6. **Decide** -- ``runtime.infer``: ``resolve_thresholds`` (model.json's, tuned for that many
   views) and ``predicted_classes`` (above threshold, else the most probable class); the rows go
   to the journal (``runtime.journal``) every few batches and to ``submission.csv``,
   ``probabilities.csv`` and ``errors.csv`` at the end. A sample's error keeps its row.

Order and errors: batches come out in input order whatever the workers; a bad sample becomes an
error record of its batch (the batch has fewer images) and never shifts another sample's
result. The caller stopping early (an exception, Ctrl-C, ``break``) stops the background thread
and the workers before ``decoded_batches`` returns.

Workers are threads or processes, both running ``load_into``; processes send each chunk of
samples back through a pipe, so the batches are byte-identical. Threads need the decoders to
release the GIL (OpenCV and pywuffs do) and hold it only for the Python between calls; processes
share no lock, at the price of starting (about half a second) and of the pipe.

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

*Decision*: a batch is a stretch of ``batch_size`` consecutive Ids, so its buffer can be
allocated before any of them decodes and each worker writes its sample in place (no per-sample
copies: the interleaved sample, its resized copy, its channels-first copy and the stacked batch
are all gone). A stretch with a failed sample yields a shorter batch (one copy of the good
images); a model with a fixed batch pads it (runtime.backends).
"""

import logging
import math
import multiprocessing
import os
import queue
import signal
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.classes import CHANNELS
from runtime.cli import setup_logging
from runtime.errors import DataError
from runtime.preprocess import image_chw_into
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
# Finished batches waiting for the model: one, so the model never waits for the hand-over while
# the batches after it are still decoding (double buffering).
READY_BATCHES = 1


@dataclass
class Batch:
    ids: list          # Ids of this stretch of the input that decoded, in order
    images: np.ndarray  # uint8 (len(ids), 4, S, S): resized, channels first, not normalised
    errors: list       # (Id, file, reason) for the Ids of this stretch that could not be read


def load_into(folder, pp, sample_id, out):
    """Decode one sample and resize it into ``out`` (its uint8 (4, S, S) slot of a batch): None,
    or the sample's DataError (which becomes its errors.csv row, never the run's failure)."""
    try:
        image_chw_into(folder.read_planes(sample_id), pp, out)
    except DataError as err:
        return err
    return None


@contextmanager
def opencv_single_threaded():
    """OpenCV's own thread pool held to one thread for the block, then restored."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


# ---------------------------------------------------------------- the decode pools
# Each pool's ``start(ids, out)`` begins decoding ``ids`` into the batch buffer ``out`` and returns
# ``wait``, which blocks until they are done and returns each Id's None or DataError.

class _Inline:
    """No workers: decodes in the caller's thread, within ``start``."""

    def __init__(self, folder, pp):
        self.folder, self.pp = folder, pp

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start(self, ids, out):
        errors = [load_into(self.folder, self.pp, sample_id, slot) for sample_id, slot in zip(ids, out)]
        return lambda: errors


class _Threads:
    """Worker threads, one task per sample, each writing straight into its slot of the batch."""

    def __init__(self, folder, pp, workers):
        self.folder, self.pp = folder, pp
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def start(self, ids, out):
        futures = [self.pool.submit(load_into, self.folder, self.pp, sample_id, slot)
                   for sample_id, slot in zip(ids, out)]
        return lambda: [f.result() for f in futures]


_process_state = {}


def _process_init(folder, pp):
    # Ctrl-C is the parent's to handle (one line, runtime.cli); a worker ignores it and ends when
    # the parent shuts the pool down. Warnings (a colour channel) read as the parent's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(logging.WARNING)
    cv2.setNumThreads(1)
    _process_state.update(folder=folder, pp=pp)


def _process_load(sample_ids):
    """(uint8 (len(sample_ids), 4, S, S), [None or DataError per Id]): one array through the pipe."""
    folder, pp = _process_state["folder"], _process_state["pp"]
    out = np.zeros((len(sample_ids), 4, pp.size, pp.size), np.uint8)
    return out, [load_into(folder, pp, sample_id, slot) for sample_id, slot in zip(sample_ids, out)]


def _process_context():
    # forkserver: a clean child (never a fork of a process holding ONNX Runtime or CUDA threads);
    # spawn where there is none (Windows).
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    _start_forkserver_deaf_to_ctrl_c()
    return multiprocessing.get_context("forkserver")


def _start_forkserver_deaf_to_ctrl_c():
    """A worker forked by the fork server takes the SIGINT disposition the server itself started
    with, until _process_init ignores it; a Ctrl-C in between (a worker still starting) printed
    that worker's traceback. Started while the parent ignores SIGINT (inherited across exec), the
    server hands SIG_IGN to every worker from its first instruction. A no-op when it already runs,
    or off the main thread (only it may change a signal's handler)."""
    if threading.current_thread() is not threading.main_thread():
        return
    from multiprocessing import forkserver

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, old)


class _Processes:
    """Worker processes fed PROCESS_CHUNK Ids per task; their samples are copied into the batch."""

    def __init__(self, folder, pp, workers):
        self.pool = ProcessPoolExecutor(workers, _process_context(), initializer=_process_init,
                                        initargs=(folder, pp))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def start(self, ids, out):
        tasks = [(k, self.pool.submit(_process_load, ids[k:k + PROCESS_CHUNK]))
                 for k in range(0, len(ids), PROCESS_CHUNK)]

        def wait():
            errors = []
            for k, future in tasks:
                images, chunk_errors = future.result()
                out[k:k + len(images)] = images
                errors += chunk_errors
            return errors
        return wait


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


# ---------------------------------------------------------------- batches, in order, ahead of the model

def assembled(pool, ids, pp, batch_size, ahead):
    """Batch objects in ``ids`` order, one per stretch of ``batch_size`` Ids. Each stretch gets a
    new uint8 buffer that the pool decodes into; ``ahead`` stretches after the one being waited
    for are already handed to the pool, so its workers never run dry at a batch's end."""
    pending = deque()
    for begin in range(0, len(ids), batch_size):
        stretch = ids[begin:begin + batch_size]
        out = np.empty((len(stretch), 4, pp.size, pp.size), np.uint8)
        pending.append((stretch, out, pool.start(stretch, out)))
        if len(pending) > ahead:
            yield _finished(*pending.popleft())
    while pending:
        yield _finished(*pending.popleft())


def _finished(stretch, out, wait):
    errors = wait()
    bad = [k for k, err in enumerate(errors) if err is not None]
    if not bad:
        return Batch(list(stretch), out, [])
    good = [k for k, err in enumerate(errors) if err is None]
    return Batch([stretch[k] for k in good], out[good],
                 [(stretch[k], errors[k].path, errors[k].reason) for k in bad])


class _Failed:
    def __init__(self, error):
        self.error = error


_END = object()


class Prefetch:
    """Iterates ``batches`` on a background thread, at most ``ready`` finished batches waiting:
    the model runs on batch k in the caller's thread while batch k+1 waits and the ones after it
    decode. Order is kept (one producer, one FIFO); an exception of the producer is raised in the
    caller at the batch where it happened. When the caller stops early (an error, Ctrl-C, a
    ``break``), the producer is told to stop and joined before the pool shuts down."""

    def __init__(self, batches, ready=READY_BATCHES):
        self.batches = batches
        self.queue = queue.Queue(max(1, ready))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="assemble-batches", daemon=True)

    def _put(self, item):
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self):
        try:
            for batch in self.batches:
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as err:  # handed to the caller, which raises it
            self._put(_Failed(err))
        finally:
            self.batches.close()

    def __iter__(self):
        self.thread.start()
        try:
            while True:
                item = self.queue.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self.stop.set()
            self.thread.join()


def decoded_batches(folder, ids, pp, batch_size, workers=4, prefetch_batches=3, processes=None):
    """Yield Batch objects in order, one per stretch of ``batch_size`` Ids (fewer images when some
    fail: their errors). ``workers=0`` decodes sequentially in the caller's thread, batch by batch
    as the caller asks; otherwise on ``workers`` processes (``processes=True``), threads (False),
    or, with None, the kind ``use_processes`` picks, batches assembled on a background thread up
    to ``prefetch_batches`` ahead of the caller (and at least two samples per worker in flight)."""
    ids = list(ids)
    if workers <= 0:
        yield from assembled(_Inline(folder, pp), ids, pp, batch_size, ahead=0)
        return
    processes = worker_kind(folder, ids, workers, processes) == "processes"
    ahead = max(prefetch_batches - READY_BATCHES, math.ceil(2 * workers / batch_size))
    with opencv_single_threaded(), (_Processes if processes else _Threads)(folder, pp, workers) as pool:
        yield from Prefetch(assembled(pool, ids, pp, batch_size, ahead))
