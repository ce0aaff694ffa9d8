"""A decoded-image cache on disk: every sample decoded and resized once, stored as uint8.

Layout of ``DIR``, per key (``<h>``: the first 16 hex digits of the key's sha256):
``images-<h>.npy`` ([N, S, S, 4] uint8 as resize returns, memory-mapped) and ``index-<h>.json``
(the key, ids in row order, the errors, Id/file/reason, and the image folder as the build named
it); ``manifest.json`` (the current key and its two file names), written last. Readers map
``images-<h>.npy`` read-only: no decoding, nothing held in RAM beyond the pages in use,
shareable between processes.

*Decisions*:

- The key is the data (ids and ImageFolder.fingerprint(): every channel file's size and mtime),
  the preprocessing (size, interpolation, OpenCV version) and the layout version; a mismatch
  rebuilds (the cache is derived data, rebuilding is always correct).
- Each key's data has its own file names, so that what a process opens by name is always the key
  its run started with. A run's ``--jobs`` processes, its spawn/forkserver loader workers and the
  pickled ``train.data.Samples`` are handed the exact ``images-<h>.npy`` path, never the folder:
  when another run rebuilds the folder for another key meanwhile, they still open their own rows
  (or, were those files gone, fail in one line), never the other key's pixels (an unkeyed
  ``images.npy`` replaced in place gave them the new key's images, silently).
- A reader holds a shared ``flock`` on its ``images-<h>.npy`` for as long as it maps it: the lock
  is taken on the descriptor the memory map is made from, and Python's ``mmap`` keeps a duplicate
  of that descriptor (one open file description, hence one lock) until the map is closed, so the
  lock lives exactly as long as the pixels are in use, in forked children too. A builder removes
  another key's files only when it gets an exclusive lock on them at once (no reader); files a
  reader holds stay, with one warning line naming the folder and the space they keep, and a later
  build removes them (or, when that later build is for their key, makes them current again
  without decoding). Where the file system has no locks (or refuses them on a read-only mount)
  the cache is read without one, as before: a complete current cache still trains from a
  read-only folder.
- The build runs under ``DIR/.lock`` (runtime.outlock) so two builders never write at once, and
  a second builder waits for the first rather than being refused (it queues on
  ``DIR/.build-queue``, without a time limit: a half-built cache cannot be shared). While it
  waits it shows the running build's progress (read from its ``progress-<h>.json``: a bar, or
  without ``progress`` a line every ``REPORT_EVERY`` seconds), and Ctrl-C stops the wait with one
  line saying the other build goes on. A build writes ``images-<h>.npy.partial`` with a row count
  flushed every ``flush_every`` rows to ``progress-<h>.json``, so a killed build continues where
  it stopped; the manifest appears only after the final rename, so a reader never sees a half
  cache. Another key's partial has no reader and is removed by the next build.
- A cache in an older layout (an unkeyed ``images.npy``) does not match any key of this layout and
  is rebuilt; its files are removed by the build.
"""

import errno
import hashlib
import json
import logging
import os
import re
import signal
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runtime.errors import DataError
from runtime.jsonfile import read_json
from runtime.outlock import check_folder, writer_lock
from runtime.preprocess import resize
from runtime.writeutil import atomic_write_json

try:
    import fcntl
except ImportError:  # Windows: no flock; the cache is read and pruned without locks
    fcntl = None

log = logging.getLogger(__name__)

# 2: index.json records the image folder its errors' files lie under; 3: one set of files per key
READER_VERSION = 3
MANIFEST, QUEUE = "manifest.json", ".build-queue"
IMAGES, INDEX, PARTIAL, PROGRESS = "images-{}.npy", "index-{}.json", "images-{}.npy.partial", "progress-{}.json"
_KEYED = re.compile(r"(?:images|index|progress)-([0-9a-f]{16})\.(?:npy|json|npy\.partial(?:\.2)?)")
_OLD_LAYOUT = ("images.npy", "index.json", "images.npy.partial", "progress.json")
REPORT_EVERY = 30.0  # seconds between the lines of a builder waiting for another (no bar)
POLL_EVERY = 2.0  # seconds between updates of its bar
# errno values by which a file system says it does not do locks (runtime.outlock's list)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def cache_key(folder, ids, pp):
    # everything runtime.preprocess.resize's output depends on: the size, the interpolation and the
    # OpenCV that resizes (a cached run must match one that decodes, bit for bit)
    import cv2

    return {"version": READER_VERSION, "ids": len(ids), "ids_hash": _hash_text("\n".join(ids)),
            "images_content": folder.fingerprint(), "size": int(pp.size), "interpolation": pp.interpolation,
            "opencv": cv2.__version__}


def _hash_text(text):
    return hashlib.sha256(text.encode()).hexdigest()


def key_hash(key):
    """The short name of a key in its files' names."""
    return _hash_text(json.dumps(key, sort_keys=True))[:16]


def images_file(cache_dir, key):
    return Path(cache_dir) / IMAGES.format(key_hash(key))


def index_file(cache_dir, key):
    return Path(cache_dir) / INDEX.format(key_hash(key))


def current_images(cache_dir):
    """The images file the manifest of ``cache_dir`` names (None: no complete cache there)."""
    manifest = _read_json(Path(cache_dir) / MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("key"), dict):
        return None
    return images_file(cache_dir, manifest["key"])


def _read_json(path):
    """The parsed file through runtime's bounded JSON reader, or None when it is missing or not
    valid JSON (the cache is then rebuilt)."""
    try:
        return read_json(path)
    except (OSError, DataError):
        return None


def _lock(fd, how):
    """flock ``fd``; False when the lock is held elsewhere (LOCK_NB), True when taken or when the
    file system has no locks (then nothing can be guarded: read and prune as without them)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, how)
    except OSError as err:
        if err.errno in _NO_LOCKS:
            return True
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def open_images(path):
    """The memory map of a cache's ``images-<h>.npy``, holding a shared lock on it for as long as
    the map lives (module docstring). DataError naming the file when it is gone or unreadable."""
    path = Path(path)
    try:
        for _ in range(10):  # each retry: a builder removed or replaced the file between our open and lock
            with open(os.fspath(path), "rb") as handle:
                _lock(handle.fileno(), fcntl.LOCK_SH if fcntl else 0)  # a pruning builder holds it for a moment
                if os.fstat(handle.fileno()).st_nlink == 0:
                    continue
                return _memmap(handle)
        raise OSError("removed again and again while opening it")
    except FileNotFoundError:
        raise DataError(path, "this cache file is gone (the folder was rebuilt for another key while nothing "
                              "read it); run again to rebuild it") from None
    except (OSError, ValueError) as err:
        raise DataError(path, f"unreadable cache ({err}); delete the folder to rebuild") from None


def _memmap(handle):
    """np.load(mmap_mode='r') of an open .npy file. np.memmap maps it through ``handle``'s
    descriptor, and Python's mmap keeps a duplicate of that descriptor (and so the lock taken on
    it) until the map is closed."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return np.memmap(handle, dtype=dtype, mode="r", offset=handle.tell(), shape=shape, order="F" if fortran else "C")


def open_cache(cache_dir, key, root=None):
    """(ids, errors, images memmap) when ``cache_dir`` holds a complete cache for ``key``, else None.
    ``root``: the image folder as this run names it; an error's file, recorded under the folder as
    the build named it (``--data d`` then, ``--data /abs/d`` now: same fingerprint, same cache), is
    given back under ``root``, as the run would name it without the cache (errors.csv)."""
    d = Path(cache_dir)
    manifest = _read_json(d / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return None
    return _open_keyed(d, key, root)


def _open_keyed(d, key, root):
    """open_cache without the manifest: ``key``'s own files, complete once its images file exists
    (its index is written before the images are renamed into place)."""
    path = images_file(d, key)
    try:
        images = open_images(path)
    except DataError as err:
        if not path.exists():  # pruned or rebuilt just now by a builder: take the build path
            return None
        raise err
    index = _read_json(index_file(d, key))  # read under our lock: its images cannot be pruned now
    if index is None or index.get("key") != key:
        return None
    if images.shape[0] != len(index["ids"]) or images.dtype != np.uint8:
        raise DataError(path, "cache does not match its index; delete the folder to rebuild")
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
    with ExitStack() as locks:
        with _showing_the_wait(d, progress):
            locks.enter_context(writer_lock(d, name=QUEUE, option="--cache", what="this cache", wait=True))
        locks.enter_context(writer_lock(d, option="--cache", what="to this cache"))
        found = open_cache(d, key, root)  # the builder this process waited for has made it
        if found is not None:
            return found
        try:  # our key's files, kept by a process that reads them since another key was built: current again
            found = _open_keyed(d, key, root)
        except DataError:
            found = None  # damaged: built again
        if found is not None:
            atomic_write_json(d / MANIFEST, _manifest(key))
            _prune(d, keep=key_hash(key), warn=True)
            return found
        _build(d, key, folder, ids, pp, root, progress, flush_every)
        _prune(d, keep=key_hash(key), warn=True)  # the key the manifest named before, unless a process reads it
        return open_cache(d, key, root)


def _build(d, key, folder, ids, pp, root, progress, flush_every):
    h = key_hash(key)
    (d / MANIFEST).unlink(missing_ok=True)  # it names another key (or ours, damaged): no reader takes it now
    _prune(d, keep=h, warn=False)  # space first; what a reader holds is named once, after the build
    partial, progress_file = d / PARTIAL.format(h), d / PROGRESS.format(h)
    state = _read_json(progress_file)
    shape = (len(ids), pp.size, pp.size, 4)  # HWC, as runtime.preprocess.resize returns
    resume = isinstance(state, dict) and state.get("key") == key and partial.is_file()
    if resume:
        images = np.lib.format.open_memmap(partial, mode="r+")
        resume = images.shape == shape and images.dtype == np.uint8
    if not resume:
        progress_file.unlink(missing_ok=True)
        state = {"key": key, "done": 0, "rows": [], "errors": []}
        images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
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
            atomic_write_json(progress_file, {"key": key, "done": i + 1, "rows": rows, "errors": errors})
    images.flush()
    del images
    # shrink to the readable rows: rewrite the header only when samples were left out
    if len(rows) < len(ids):
        full = np.load(partial, mmap_mode="r")
        shrunk = partial.with_name(partial.name + ".2")
        out = np.lib.format.open_memmap(shrunk, mode="w+", dtype=np.uint8, shape=(len(rows),) + shape[1:])
        out[:] = full[:len(rows)]
        out.flush()
        del out, full
        os.replace(shrunk, partial)
    atomic_write_json(d / INDEX.format(h), {"key": key, "ids": rows, "errors": errors, "root": root})
    os.replace(partial, d / IMAGES.format(h))
    atomic_write_json(d / MANIFEST, _manifest(key))
    progress_file.unlink(missing_ok=True)


def _manifest(key):
    h = key_hash(key)
    return {"key": key, "images": IMAGES.format(h), "index": INDEX.format(h)}


def _prune(d, keep, warn):
    """Remove every other key's files (and an older layout's) that no process reads; warn in one
    line about those a reader still holds. Runs under DIR/.lock: no other builder writes here."""
    for name in _OLD_LAYOUT:
        (d / name).unlink(missing_ok=True)
    held, held_bytes = set(), 0
    hashes = {m.group(1) for p in d.iterdir() if (m := _KEYED.fullmatch(p.name))} - {keep}
    for h in sorted(hashes):
        images, index = d / IMAGES.format(h), d / INDEX.format(h)
        for name in (PARTIAL, PARTIAL + ".2", PROGRESS):  # a killed build's: no reader ever opens them
            (d / name.format(h)).unlink(missing_ok=True)
        try:
            fd = _open_for_lock(images)
        except FileNotFoundError:
            index.unlink(missing_ok=True)
            continue
        try:
            if not _lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if fcntl else 0):
                held.add(h)
                held_bytes += os.fstat(fd).st_size + (index.stat().st_size if index.exists() else 0)
                continue
            index.unlink(missing_ok=True)  # index first: its images without it are never read
            try:
                images.unlink()
            except PermissionError:  # Windows, without flock: a file another process maps stays
                held.add(h)
                held_bytes += os.fstat(fd).st_size
        finally:
            os.close(fd)
    if held and warn:
        log.warning("%s: kept the cache files of %d other key(s) (%s) that a running process still reads; "
                    "a later build of this cache removes them", d, len(held), _size_text(held_bytes))


def _open_for_lock(path):
    """A descriptor of ``path`` to take an exclusive flock on: written to where allowed (NFS's
    emulated flock needs it for an exclusive lock), else read-only (enough for a local flock)."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, os.O_RDWR | nofollow)
    except PermissionError:
        return os.open(path, os.O_RDONLY | nofollow)


def _size_text(n):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def _running_build(d):
    """(done, total) of the build running in ``d``, from the newest progress file (None: none yet)."""
    def modified(path):
        try:
            return path.stat().st_mtime
        except OSError:  # finished (removed) just now
            return 0
    files = sorted(d.glob(PROGRESS.format("*")), key=modified)
    state = _read_json(files[-1]) if files else None
    try:
        return int(state["done"]), int(state["key"]["ids"])
    except (TypeError, KeyError, ValueError):
        return None


@contextmanager
def _showing_the_wait(d, progress):
    """While the block waits in the build queue, show the running build's progress from another
    thread (the wait itself is a blocking flock): a bar refreshed every POLL_EVERY seconds, or
    without ``progress`` a line every REPORT_EVERY seconds. Ctrl-C ends the wait with one line."""
    stop = threading.Event()

    def report():
        if hasattr(signal, "pthread_sigmask"):  # Ctrl-C goes to the main thread, interrupting its wait
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        bar = None
        while not stop.wait(POLL_EVERY if progress else REPORT_EVERY):
            state = _running_build(d)
            if progress:
                if bar is None:  # its rate: the rows the other process decoded while this one watched
                    bar = tqdm(desc="cache (another process)", unit="img", total=state[1] if state else None,
                               initial=state[0] if state else 0)
                elif state:
                    if bar.total != state[1] or state[0] < bar.n:  # another build (key) now
                        bar.reset(total=state[1])
                    bar.update(state[0] - bar.n)
            else:
                log.info("%s: another process is building this cache: %s; waiting for it", d,
                         f"{state[0]}/{state[1]} images" if state else "starting")
        if bar is not None:
            bar.close()

    thread = threading.Thread(target=report, name="cache-wait", daemon=True)
    thread.start()
    try:
        yield
    except KeyboardInterrupt:
        stop.set()
        thread.join()
        state = _running_build(d)
        log.warning("%s: stopped waiting for another process's build of this cache (%s); that build goes on",
                    d, f"{state[0]}/{state[1]} images done" if state else "starting")
        raise
    finally:
        stop.set()
        thread.join()
