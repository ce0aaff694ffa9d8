"""Nothing slow on the GUI thread: decoding, inference and CAMs run on worker threads.

Each request carries an id and a kind. A worker remembers the latest id per kind: a queued
request that a newer one of its kind has superseded is skipped before it runs (holding Down
through a list does not decode every image on the way), and :meth:`Worker.is_latest` lets the
window drop a stale result. Results and errors come back as Qt signals, always on the GUI thread.
``sync=True`` runs requests in the calling thread (deterministic tests).

*Decision*: the window runs two workers, one for images and predictions (ONNX Runtime, no torch)
and one for CAMs (PyTorch). Loading torch and the checkpoints takes seconds the first time; on
one shared thread that would freeze browsing behind the first CAM.
"""

import itertools
import logging
import threading

from PyQt5 import QtCore

from runtime import errors
from runtime.cli import debug_requested

log = logging.getLogger(__name__)
STOP_WAIT_MS = 10000
# Worker threads that did not stop within STOP_WAIT_MS (a request blocked in a system call that
# never returns). Kept referenced: Qt aborts the process when a running QThread is destroyed;
# ``python -m viewer`` exits without waiting for them (viewer/__main__.py).
stuck = []


def one_line(err):
    """The user-facing line for an exception: what the command line would print for it
    (runtime.errors: DataError's own message naming the file, OpenCV's, ONNX Runtime's, an
    OSError's...), anything else its type and the first line of its message."""
    line = errors.one_line(err)
    return line if line is not None else errors.first_line(err)


class Worker(QtCore.QObject):
    result = QtCore.pyqtSignal(int, str, object)   # request id, kind, value
    error = QtCore.pyqtSignal(int, str, str)       # request id, kind, one-line message
    _submit = QtCore.pyqtSignal(int, str, object)

    def __init__(self, name="worker", sync=False):
        super().__init__()
        self._ids = itertools.count(1)
        self._latest = {}
        self._lock = threading.Lock()
        self.sync = sync
        self._thread = None
        if not sync:
            self._thread = QtCore.QThread()
            self._thread.setObjectName(name)
            self.moveToThread(self._thread)
            self._submit.connect(self._run)
            self._thread.start()

    def request(self, kind, fn, supersede=True):
        """Queue fn() to run off the GUI thread; returns the request id. With ``supersede`` a
        newer request of the same kind makes this one stale (skipped if still queued)."""
        with self._lock:
            rid = next(self._ids)
            if supersede:
                self._latest[kind] = rid
        if self.sync:
            self._run(rid, kind, fn)
        else:
            self._submit.emit(rid, kind, fn)
        return rid

    def cancel(self, *kinds):
        """Make every request of these kinds made so far stale: still queued, they are skipped;
        running, their result is dropped (the window moved to another sample)."""
        with self._lock:
            rid = next(self._ids)
            for kind in kinds:
                self._latest[kind] = rid

    def is_latest(self, rid, kind):
        """False when a newer superseding request of this kind was made after ``rid``."""
        with self._lock:
            return self._latest.get(kind, rid) <= rid

    @QtCore.pyqtSlot(int, str, object)
    def _run(self, rid, kind, fn):
        if not self.is_latest(rid, kind):
            return  # superseded while queued: nobody wants this result
        try:
            value = fn()
        except Exception as err:  # every failure becomes a message for the user, never a crash
            if not hasattr(err, "path") and debug_requested():  # the traceback only with --debug / HPA_DEBUG
                log.exception("%s request failed", kind)
            self.error.emit(rid, kind, one_line(err))
            return
        self.result.emit(rid, kind, value)

    def stop(self):
        """Stop the thread, waiting at most STOP_WAIT_MS for the request it runs; False when it
        is still running then (it is left to finish, or to die with the process)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.quit()
        if thread.wait(STOP_WAIT_MS):
            return True
        log.warning("%s worker still busy after %d s; not waiting for it", thread.objectName(), STOP_WAIT_MS // 1000)
        stuck.append((thread, self))
        return False
