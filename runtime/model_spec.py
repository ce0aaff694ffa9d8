"""``model.json``: the one contract between export and everything downstream.

The runtime and the viewer read only this file to know how to feed a model: class names,
thresholds, preprocessing, input/output names and shapes, and every exported file with its
precision, target and sha256. A file whose bytes do not match its sha256 is refused.

Example (abridged)::

    {"format": "hpa-toolkit-model", "version": 1,
     "class_names": [...28...], "thresholds": [...28...], "tta": 4, "single_view_thresholds": [...28...],
     "preprocess": {"size": 128, "mean": [...], "std": [...], "channels": ["red", "green", "blue", "yellow"],
                    "interpolation": "area"},
     "input": {"name": "image", "dtype": "float32", "shape": ["batch", 4, 128, 128]},
     "outputs": {"probs": {"dtype": "float32", "shape": ["batch", 28]}},
     "folds": 3,
     "files": [{"path": "ensemble.onnx", "kind": "ensemble", "precision": "fp32", "target": "any",
                "format": "onnx", "sha256": "...", ...}, ...],
     "checkpoints": [{"fold": 0, "path": "...", "sha256": "..."}],
     "versions": {"torch": "...", "onnx": "...", "onnxruntime": "...", "tensorrt": null}}
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from runtime.errors import DataError
from runtime.preprocess import Preprocess
from runtime.tta import VIEW_COUNTS
from runtime.writeutil import atomic_write_json

FORMAT = "hpa-toolkit-model"
VERSION = 1
INPUT_NAME = "image"
PROBS = "probs"
LOGITS = "logits"


def sha256_of(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


def verified(path, sha256):
    """``path``, after checking the file exists and its sha256 matches model.json's."""
    if not path.is_file():
        raise DataError(path, "listed in model.json but missing")
    actual = sha256_of(path)
    if actual != sha256:
        raise DataError(path, f"sha256 {actual[:12]}... does not match model.json ({sha256[:12]}...)")
    return path


@dataclass(frozen=True)
class Checkpoint:
    """A training checkpoint model.json was exported from (the torch backend and the viewer's
    Grad-CAM load it)."""

    fold: int
    path: Path
    sha256: str

    def verified(self):
        return verified(self.path, self.sha256)


@dataclass(frozen=True)
class ModelFile:
    path: Path
    kind: str          # "fold" or "ensemble"
    fold: int          # -1 for the ensemble
    precision: str     # fp32, fp16, int8
    target: str        # any, cpu (INT8 u8/s8 for ONNX Runtime CPU), tensorrt
    format: str        # onnx or engine
    sha256: str
    info: dict

    def verified(self):
        return verified(self.path, self.sha256)


class ModelSpec:
    """A parsed ``model.json``."""

    def __init__(self, path, data):
        self.path = Path(path)
        self.root = self.path.parent
        self.data = data
        if data.get("format") != FORMAT:
            raise DataError(path, f"not a model.json of this toolkit (format {data.get('format')!r})")
        if data.get("version") != VERSION:
            raise DataError(path, f"model.json version {data.get('version')} is not supported (expected {VERSION})")
        try:
            self.class_names = tuple(data["class_names"])
            self.thresholds = tuple(float(t) for t in data["thresholds"])
            self.preprocess = Preprocess.from_dict(data["preprocess"])
            self.input = data["input"]
            self.outputs = data["outputs"]
            self.folds = int(data["folds"])
            # Test-time augmentation: "thresholds" were tuned on predictions averaged over "tta"
            # dihedral views (runtime.tta); "single_view_thresholds" on plain predictions.
            self.tta = int(data.get("tta", 1))
            single = data.get("single_view_thresholds")
            self.single_view_thresholds = (tuple(float(t) for t in single) if single
                                           else self.thresholds if self.tta == 1 else None)
            self.files = [ModelFile(self.root / f["path"], f["kind"], int(f.get("fold", -1)), f["precision"],
                                    f["target"], f["format"], f["sha256"], f) for f in data["files"]]
            self.checkpoints = [Checkpoint(int(c["fold"]), Path(c["path"]), c["sha256"]) for c in data["checkpoints"]]
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(path, f"malformed model.json ({type(err).__name__}: {err})") from None
        if len(self.class_names) != NUM_CLASSES or len(self.thresholds) != NUM_CLASSES:
            raise DataError(path, f"expected {NUM_CLASSES} class names and thresholds")
        if self.single_view_thresholds is not None and len(self.single_view_thresholds) != NUM_CLASSES:
            raise DataError(path, f"expected {NUM_CLASSES} single_view_thresholds")
        if self.tta not in VIEW_COUNTS:
            raise DataError(path, f"tta must be one of {', '.join(map(str, VIEW_COUNTS))}, got {self.tta}")

    def thresholds_for(self, views):
        """(thresholds, exact): the thresholds tuned for predictions averaged over ``views`` views;
        ``exact`` is False when none were tuned for that count and the default ones stand in."""
        if views == self.tta:
            return self.thresholds, True
        if views == 1 and self.single_view_thresholds is not None:
            return self.single_view_thresholds, True
        return self.thresholds, False

    @property
    def input_shape(self):
        return tuple(self.input["shape"])

    def find(self, kind="ensemble", precision="fp32", target=None, fmt="onnx", fold=None):
        """The file matching the request, or None. ``None`` for precision, target or fold means
        any; without a target an ONNX request prefers the generic file over the
        TensorRT-flavoured INT8 one."""
        candidates = [f for f in self.files if f.kind == kind and f.format == fmt
                      and (precision is None or f.precision == precision)
                      and (target is None or f.target == target)
                      and (fold is None or f.fold == fold)]
        if fmt == "onnx" and target is None:
            candidates.sort(key=lambda f: f.target == "tensorrt")
        return candidates[0] if candidates else None

    def choices(self):
        return [f"{f.path.name} ({f.kind}, {f.precision}, {f.target})" for f in self.files]


def load_model_spec(path):
    """Read ``DEPLOY/model.json`` (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.json"
    if not path.is_file():
        raise DataError(path, "model.json not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, f"not valid JSON ({err})") from None
    return ModelSpec(path, data)


def write_model_spec(path, *, thresholds, single_view_thresholds, tta, preprocess, folds, files, checkpoints,
                     versions, extra=None):
    data = {
        "format": FORMAT,
        "version": VERSION,
        "class_names": list(CLASS_NAMES),
        "thresholds": [float(t) for t in thresholds],
        "tta": int(tta),
        "single_view_thresholds": [float(t) for t in single_view_thresholds],
        "preprocess": preprocess.to_dict(),
        "input": {"name": INPUT_NAME, "dtype": "float32",
                  "shape": ["batch", 4, preprocess.size, preprocess.size],
                  "note": "normalised with preprocess.mean/std, channels in preprocess.channels order"},
        "outputs": {PROBS: {"dtype": "float32", "shape": ["batch", NUM_CLASSES],
                            "note": "sigmoid probabilities; the ensemble's are the mean over folds"},
                    LOGITS: {"dtype": "float32", "shape": ["batch", NUM_CLASSES], "note": "fold files only"}},
        "folds": folds,
        "files": files,
        "checkpoints": checkpoints,
        "versions": versions,
        **(extra or {}),
    }
    atomic_write_json(path, data)
    return ModelSpec(path, data)
