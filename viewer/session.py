"""What the viewer looks at, without Qt and without torch: a dataset folder with its labels, and
the models that predict and explain it.

:class:`Dataset` is one image folder. :class:`Models` is a model.json and/or a training run; it is
cheap to build (JSON only) and opens the heavy parts - ONNX Runtime sessions, the PyTorch
checkpoints - lazily, on whichever worker thread first needs them, into one ExitStack that
:meth:`Models.close` unwinds. File > Open swaps the Dataset and keeps the Models.

Predictions come from ``runtime`` (ONNX Runtime or TensorRT through model.json), averaged over
the test-time views the thresholds were tuned for, or, with only a run, from the run's
checkpoints over the same views. CAMs always come from the checkpoints (model.json's, each
checked against its sha256, or the run's).
"""

import os
import threading
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np

from runtime.classes import CHANNELS
from runtime.errors import DataError
from runtime.infer import predicted_classes
from runtime.labels import read_labels
from runtime.preprocess import image_chw, preprocess
from runtime.reader import EXTENSIONS, ImageFolder
from viewer.calibration import TIFF_SUFFIXES, field_pixel_size
from viewer.cam_request import CAM_METHODS, check_cam_request, check_fold



def _image_dir(data):
    data = Path(data)
    return data / "train" if (data / "train").is_dir() and not ImageFolder(data).ids() else data


def _labels_for(data):
    # labels beside the images, or Kaggle-style one level up (DATA/train.csv for DATA/train,
    # the synthetic DATA/test_labels.csv for DATA/test)
    candidates = [data / n for n in ("train.csv", "labels.csv", "test_labels.csv")]
    candidates.append(data.parent / f"{data.name}_labels.csv")
    if data.name == "train":
        candidates.append(data.parent / "train.csv")
    for path in candidates:
        if path.is_file():
            return read_labels(path)
    return {}


class Dataset:
    """One image folder: its complete Ids, the Ids that cannot be read (with the reason), labels."""

    def __init__(self, data=None):
        self.path = Path(data) if data else None
        self.folder = ImageFolder(_image_dir(data)) if data else None
        self.labels = _labels_for(self.path) if data else {}
        # problems: Ids the scan finds that cannot be read (a missing channel, an unsafe name), with the reason
        self.ids, self.problems = self.folder.listing() if self.folder else ([], {})
        self.pixel_sizes = {}  # Id -> viewer.calibration.PixelSize or None, for the Ids read so far

    def empty_reason(self, cli=False):
        """Why there is nothing to show, in one line (for a Dataset without Ids): what to do in
        the window's terms, or in the command line's (``cli``)."""
        if self.folder is None:
            return ("no image folder: give one with --data DIR (or --sample)" if cli else
                    "no image folder: open one (File > Open image folder, or drop a folder on the window)")
        return (f"{self.folder.root}: no images (a sample is four files {{Id}}_red, _green, _blue and _yellow, "
                f"each {' or '.join(EXTENSIONS)})")

    def read(self, sample_id):
        if sample_id in self.problems:
            raise DataError(self.folder.root / sample_id, self.problems[sample_id])
        return self.folder.read(sample_id)

    def calibrate(self, sample_id, shown_width):
        """Read the pixel size the sample's TIFF files record (viewer.calibration) into
        ``pixel_sizes``: for the field being shown only, on the worker that decoded it, so the
        window just looks it up (the folder's background predictions skip this)."""
        paths = [self.folder.channel_path(sample_id, ch) for ch in CHANNELS]
        tiff = any(p.suffix.lower() in TIFF_SUFFIXES for p in paths)
        self.pixel_sizes[sample_id] = field_pixel_size(paths, shown_width) if tiff else None


class Models:
    """A model.json (``model``) and/or a training run (``run``); either may be None."""

    def __init__(self, model=None, run=None, threads=None):
        from runtime.model_spec import load_model_spec
        from train.run import Run

        if model and Path(model).is_dir() and not Path(model, "model.json").is_file() \
                and Path(model, "config.json").is_file():
            raise DataError(model, "is a training run folder: open it as the run (--run, for CAMs), "
                                   "or pick its deploy folder (with model.json) for predictions")
        self.spec = load_model_spec(model) if model else None
        self.run = Run(run) if run else None
        named = self.spec.data.get("source", {}).get("run") if self.spec is not None else None
        if self.run is None and named and Path(named, "config.json").is_file():
            self.run = Run(named)  # model.json names the run it came from: its per-fold thresholds
        if self.spec is not None:
            self.preprocess, self.views, self.folds = self.spec.preprocess, self.spec.tta, self.spec.folds
        elif self.run is not None:
            self.preprocess, self.views, self.folds = self.run.preprocess, self.run.config.tta, self.run.config.folds
        else:
            self.preprocess, self.views, self.folds = None, 1, 0
        # *Decision*: each of the two workers (ONNX Runtime, torch) gets half the cores, so
        # neither starves the other nor the GUI thread.
        self.threads = threads or max(1, (os.cpu_count() or 2) // 2)
        self._stack = ExitStack()
        self._open_lock = threading.Lock()    # opening (ONNX sessions, checkpoints) happens once
        self._torch_lock = threading.Lock()   # torch models serve one thread at a time
        self._backends = {}
        self._cam = None

    # ------------------------------------------------------------------ what there is
    @property
    def model_path(self):
        return str(self.spec.path) if self.spec else None

    @property
    def run_path(self):
        return str(self.run.path) if self.run else None

    @property
    def can_predict(self):
        return self.preprocess is not None

    def checkpoints(self):
        """[(path, sha256 or None)] in fold order: model.json's (the copies in the deployment
        folder, with their sha256), else the run's own."""
        if self.spec is not None:
            return [(c.path, c.sha256) for c in self.spec.checkpoints]
        return [(p, None) for p in self.run.checkpoints()] if self.run else []

    @property
    def can_explain(self):
        return bool(self.checkpoints())

    @property
    def cam_ready(self):
        return self._cam is not None

    # ------------------------------------------------------------------ provenance
    def training_data(self):
        """What the model records of its training data (train.synth.dataset_record): model.json's
        ``source.training_data``, else the run's config.json, else - for files made before it was
        recorded - the dataset.json in the run's data folder; None when nothing is known."""
        from train.synth import dataset_record

        record = self.spec.data.get("source", {}).get("training_data") if self.spec is not None else None
        if isinstance(record, dict):
            return record
        if self.run is None or not self.run.has_config():
            return None
        try:
            return self.run.training_data or dataset_record(self.run.config.data)
        except DataError:
            return None

    def provenance_warning(self):
        """One line for the window where the training data is known to be synthetic, else ""."""
        record = self.training_data()
        if not record or record.get("kind") != "synthetic":
            return ""
        generator = record.get("generator", "a generator").replace("python -m ", "")
        return (f"model trained on synthetic data ({generator}): "
                "predictions on real microscopy are not meaningful")

    def thresholds(self, fold="mean"):
        """(28 thresholds or None, one line saying which): those tuned for this model (the
        ensemble or one fold) on predictions averaged over ``self.views`` views."""
        check_fold(fold, self.folds)
        if fold == "mean" and self.spec is not None:
            # the thresholds of the file the ensemble's predictions come from (an INT8 file has
            # its own); before that backend is open there are no predictions to compare
            backend = self._backends.get("mean")
            model_file = backend.file if backend is not None else None
            thresholds, exact = self.spec.thresholds_for(self.views, model_file)
            which = model_file.variant if model_file is not None else "fp32"
            return np.asarray(thresholds, np.float32), f"ensemble ({which}), tuned for {self.views} view(s)" + (
                "" if exact else " (stand-in)")
        tuned = self._run_thresholds()
        if tuned is None:
            return None, "no thresholds.json in the run"
        if fold == "mean":
            return tuned.for_views(self.views), f"ensemble, tuned for {self.views} view(s)"
        k = int(fold[4:])
        if k >= len(tuned.folds):
            return None, f"the run has no thresholds tuned for fold {k}"
        return tuned.for_views(self.views, fold=k), f"fold {k}, tuned on its validation Ids for {self.views} view(s)"

    def _run_thresholds(self):
        if self.run is None or not self.run.file("thresholds.json").is_file():
            return None
        tuned = self.run.thresholds()
        return tuned if self.views in (1, tuned.tta) else None

    def predicted(self, probs, fold="mean"):
        thresholds, _ = self.thresholds(fold)
        return None if thresholds is None else predicted_classes(probs, thresholds)

    # ------------------------------------------------------------------ heavy parts, opened lazily
    def _backend(self, fold):
        """The ONNX (or TensorRT) backend for the ensemble or one fold, or None when model.json
        lists no file for it."""
        with self._open_lock:
            if fold not in self._backends:
                from runtime.backends import make_backend

                try:
                    backend = make_backend(self.spec, "auto", model="ensemble" if fold == "mean" else fold)
                except (DataError, ValueError):  # model.json lists no file for this fold
                    backend = None
                if backend is not None and hasattr(backend, "threads"):
                    backend.threads = self.threads  # ONNX Runtime's intra-op threads (0: all cores)
                self._backends[fold] = self._stack.enter_context(backend) if backend is not None else None
            return self._backends[fold]

    def cam_models(self):
        """The run's PyTorch models (imports torch the first time: seconds)."""
        with self._open_lock:
            if self._cam is None:
                refs = self.checkpoints()
                if not refs:
                    raise DataError("model", "CAMs need the PyTorch checkpoints: open a training run, or a "
                                             "deployment folder whose checkpoints exist (File > Open model; "
                                             "--run on the command line)")
                from viewer.cam import CamModels

                self._cam = self._stack.enter_context(
                    CamModels(refs, self.preprocess if self.spec else None, threads=self.threads))
            return self._cam

    def predict(self, samples, fold="mean"):
        """(N, 28) probabilities of uint8 (H, W, 4) samples, averaged over ``self.views`` views."""
        if not self.can_predict:
            raise DataError("model", "no model for predictions: open a deployment folder or a training run "
                                    "(File > Open model; --model or --run on the command line)")
        check_fold(fold, self.folds)
        backend = self._backend(fold) if self.spec is not None else None
        if backend is not None:  # a runtime backend takes the uint8 image (it normalises where its file does not)
            return backend.predict(np.stack([image_chw(s, self.preprocess) for s in samples]), self.views)
        cams = self.cam_models()
        with self._torch_lock:
            return cams.probabilities(np.stack([preprocess(s, self.preprocess) for s in samples]), fold, self.views)

    def cam(self, sample, cls, method="gradcam", fold="mean"):
        """A map in 0..1 at the sample's own resolution."""
        return self.cams(sample, [cls], method, fold)[0]

    def cams(self, sample, classes, method="gradcam", fold="mean"):
        """One map per class (0..1, at the sample's own resolution), the forward passes shared
        by the classes (viewer.cam.CamModels.cam_classes)."""
        classes = check_cam_request(classes, method, fold, max(self.folds, 1), CAM_METHODS)
        x = preprocess(sample, self.preprocess)[None]
        cams = self.cam_models()
        with self._torch_lock:
            maps = cams.cam_classes(x, classes, method, fold, views=self.views)
        return [cv2.resize(m, (sample.shape[1], sample.shape[0]), interpolation=cv2.INTER_LINEAR) for m in maps]

    def close(self):
        with self._open_lock:
            self._backends, self._cam = {}, None
            self._stack.close()


class Session:
    """A dataset and the models, as the window sees them."""

    def __init__(self, data=None, model=None, run=None, models=None, dataset=None):
        self.dataset = dataset if dataset is not None else Dataset(data)
        self.models = models if models is not None else Models(model, run)

    @property
    def ids(self):
        return self.dataset.ids

    @property
    def labels(self):
        return self.dataset.labels

    def listed_ids(self):
        """Every Id the list shows: the readable ones and those missing a channel, sorted."""
        return sorted([*self.dataset.ids, *self.dataset.problems])

    def sample(self, sample_id):
        return self.dataset.read(sample_id)

    def shown_sample(self, sample_id):
        """The sample to show, with its calibration read (Dataset.calibrate)."""
        sample = self.sample(sample_id)
        self.dataset.calibrate(sample_id, sample.shape[1])
        return sample

    def with_folder(self, data):
        """The same models on another folder (File > Open)."""
        return Session(data, models=self.models)

    def with_models(self, models):
        """The same folder with other models (File > Open model); nothing of the folder is re-read."""
        return Session(models=models, dataset=self.dataset)

    def close(self):
        self.models.close()

