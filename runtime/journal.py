"""The journal of an inference run: ``OUT/.chunks/``.

``settings.json`` is written first: everything that decides a result (runtime.infer.run_settings:
the image folder, the decoded-size limit, model.json and the model file with their sha256,
backend, precision, test-time views, thresholds, batch size). Then, every few batches, a
``chunk-NNNNNN.csv`` (``Id,ok,,,p0..p27`` or ``Id,error,file,reason``), each written atomically,
so a kill at any moment loses at most the batches since the last chunk and never leaves a
half-written file. ``--resume`` goes on only when its settings equal the journal's; otherwise it
is refused in one line naming the difference, so results of two settings are never mixed.

Chunks are UTF-8 with ``surrogateescape``: an Id from a file name that is not valid UTF-8 (byte
0xff) is journaled as its bytes and read back as the same string, so its row matches its Id.
"""

import csv
import shutil
from pathlib import Path

import numpy as np

from runtime.classes import NUM_CLASSES
from runtime.errors import DataError
from runtime.jsonfile import read_json
from runtime.labels import bounded_lines, csv_text
from runtime.regular import open_regular
from runtime.writeutil import atomic_write_json, atomic_write_text

FOLDER = ".chunks"
SETTINGS = "settings.json"


def difference(old, new):
    """'precision int8 -> fp32, views 1 -> 4' for the keys whose values differ ('' when none)."""
    def show(value):
        if isinstance(value, list) and len(value) > 4:
            return f"({len(value)} values)"
        if isinstance(value, str) and len(value) > 40 and all(c in "0123456789abcdef," for c in value):
            return f"{value[:12]}..."  # a sha256 (or several): its start tells them apart
        return str(value)  # paths in full: two folders often differ only at the end

    return ", ".join(f"{k} {show(old.get(k))} -> {show(new.get(k))}"
                     for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))


class Journal:
    def __init__(self, out):
        self.folder = Path(out) / FOLDER
        self.settings_path = self.folder / SETTINGS

    def chunks(self):
        return sorted(self.folder.glob("chunk-*.csv"))

    def start(self, settings, resume):
        """A fresh run deletes any journal, then records ``settings``; a resumed run checks them
        against the journal's first (and changes nothing when they differ). The outputs of the
        last finished run are not touched here: they are replaced only by a complete new set
        (runtime.infer), so a run that fails keeps them."""
        if resume and self.settings_path.is_file():
            try:
                old = read_json(self.settings_path)
            except DataError as err:
                raise DataError(self.settings_path, f"damaged journal ({err.reason}); rerun without --resume") from None
            if old != settings:
                raise DataError(self.settings_path, f"--resume with other settings than the interrupted run "
                                                    f"({difference(old, settings)}); rerun without --resume to "
                                                    "start over, or with the first run's settings")
            return
        if resume and self.chunks():
            raise DataError(self.settings_path, "missing, so the settings of the results journaled here are "
                                                "unknown; rerun without --resume")
        if not resume:
            shutil.rmtree(self.folder, ignore_errors=True)
        atomic_write_json(self.settings_path, settings)

    def read(self):
        """({Id: probabilities}, {Id: (file, reason)}) of every journaled Id."""
        probs, errors = {}, {}
        for path in self.chunks():
            try:  # a regular file only, read a bounded line at a time: a chunk may be hostile too
                handle, _ = open_regular(path, "r", newline="", encoding="utf-8", errors="surrogateescape")
                with handle:
                    for row in csv.reader(bounded_lines(handle, path)):
                        if len(row) == 4 + NUM_CLASSES and row[1] == "ok":
                            p = np.array([float(v) for v in row[4:]], np.float32)
                            if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
                                raise ValueError("a probability outside 0..1")
                            probs[row[0]] = p
                        elif len(row) == 4 and row[1] == "error":
                            errors[row[0]] = (row[2], row[3])
                        else:
                            raise ValueError(row[:2])
            except DataError as err:  # not a regular file, or a line no chunk holds
                raise DataError(path, f"damaged journal chunk ({err.reason}); rerun without --resume") from None
            except (ValueError, csv.Error):
                raise DataError(path, "damaged journal chunk; rerun without --resume") from None
        return probs, errors

    def append(self, ids, probs, errors):
        """Journal one stretch of results atomically: (Id, probabilities) and (Id, file, reason)."""
        rows = [[sample_id, "ok", "", "", *(f"{v:.6f}" for v in p)] for sample_id, p in zip(ids, probs)]
        rows += [[sample_id, "error", path, reason] for sample_id, path, reason in errors]
        atomic_write_text(self.folder / f"chunk-{len(self.chunks()):06d}.csv", csv_text(rows), "surrogateescape")
