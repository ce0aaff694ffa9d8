"""Atomic writes: a crash never leaves a half-written file behind (temporary file in the same
folder, then rename). Every file written by the toolkit goes through ``atomic_path``.

The temporary file is made by ``mkstemp`` (mode 0600, so nothing half-written is ever readable
by others); before the rename it gets the mode a plain ``open`` would have given it (0666 less
the umask), so a shared group or a serving account can read the results."""

import json
import os
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


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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
