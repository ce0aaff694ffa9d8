"""One writer per output folder: a lock file inside it.

Every command that writes an output folder (``runtime infer`` and ``runtime merge --out``,
``train fit --out``, ``export onnx --out``) holds ``FOLDER/.lock`` for as long as it writes; a
second command on the same folder is refused at once, in one line naming the folder and the
holder's pid, before it changes anything.

*Decision*: the lock is ``fcntl.flock`` on that file, not a pid file. The kernel releases a flock
when the last descriptor of its holder closes, so a process killed with ``kill -9`` never leaves a
folder locked, and no stale-lock guessing (is that pid alive, is it the same process, on this
host?) is needed. The file holds the holder's pid only to name it in a refusal. The holder deletes
it when it is done (a refused or finished command leaves the folder as it found it; a killed one
leaves an unlocked file that the next holder reuses); since a process may have opened the file
just before it was deleted, a lock counts only once the locked file is still the one at the path
(the usual check for lock files that are removed). Linux emulates flock with POSIX record locks on
NFS, so jobs on several nodes sharing a folder exclude each other too where the server supports
locking.

``shared=True`` takes a shared lock: several holders at once, but no exclusive one (``train fit
--fold k`` jobs write one run folder together, each fold under its own exclusive lock, while a
whole ``train fit`` on that folder is refused).

Where ``fcntl`` does not exist (Windows) or the file system refuses locks, the folder is written
unguarded, with a warning, rather than refusing to run at all: the lock guards against a mistake,
and no result depends on it.
"""

import errno
import logging
import os
import stat
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from runtime.errors import DataError
from runtime.regular import kind_of
from runtime.writeutil import FILE_MODE

try:
    import fcntl
except ImportError:  # Windows: no flock; see the module's decision
    fcntl = None

log = logging.getLogger(__name__)

LOCK = ".lock"
# errno values by which a file system says it does not do locks (not that the lock is taken)
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}

_held = {}  # real path of a lock file -> depth: re-entrant within a process


def _holder(fd):
    """The pid the holder wrote ('' when it has not written it yet: it locks first, then writes)."""
    for _ in range(20):
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return ""
        if text:
            return text
        time.sleep(0.01)
    return ""


def _alive(pid):
    """Whether ``pid`` names a live process here. With shared holders the file holds the latest
    one's pid, which may have finished while others still hold the lock: then no pid is named.
    (The pid of a holder on another host sharing the folder means nothing here; the line names
    the folder all the same.)"""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OverflowError, OSError):  # PermissionError: alive, another user's
        return True
    return True


def _same_file(fd, path):
    try:
        st, now = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def _acquire(path, shared, option, what, wait=False):
    """The locked descriptor of ``path``; None where the file system has no locks. ``wait``: a
    held lock is waited for (saying so once) instead of refused."""
    # never write through a planted link; never wait on a planted FIFO
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):  # each retry means another process deleted the file or folder just then
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, flags, FILE_MODE)  # an OSError names the path: one line through runtime.cli
        except FileNotFoundError:
            continue  # the folder's last holder removed it, empty, just now: make it again
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # a FIFO or device put there: never truncated or written
            os.close(fd)
            raise DataError(path, f"not a regular file ({kind_of(mode)}); remove it, or choose another {option}")
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in _UNSUPPORTED:
                os.close(fd)
                log.warning("%s: this file system does not support locks; the folder is not guarded "
                            "against a second writer", path)
                return None
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            if wait:
                pid = _holder(fd)
                who = f"another process (pid {pid})" if _alive(pid) else "another process"
                log.warning("%s: %s is writing %s; waiting for it", path.parent, who, what)
                fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                if _same_file(fd, path):
                    break
                os.close(fd)  # its holder deleted it on release: lock the file at the path now
                continue
            pid = _holder(fd)
            os.close(fd)
            who = f"another process (pid {pid})" if _alive(pid) else "another process"
            raise DataError(path.parent, f"{who} is writing {what}; wait for it to finish or "
                                         f"choose another {option}") from None
        if _same_file(fd, path):
            break
        os.close(fd)  # its holder deleted it between our open and our lock: lock the new one
    else:
        raise DataError(path, "deleted again and again while taking the lock; is something removing it?")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release(fd, path, shared):
    """Delete the lock file while still holding it, then unlock. A shared holder deletes it only
    when no other holder is left (the exclusive lock it then gets proves that)."""
    if fd is None:
        return
    try:
        if shared:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _same_file(fd, path):
            os.unlink(path)
    except OSError:
        pass  # another holder is left, or the file is gone: leave it
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def check_folder(folder, option="--out", noun="folder"):
    """The nearest existing folder at or above ``folder`` (where it would be made); NotADirectoryError
    naming ``folder`` when it is a file ("--out is a file, not a folder"), or naming the file it
    would lie below: the same line as runtime.writeutil.writable_folder gives."""
    folder = target = Path(folder)
    while not target.exists() and target != target.parent:
        target = target.parent
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(20, "Not a directory" if target != folder else f"{option} is a file, not a {noun}",
                                 str(target))
    return target


@contextmanager
def writer_lock(folder, shared=False, name=LOCK, option="--out", what="to this folder", wait=False):
    """Hold ``folder/name`` while the block runs; DataError naming the folder and the holder's
    pid when another process holds it. The folder is made if needed, and removed again when it is
    still empty at the end (a refused command leaves nothing behind). Re-entrant within one
    process (an inner ``writer_lock`` on a lock already held is a no-op), since two flocks of one
    process on one file through two descriptors would refuse each other. ``option``: the
    command-line option the refusal tells the user to change; ``what``: what the holder writes;
    ``wait``: wait for the holder (one warning line) instead of refusing."""
    folder = Path(folder)
    check_folder(folder, option)
    made = not folder.exists()
    path = folder / name
    key = os.path.join(os.path.realpath(folder), name)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    if fcntl is None:
        folder.mkdir(parents=True, exist_ok=True)
        log.warning("%s: file locks are not available on this platform; the folder is not guarded "
                    "against a second writer", path)
        fd = None
    else:
        fd = _acquire(path, shared, option, what, wait)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        _release(fd, path, shared)
        if made:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass


@contextmanager
def run_folder_lock(folder, folds=()):
    """``train fit``'s lock on its run folder: the whole folder for a run of every fold, or, with
    ``folds`` (``--fold k``), a shared hold on the folder and an exclusive lock per fold, so jobs
    training different folds of one run go on side by side while the same fold twice, or a whole
    run beside them, is refused."""
    with writer_lock(folder, shared=bool(folds)):
        if not folds:
            yield
            return
        with ExitStack() as stack:
            for k in sorted(set(folds)):
                stack.enter_context(writer_lock(folder, name=f"{LOCK}-fold{k}", what=f"fold {k} of this run"))
            yield
