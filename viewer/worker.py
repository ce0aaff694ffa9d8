"""Nothing slow on the GUI thread: decoding, inference and CAMs run on one worker thread.

Each request carries an id; the window keeps only the latest id per kind and drops stale
results. Results and errors come back as Qt signals. ``sync=True`` runs requests in the calling
thread (deterministic tests)."""

import itertools
import traceback

from PyQt5 import QtCore


class Worker(QtCore.QObject):
    result = QtCore.pyqtSignal(int, str, object)   # request id, kind, value
    error = QtCore.pyqtSignal(int, str, str)       # request id, kind, one-line message
    _submit = QtCore.pyqtSignal(int, str, object)

    def __init__(self, sync=False):
        super().__init__()
        self._ids = itertools.count(1)
        self.sync = sync
        self._thread = None
        if not sync:
            self._thread = QtCore.QThread()
            self.moveToThread(self._thread)
            self._submit.connect(self._run)
            self._thread.start()

    def request(self, kind, fn, on_id=None):
        """Queue fn() to run off the GUI thread; returns the request id. ``on_id(rid)`` is called
        before the work is queued, so a caller can record the id even in synchronous mode."""
        rid = next(self._ids)
        if on_id is not None:
            on_id(rid)
        if self.sync:
            self._run(rid, kind, fn)
        else:
            self._submit.emit(rid, kind, fn)
        return rid

    @QtCore.pyqtSlot(int, str, object)
    def _run(self, rid, kind, fn):
        try:
            value = fn()
        except Exception as err:  # every failure becomes a status-bar message, never a crash
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            if not hasattr(err, "path"):
                message = f"{type(err).__name__}: {message}"
                traceback.print_exc()
            self.error.emit(rid, kind, message)
            return
        self.result.emit(rid, kind, value)

    def stop(self):
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait(5000)
            self._thread = None
