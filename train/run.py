"""A training run folder, read and written in one place.

Training, merge, export, analysis and the viewer all go through :class:`Run`; no other module
knows the file names below. This module imports no torch (the viewer reads runs without it).

Run folder::

    RUN/config.json         the resolved FitConfig plus the preprocessing (mean/std from the data)
    RUN/folds.csv           Id,fold
    RUN/errors.csv          Id,file,reason for samples that could not be read (left out)
    RUN/fold{k}/best.pt     best epoch's checkpoint (plain state dict + config)
    RUN/fold{k}/last.pt     latest epoch with optimizer state and history, for --resume
                            (removed when the fold ends)
    RUN/fold{k}/history.json  per-epoch loss and macro-F1; "done" once the fold has finished
    RUN/fold{k}/oof.npy     the best epoch's probabilities for the fold's validation Ids, averaged
                            over the run's test-time views (runtime.tta)
    RUN/fold{k}/oof_single.npy  the same, single view
    RUN/oof.csv             Id, fold, 28 out-of-fold probabilities (test-time augmented)
    RUN/thresholds.json     per-class thresholds tuned on the out-of-fold predictions, with and
                            without test-time augmentation, overall and per fold
    RUN/metrics.json        macro-F1 (0.5, tuned, cross-fitted) overall and per fold, per-class F1
    RUN/curves.png          loss and macro-F1 per epoch per fold

A kill during a write leaves the writer's temporary file (``.NAME.XXXXXXXX.tmp``,
runtime.writeutil) behind; :meth:`Run.claim` removes those when the next fit starts.
"""

import csv
import io
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from runtime.errors import DataError
from runtime.jsonfile import read_json
from runtime.labels import multi_hot, read_labels
from runtime.preprocess import Preprocess
from runtime.writeutil import atomic_path, atomic_write_json, atomic_write_text, remove_stale_temporaries
from train.config import FitConfig

try:
    import fcntl
except ImportError:  # Windows: a fit removes only its own folds' temporaries
    fcntl = None

def _float_array(values, path, what):
    try:
        out = np.asarray(values, np.float32)
    except (TypeError, ValueError):
        raise DataError(path, f"{what} are not numbers") from None
    if out.shape != (NUM_CLASSES,) or not np.isfinite(out).all():
        raise DataError(path, f"{what}: expected {NUM_CLASSES} finite numbers")
    return out


@dataclass(frozen=True)
class Thresholds:
    """Per-class thresholds tuned on out-of-fold predictions.

    ``tuned`` fits predictions averaged over ``tta`` test-time views, ``single_view`` plain
    ones; ``folds[k]`` holds the same pair tuned on fold k's own validation predictions (what
    one fold's model is compared with)."""

    tuned: np.ndarray
    tta: int
    single_view: np.ndarray
    folds: tuple = ()

    def for_views(self, views, fold=None):
        """The thresholds for predictions averaged over ``views`` views (``tta`` or 1), of the
        ensemble (``fold`` None) or of one fold."""
        if views not in (1, self.tta):
            raise ValueError(f"thresholds were tuned for {self.tta} and 1 test-time view(s), not {views}")
        tuned, single = (self.tuned, self.single_view) if fold is None else self.folds[fold]
        return single if views == 1 else tuned

    def to_dict(self):
        return {"class_names": list(CLASS_NAMES), "tta": self.tta,
                "thresholds": [float(t) for t in self.tuned],
                "single_view_thresholds": [float(t) for t in self.single_view],
                "folds": [{"fold": k, "thresholds": [float(t) for t in tuned],
                           "single_view_thresholds": [float(t) for t in single]}
                          for k, (tuned, single) in enumerate(self.folds)]}

    @classmethod
    def from_dict(cls, data, path):
        try:
            folds = tuple((_float_array(f["thresholds"], path, f"fold {k} thresholds"),
                           _float_array(f["single_view_thresholds"], path, f"fold {k} single-view thresholds"))
                          for k, f in enumerate(data.get("folds", [])))
            return cls(_float_array(data["thresholds"], path, "thresholds"), int(data["tta"]),
                       _float_array(data["single_view_thresholds"], path, "single-view thresholds"), folds)
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(path, f"malformed thresholds file ({type(err).__name__}: {err})") from None


class Run:
    """One training run folder (see the module docstring for its files)."""

    def __init__(self, path):
        self.path = Path(path)
        self._config = None

    def file(self, name):
        return self.path / name

    def fold_file(self, k, name):
        return self.path / f"fold{k}" / name

    def _json(self, name, what):
        path = self.file(name)
        if not self.path.is_dir():
            raise DataError(self.path, "not a folder" if self.path.exists() else "run folder not found")
        if name != "config.json" and not self.file("config.json").is_file():
            raise DataError(self.path, "not a training run folder (no config.json; python -m train fit makes one)")
        if not path.is_file():
            raise DataError(path, f"missing: {what}")
        return read_json(path)

    # ------------------------------------------------------------------ writers
    @contextmanager
    def claim(self, folds, lock=True):
        """Held while a fit writes to the folder; yields the stale temporaries it removed.

        Several fits may write to one run folder at once (``--fold 0`` and ``--fold 1`` in two
        processes, the ``--jobs`` fold processes), so another's temporary file may be a write in
        progress. Each fit holds a shared flock on the run folder itself (its directory
        descriptor: no lock file is left behind, and the kernel drops the lock when the process
        dies, kill -9 included). A fit that gets it exclusively is the only writer and removes
        every temporary in the folder and its fold folders; otherwise (or where the file system
        has no flock) it removes those of the folds it trains (``folds``), which no other process
        writes. ``lock=False`` (torchrun's other ranks, which write nothing) removes nothing."""
        if not lock:
            yield []
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            alone = _flock(fd, exclusive=True)
            places = [self.path, *sorted(self.path.glob("fold*"))] if alone else [self.fold_file(k, "") for k in folds]
            removed = [path for folder in places for path in remove_stale_temporaries(folder)]
            _flock(fd, exclusive=False)  # from exclusive, or alongside the other fits
            yield removed
        finally:
            os.close(fd)  # releases the lock

    # ------------------------------------------------------------------ settings
    def _read_config(self):
        if self._config is None:
            data = self._json("config.json", "not a training run folder")
            try:
                self._config = (FitConfig.from_dict(data["fit"]), Preprocess.from_dict(data["preprocess"]))
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(self.file("config.json"), f"malformed ({type(err).__name__}: {err})") from None
        return self._config

    @property
    def config(self):
        return self._read_config()[0]

    @property
    def preprocess(self):
        return self._read_config()[1]

    def has_config(self):
        return self.file("config.json").is_file()

    @property
    def pretrained(self):
        """The weights the run started from ({"name", "sha256"}), or None (fresh weights, or a run
        made before they were recorded)."""
        data = self._json("config.json", "not a training run folder")
        value = data.get("pretrained") if isinstance(data, dict) else None
        return value if isinstance(value, dict) else None

    @property
    def training_data(self):
        """What the run records of its data (train.synth.dataset_record: the path, and
        ``kind: synthetic`` for generated data), or None for a run made before it was recorded."""
        data = self._json("config.json", "not a training run folder")
        value = data.get("training_data") if isinstance(data, dict) else None
        return value if isinstance(value, dict) else None

    def write_config(self, cfg, pp, pretrained=None, training_data=None):
        data = {"fit": cfg.to_dict(), "preprocess": pp.to_dict()}
        if pretrained is not None:
            data["pretrained"] = pretrained
        if training_data is not None:
            data["training_data"] = training_data
        atomic_write_json(self.file("config.json"), data)
        self._config = (cfg, pp)

    # ------------------------------------------------------------------ split and labels
    def split(self):
        """(Ids, fold per Id) in folds.csv order."""
        path = self.file("folds.csv")
        if not path.is_file():
            raise DataError(path, "missing: not a training run folder")
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        try:
            return [r["Id"] for r in rows], np.array([int(r["fold"]) for r in rows], np.int64)
        except (KeyError, TypeError, ValueError):
            raise DataError(path, "expected columns Id,fold with whole-number folds") from None

    def write_split(self, ids, folds):
        atomic_write_text(self.file("folds.csv"), "Id,fold\n" + "".join(f"{i},{int(f)}\n" for i, f in zip(ids, folds)))

    def targets(self):
        """(Ids, folds, multi-hot targets) in folds.csv order, from the run's labels file."""
        ids, folds = self.split()
        labels_csv, _ = self.config.dataset()
        table = read_labels(labels_csv)
        missing = [i for i in ids if i not in table]
        if missing:
            raise DataError(labels_csv, f"{len(missing)} Ids of the run have no labels (first: {missing[0]})")
        return ids, folds, multi_hot([table[i] for i in ids])

    def write_errors(self, errors):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["Id", "file", "reason"])
        writer.writerows(errors)
        atomic_write_text(self.file("errors.csv"), buf.getvalue())

    # ------------------------------------------------------------------ folds
    def checkpoint(self, k):
        return self.fold_file(k, "best.pt")

    def checkpoints(self):
        """best.pt of every fold, in fold order."""
        return [self.checkpoint(k) for k in range(self.config.folds)]

    def history(self, k):
        """Fold k's history.json (written atomically, so never half-read); empty before its first epoch."""
        path = self.fold_file(k, "history.json")
        return read_json(path) if path.exists() else {"epochs": []}

    def write_history(self, k, history):
        atomic_write_json(self.fold_file(k, "history.json"), history)

    def epochs_done(self, k):
        return len(self.history(k)["epochs"])

    def fold_done(self, k):
        return self.history(k).get("done", False)

    def oof_file(self, k, views):
        """Fold k's out-of-fold predictions averaged over ``views`` views: oof.npy for the run's
        test-time views, oof_single.npy for one view (the same file when the run has no TTA)."""
        return self.fold_file(k, "oof.npy" if views == self.config.tta else "oof_single.npy")

    def oof(self, k, views, rows=None):
        path = self.oof_file(k, views)
        if not path.exists():
            raise DataError(path, f"fold {k} has not finished training")
        probs = np.load(path, allow_pickle=False)
        if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES or (rows is not None and len(probs) != rows):
            raise DataError(path, f"shape {probs.shape} does not match the fold's {rows} Ids")
        return probs

    def write_npy(self, path, array):
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.asarray(array, np.float32))
        return path

    # ------------------------------------------------------------------ results
    def thresholds(self):
        path = self.file("thresholds.json")
        return Thresholds.from_dict(self._json("thresholds.json", "the run has not been merged (python -m train merge)"),
                                    path)

    def write_thresholds(self, thresholds):
        atomic_write_json(self.file("thresholds.json"), thresholds.to_dict())

    def metrics(self):
        return self._json("metrics.json", "the run has not been merged (python -m train merge)")

    def write_metrics(self, metrics):
        atomic_write_json(self.file("metrics.json"), metrics)

    def write_oof_csv(self, ids, folds, probs):
        header = "Id,fold," + ",".join(f'"{n}"' for n in CLASS_NAMES) + "\n"
        body = "".join(f"{i},{f}," + ",".join(f"{p:.6f}" for p in row) + "\n" for i, f, row in zip(ids, folds, probs))
        atomic_write_text(self.file("oof.csv"), header + body)

    def oof_table(self):
        """(Ids, (N, 28) probabilities) from oof.csv."""
        path = self.file("oof.csv")
        if not path.is_file():
            raise DataError(path, "missing: the run has not been merged (python -m train merge)")
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))[1:]
        try:
            return [r[0] for r in rows], np.array([[float(v) for v in r[2:]] for r in rows], np.float32).reshape(-1, NUM_CLASSES)
        except ValueError:
            raise DataError(path, "malformed out-of-fold table") from None


def _flock(fd, exclusive):
    """Lock ``fd`` without waiting for an exclusive lock (waiting for a shared one); False when the
    lock is held by another process or the platform or file system has no flock."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        return True
    except OSError:
        return False
