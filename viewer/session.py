"""What the viewer looks at, without Qt: a dataset folder, its labels, a model and the CAMs.

Predictions come from ``runtime`` (ONNX Runtime or TensorRT through model.json) or, when only a
run is given, from the run's PyTorch checkpoints. CAMs always come from the checkpoints (those of
the run, or those model.json lists).
"""

from pathlib import Path

import cv2
import numpy as np

from runtime.classes import NUM_CLASSES
from runtime.errors import DataError
from runtime.labels import read_labels
from runtime.preprocess import preprocess
from runtime.reader import ImageFolder


def _image_dir(data):
    data = Path(data)
    return data / "train" if (data / "train").is_dir() and not ImageFolder(data).ids() else data


class Session:
    def __init__(self, data=None, model=None, run=None):
        self.data = Path(data) if data else None
        self.folder = ImageFolder(_image_dir(data)) if data else None
        self.labels = {}
        if data:
            # labels beside the images, or Kaggle-style one level up (DATA/train.csv for DATA/train,
            # the synthetic DATA/test_labels.csv for DATA/test)
            candidates = [self.data / n for n in ("train.csv", "labels.csv", "test_labels.csv")]
            candidates.append(self.data.parent / f"{self.data.name}_labels.csv")
            if self.data.name == "train":
                candidates.append(self.data.parent / "train.csv")
            for path in candidates:
                if path.is_file():
                    self.labels = read_labels(path)
                    break
        self.ids = self.folder.ids() if self.folder else []
        self.spec = None
        self.backend = None
        self.thresholds = np.full(NUM_CLASSES, 0.5, np.float32)
        self.checkpoints = []
        if model:
            from runtime.backends import make_backend
            from runtime.model_spec import load_model_spec

            self.spec = load_model_spec(model)
            self.backend = make_backend(self.spec, "auto").__enter__()
            self.thresholds = np.asarray(self.spec.thresholds_for(self.spec.tta, self.backend.file)[0], np.float32)
            self.checkpoints = [str(c.path) for c in self.spec.checkpoints if c.path.is_file()]
        if run:
            from train.run import Run

            run = Run(run)
            self.checkpoints = [str(p) for p in run.checkpoints()]
            if self.spec is None and run.file("thresholds.json").is_file():
                # Without model.json the probabilities come from the checkpoints, one view each.
                self.thresholds = run.thresholds().for_views(1)
        self._cam_models = None
        self.predictions = {}

    @property
    def folds(self):
        return len(self.checkpoints)

    @property
    def preprocess(self):
        if self.spec is not None:
            return self.spec.preprocess
        return self.cam_models().preprocess if self.checkpoints else None

    def cam_models(self):
        if self._cam_models is None:
            if not self.checkpoints:
                raise DataError("model", "Grad-CAM needs the PyTorch checkpoints: open a run (--run) or a model.json whose checkpoints exist")
            from viewer.cam import CamModels

            self._cam_models = CamModels(self.checkpoints)
        return self._cam_models

    def sample(self, sample_id):
        return self.folder.read(sample_id)

    def predict(self, sample_id, fold="mean"):
        """28 probabilities for one sample (cached for the ensemble)."""
        key = (sample_id, fold)
        if key not in self.predictions:
            x = preprocess(self.sample(sample_id), self.preprocess)[None]
            if self.backend is not None and fold == "mean":
                probs = self.backend.predict(x, self.spec.tta)[0]  # the views its thresholds were tuned on
            else:
                probs = self.cam_models().probabilities(x, fold)[0]
            self.predictions[key] = probs
        return self.predictions[key]

    def predicted(self, probs):
        above = np.flatnonzero(probs > self.thresholds)
        return above.tolist() if len(above) else [int(np.argmax(probs))]

    def cam(self, sample_id, cls, method="gradcam", fold="mean"):
        """A CAM in 0..1 at the sample's own resolution."""
        sample = self.sample(sample_id)
        x = preprocess(sample, self.preprocess)[None]
        cam = self.cam_models().cam(x, [cls], method, fold)[0]
        return cv2.resize(cam, (sample.shape[1], sample.shape[0]), interpolation=cv2.INTER_LINEAR)

    def close(self):
        if self.backend is not None:
            self.backend.__exit__(None, None, None)
            self.backend = None
