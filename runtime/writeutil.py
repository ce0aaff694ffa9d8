"""Atomic writes: a crash never leaves a half-written file behind (temporary file in the same
folder, then rename). Every file written by the toolkit goes through ``atomic_path``.

The temporary file is made by ``mkstemp`` (mode 0600, so nothing half-written is ever readable
by others); before the rename it gets the mode a plain ``open`` would have given it (0666 less
the umask), so a shared group or a serving account can read the results."""

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _file_mode():
    mask = os.umask(0o022)  # read the umask (there is no other portable way) and put it back
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


@contextmanager
def atomic_path(path):
    """Yield a temporary path in the same folder; on success it replaces ``path`` atomically."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None or err.filename == tmp:  # a full disk names no file: name the one being written
            err.filename, err.filename2 = str(path), None
        raise
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_set(items):
    """Write several files as one set: every ``(path, text)`` to its temporary file first, then all
    renamed in the given order (put the file that marks the set complete last). A failure while
    writing the temporary files leaves every old file in place, byte for byte."""
    staged = []
    try:
        for path, text in items:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((path, tmp))
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, FILE_MODE)
        for path, tmp in staged:
            os.replace(tmp, path)
    except OSError as err:
        named = dict((str(tmp), str(path)) for path, tmp in staged)
        if err.filename is None or str(err.filename) in named:  # name the file being written, not its temporary
            err.filename = named.get(str(err.filename), str(staged[-1][0]) if staged else None)
            err.filename2 = None
        raise
    finally:
        for _, tmp in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


# The name mkstemp gives atomic_path's temporary files: .NAME. + 8 characters of
# tempfile's alphabet + .tmp
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(folder):
    """Delete the temporary files of atomic writes a killed process left directly in ``folder``;
    returns their paths. Call it only while holding the folder's writer lock (runtime/outlock.py,
    or train.run.Run.claim), so no live writer's temporary file is taken. Other files are never
    touched."""
    removed = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if _TEMPORARY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:
                pass
    return removed


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text, errors="strict"):
    """``errors``: the codec's handling of what UTF-8 cannot encode (``surrogateescape`` writes the
    undecodable bytes of a file name back as they were)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors=errors)


def atomic_write_json(path, data):
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def writable_folder(path):
    """``path`` as a folder this process can write into, made if needed; checked before a command
    spends time loading a model, so an unusable output folder is the first error, not the last."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(path))
    path.mkdir(parents=True, exist_ok=True)  # OSError names the path: one line through runtime.cli
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(13, "folder not writable", str(path))
    return path
