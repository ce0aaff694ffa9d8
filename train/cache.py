"""A decoded-image cache on disk: every sample decoded and resized once, stored as uint8.

Layout of ``DIR``: ``images.npy`` ([N, S, S, 4] uint8 as resize returns, memory-mapped),
``index.json`` (ids in row order, the errors, Id/file/reason, and the image folder as the build
named it) and ``manifest.json`` (the key), written last. Readers open ``images.npy`` with
``np.load(mmap_mode='r')``: no decoding, nothing held in RAM beyond the pages
in use, shareable between processes.

*Decisions*: the key is the data (ids and ImageFolder.fingerprint(): every channel file's size and
mtime), the preprocessing (size, interpolation, OpenCV version) and a reader version; a mismatch
rebuilds (the cache is derived data, rebuilding is always correct). The build runs under
``DIR/.lock`` (runtime.outlock) so two builders never write at once, and a second builder waits
for the first rather than being refused (it queues on ``DIR/.build-queue``); it writes
``images.npy.partial`` with a row count flushed every ``flush_every`` rows to ``progress.json``,
so a killed build continues where it stopped; the manifest appears only after the final rename,
so a reader never sees a half cache.
"""

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runtime.errors import DataError
from runtime.jsonfile import read_json
from runtime.outlock import check_folder, writer_lock
from runtime.preprocess import resize
from runtime.writeutil import atomic_write_json

READER_VERSION = 2  # 2: index.json records the image folder its errors' files lie under
IMAGES, INDEX, MANIFEST, PARTIAL, PROGRESS = "images.npy", "index.json", "manifest.json", "images.npy.partial", "progress.json"
QUEUE = ".build-queue"


def cache_key(folder, ids, pp):
    # everything runtime.preprocess.resize's output depends on: the size, the interpolation and the
    # OpenCV that resizes (a cached run must match one that decodes, bit for bit)
    import cv2

    return {"version": READER_VERSION, "ids": len(ids), "ids_hash": _hash_ids(ids),
            "images_content": folder.fingerprint(), "size": int(pp.size), "interpolation": pp.interpolation,
            "opencv": cv2.__version__}


def _hash_ids(ids):
    import hashlib
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _read_json(path):
    """The parsed file through runtime's bounded JSON reader, or None when it is missing or not
    valid JSON (the cache is then rebuilt)."""
    try:
        return read_json(path)
    except (OSError, DataError):
        return None


def open_cache(cache_dir, key, root=None):
    """(ids, errors, images memmap) when ``cache_dir`` holds a complete cache for ``key``, else None.
    ``root``: the image folder as this run names it; an error's file, recorded under the folder as
    the build named it (``--data d`` then, ``--data /abs/d`` now: same fingerprint, same cache), is
    given back under ``root``, as the run would name it without the cache (errors.csv)."""
    d = Path(cache_dir)
    if _read_json(d / MANIFEST) != key:
        return None
    index = _read_json(d / INDEX)
    try:
        images = np.load(d / IMAGES, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DataError(d / IMAGES, f"unreadable cache ({err}); delete the folder to rebuild") from None
    if index is None or images.shape[0] != len(index["ids"]) or images.dtype != np.uint8:
        raise DataError(d / IMAGES, "cache does not match its index; delete the folder to rebuild")
    return index["ids"], [_rerooted(e, index.get("root"), root) for e in index["errors"]], images


def _rerooted(error, old, new):
    sample_id, file, reason = error
    if old is not None and new is not None and (file == old or file.startswith(old + os.sep)):
        file = str(new) + file[len(old):]
    return sample_id, file, reason


def build_cache(cache_dir, folder, ids, pp, progress=True, flush_every=64):
    """Open the cache for (folder, ids, pp), building or rebuilding it first when needed."""
    d = Path(cache_dir)
    check_folder(d, "--cache")  # a file there: "--cache is a file, not a folder", not mkdir's "File exists"
    d.mkdir(parents=True, exist_ok=True)
    key = cache_key(folder, ids, pp)
    root = str(folder.root)
    found = open_cache(d, key, root)  # complete and current: read it without the lock (DDP ranks, --fold jobs)
    if found is not None:
        return found
    # Builders that start together (torchrun ranks, --fold jobs) queue on DIR/.build-queue: the
    # first builds, the others wait, then find the cache complete and read it; one that dies
    # releases the queue and the next resumes its build. DIR/.lock still refuses any other writer.
    with writer_lock(d, name=QUEUE, option="--cache", what="this cache", wait=True), \
            writer_lock(d, option="--cache", what="to this cache"):
        found = open_cache(d, key, root)  # the builder this process waited for has made it
        if found is not None:
            return found
        for name in (MANIFEST, IMAGES, INDEX):  # stale or other key: rebuild
            (d / name).unlink(missing_ok=True)
        state = _read_json(d / PROGRESS)
        shape = (len(ids), pp.size, pp.size, 4)  # HWC, as runtime.preprocess.resize returns
        resume = state is not None and state.get("key") == key and (d / PARTIAL).is_file()
        if resume:
            images = np.lib.format.open_memmap(d / PARTIAL, mode="r+")
            resume = images.shape == shape and images.dtype == np.uint8
        if not resume:
            # a progress.json left by a killed build must never describe the partial made here: with
            # the same shape it would be resumed later, its rows taken as decoded (zeros, or another
            # key's images)
            (d / PROGRESS).unlink(missing_ok=True)
            state = {"key": key, "done": 0, "rows": [], "errors": []}
            images = np.lib.format.open_memmap(d / PARTIAL, mode="w+", dtype=np.uint8, shape=shape)
        rows, errors = state["rows"], [tuple(e) for e in state["errors"]]
        for i in tqdm(range(state["done"], len(ids)), desc="cache", unit="img", disable=not progress,
                      initial=state["done"], total=len(ids)):
            try:
                images[len(rows)] = resize(folder.read(ids[i]), pp)
                rows.append(ids[i])
            except DataError as err:
                errors.append((ids[i], str(err.path), err.reason))
            if (i + 1) % flush_every == 0:
                images.flush()
                atomic_write_json(d / PROGRESS, {"key": key, "done": i + 1, "rows": rows, "errors": errors})
        images.flush()
        del images
        # shrink to the readable rows: rewrite the header only when samples were left out
        if len(rows) < len(ids):
            full = np.load(d / PARTIAL, mmap_mode="r")
            out = np.lib.format.open_memmap(d / (PARTIAL + ".2"), mode="w+", dtype=np.uint8,
                                            shape=(len(rows),) + shape[1:])
            out[:] = full[:len(rows)]
            out.flush()
            del out, full
            os.replace(d / (PARTIAL + ".2"), d / PARTIAL)
        atomic_write_json(d / INDEX, {"ids": rows, "errors": errors, "root": root})
        os.replace(d / PARTIAL, d / IMAGES)
        atomic_write_json(d / MANIFEST, key)
        (d / PROGRESS).unlink(missing_ok=True)
        return open_cache(d, key, root)
