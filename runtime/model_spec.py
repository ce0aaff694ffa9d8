"""``model.json``: the one contract between export and everything downstream.

The runtime and the viewer read only this file to know how to feed a model and how to turn its
output into labels: class names, preprocessing, the named test-time views and how they are
averaged, the decision rule, thresholds per variant (precision and flavour) and view count, every
exported file with its outputs, variant and sha256, and the default file per backend and device.
docs/model-json.md describes every key; ``runtime.model_schema`` is its JSON Schema.

``load_model_spec`` validates the file as a whole before anything else happens: the schema
(types, ranges, thresholds in [0, 1]; NaN and Infinity are not JSON), then what a schema cannot
say: every path inside the deployment folder, references between sections, the input size the
same everywhere. Any fault is one ``DataError(path, reason)``. A listed file is checked again when
a backend loads it (``ModelFile.verified``): its sha256, and for ONNX its graph's input and
outputs against model.json.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from runtime.errors import DataError
from runtime.model_schema import DECISION, FORMAT, INPUT_DTYPES, SCHEMA, VERSION
from runtime.preprocess import Preprocess
from runtime.tta import contract as tta_contract
from runtime.writeutil import atomic_write_json

INPUT_NAME = "image"
PROBS = "probs"
LOGITS = "logits"
FP32 = "fp32"  # the variant of the FP32 files, and of the checkpoints the torch backend runs
ONNX_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}  # model.json's input.dtype -> ONNX Runtime's

_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


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
    Grad-CAM load it); a copy inside the deployment folder."""

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
    target: str        # any, cpu (ONNX Runtime's CPU kernels), tensorrt
    format: str        # onnx or engine
    variant: str       # key into model.json's variants: thresholds and quality
    outputs: tuple     # output names: probs, and logits for the FP32 fold files
    sha256: str
    size: int          # the input's spatial size model.json promises
    info: dict
    input_dtype: str = "uint8"  # model.json's input.dtype: uint8 (version 3) or float32 (version 2)

    def verified(self):
        """The path, after checking its sha256 and, for ONNX, that the graph takes
        (batch, 4, size, size) of the dtype model.json says and has the outputs it lists."""
        verified(self.path, self.sha256)
        if self.format == "onnx":
            from runtime.onnx_session import make_session

            session = make_session(self.path, "cpu")
            inputs = [(i.name, i.shape) for i in session.get_inputs()]
            if [(name, shape[1:]) for name, shape in inputs] != [(INPUT_NAME, [4, self.size, self.size])]:
                raise DataError(self.path, f"graph input {inputs} does not match model.json "
                                           f"({INPUT_NAME!r} of (batch, 4, {self.size}, {self.size}))")
            given = session.get_inputs()[0].type
            if given != ONNX_TYPES[self.input_dtype]:
                raise DataError(self.path, f"graph input {INPUT_NAME!r} is {given}, model.json says "
                                           f"{self.input_dtype} ({ONNX_TYPES[self.input_dtype]})")
            missing = set(self.outputs) - {o.name for o in session.get_outputs()}
            if missing:
                raise DataError(self.path, f"graph lacks the outputs model.json lists: {sorted(missing)}")
        return self.path


@dataclass(frozen=True)
class Variant:
    """A precision and flavour of the model (fp32, fp16, int8-cpu-vnni, ...): its thresholds
    per view count and whether export found it good enough for ``auto`` to choose."""

    name: str
    precision: str
    target: str
    cpu: str           # for CPU INT8: the CPU class it is for (vnni, avx2); else None
    usable: bool
    reason: str
    thresholds: dict   # views -> (28 thresholds, the view count they were tuned on)
    quality: dict


class ModelSpec:
    """A parsed, validated ``model.json``."""

    def __init__(self, path, data):
        self.path = Path(path)
        self.root = self.path.parent
        _validate(self.path, data)
        self.data = data
        self.version = data["version"]
        self.class_names = tuple(data["class_names"])
        self.preprocess = _preprocess(self.path, data["preprocess"])
        self.input = data["input"]
        self.outputs = data["outputs"]
        self.folds = data["folds"]
        self.tta = data["tta"]["default"]  # the view count the runtime averages unless told otherwise
        self.variants = {name: Variant(name, v["precision"], v["target"], v.get("cpu"), v["usable"], v["reason"],
                                       {int(k): (tuple(t["values"]), t["tuned_on_views"])
                                        for k, t in v["thresholds"].items()}, v.get("quality", {}))
                         for name, v in data["variants"].items()}
        self.files = [ModelFile(self.root / f["path"], f["kind"], f["fold"], f["precision"], f["target"],
                                f["format"], f["variant"], tuple(f["outputs"]), f["sha256"],
                                self.preprocess.size, f, data["input"]["dtype"]) for f in data["files"]]
        self.checkpoints = [Checkpoint(c["fold"], self.root / c["path"], c["sha256"]) for c in data["checkpoints"]]
        self.defaults = data["defaults"]

    def variant_of(self, model_file):
        """The Variant of a listed file; ``None`` stands for the FP32 checkpoints."""
        return self.variants[model_file.variant if model_file is not None else FP32]

    def thresholds_for(self, views, model_file=None):
        """(thresholds, exact) for ``model_file``'s probabilities averaged over ``views`` views;
        ``exact`` is False when model.json's thresholds for that count were tuned on another."""
        values, tuned_on = self.variant_of(model_file).thresholds[views]
        return values, tuned_on == views

    @property
    def input_shape(self):
        return tuple(self.input["shape"])

    def find(self, kind="ensemble", precision="fp32", target=None, fmt="onnx", fold=None, cpu=None):
        """The file matching the request, or None. ``None`` for precision, target or fold means
        any; without a target an ONNX request prefers the generic file over the
        TensorRT-flavoured INT8 one; ``cpu`` prefers the INT8 flavour for that CPU class."""
        candidates = [f for f in self.files if f.kind == kind and f.format == fmt
                      and (precision is None or f.precision == precision)
                      and (target is None or f.target == target)
                      and (fold is None or f.fold == fold)]
        candidates.sort(key=lambda f: (fmt == "onnx" and target is None and f.target == "tensorrt",
                                       cpu is not None and self.variant_of(f).cpu not in (None, cpu)))
        return candidates[0] if candidates else None

    def named(self, name):
        """The listed file whose path is ``name`` (relative to the folder), or None."""
        return next((f for f in self.files if f.info["path"] == name), None)

    def choices(self):
        return [f"{f.path.name} ({f.kind}, {f.variant})" for f in self.files]


def _preprocess(path, data):
    try:
        return Preprocess.from_dict(data)
    except (TypeError, ValueError) as err:
        raise DataError(path, f"preprocess: {err}") from None


def _inside(root, path, rel, what):
    """Refuse a path that is absolute or leads out of the deployment folder (symlinks resolved)."""
    p = Path(rel)
    if p.is_absolute() or not (root / p).resolve().is_relative_to(root.resolve()):
        raise DataError(path, f"{what} {rel!r} is outside the deployment folder")


def _validate(path, data):
    """One DataError for the first fault of a parsed model.json, or nothing."""
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")
        raise DataError(path, f"not a model.json: the JSON is {kind}, not an object")
    if data.get("format") != FORMAT:
        raise DataError(path, f"not a model.json of this toolkit (format {data.get('format')!r})")
    if data.get("version") not in list(INPUT_DTYPES):  # a list compares by ==: any JSON value may be here
        raise DataError(path, f"model.json version {data.get('version')!r} is not one this runtime reads "
                              f"({', '.join(map(str, INPUT_DTYPES))}): re-export it with `python -m export onnx`")
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(data))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "top level"
        raise DataError(path, f"{where}: {error.message[:200]}")
    if tuple(data["class_names"]) != CLASS_NAMES:
        raise DataError(path, "class_names differ from the 28 HPA classes this toolkit predicts, in its order")
    size = data["preprocess"]["size"]
    if data["input"]["shape"][2:] != [size, size]:
        raise DataError(path, f"input.shape {data['input']['shape']} does not match preprocess.size {size}")
    root = path.parent
    for f in data["files"]:
        _inside(root, path, f["path"], "file")
        if f["variant"] not in data["variants"]:
            raise DataError(path, f"file {f['path']!r}: variant {f['variant']!r} is not in variants")
        if not (f["kind"] == "ensemble" and f["fold"] == -1 or f["kind"] == "fold" and 0 <= f["fold"] < data["folds"]):
            raise DataError(path, f"file {f['path']!r}: {f['kind']} with fold {f['fold']} (folds: {data['folds']})")
    for c in data["checkpoints"]:
        _inside(root, path, c["path"], "checkpoint")
    listed = {f["path"] for f in data["files"]}
    for choice in data["defaults"]["choices"]:
        unknown = [c for c in choice["candidates"] if c not in listed]
        if unknown:
            raise DataError(path, f"defaults: {unknown[0]!r} is not a listed file")
    if FP32 not in data["variants"]:
        raise DataError(path, f"variants: no {FP32!r} (the checkpoints' thresholds)")


def load_model_spec(path):
    """Read and validate ``DEPLOY/model.json`` (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.json"
    if not path.is_file():
        raise DataError(path, "model.json not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise DataError(path, f"not valid JSON ({err})") from None
    return ModelSpec(path, data)


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def contract_sections(default_views):
    """The sections of model.json that state how to reproduce the runtime's output: the inputs
    from the files, the outputs, the test-time views and the decision rule."""
    return {
        "outputs": {PROBS: {"dtype": "float32", "shape": ["batch", NUM_CLASSES],
                            "meaning": "sigmoid probabilities; an ensemble file's are the mean over its folds"},
                    LOGITS: {"dtype": "float32", "shape": ["batch", NUM_CLASSES],
                             "meaning": "pre-sigmoid scores (FP32 fold files only: see each file's outputs)"}},
        "tta": {"default": int(default_views), **tta_contract()},
        "decision": {**DECISION,
                     "rule": "class c is predicted when p[c] > threshold[c], p being the views' mean; "
                             "when no class passes, the single class with the highest p (the lowest index on ties)",
                     "thresholds": "variants[file.variant].thresholds[str(views)].values, views being the count "
                                   "averaged (tta.default unless asked otherwise)"},
    }


def input_section(pp):
    """The ``input`` section: what the graph takes (the resized uint8 image) and how to make it
    from the files. The normalisation is the graph's own first nodes."""
    return {"name": INPUT_NAME, "dtype": INPUT_DTYPES[VERSION], "shape": ["batch", 4, pp.size, pp.size],
            "from_files": [
                "decode {Id}_{channel}.png for each channel of preprocess.channels as grayscale: 8-bit as is, "
                "16-bit times 255/65535 rounded to 8 bits",
                "stack the channels in that order: uint8 (H, W, 4)",
                "resize to (size, size) with OpenCV's resize and interpolation preprocess.interpolation "
                "(area: cv2.INTER_AREA), unless already that size",
                "move channels first: (4, size, size); stack images into a batch: uint8 (N, 4, size, size)",
                "nothing more: the graph normalises, x = float32(pixel) * float32(1/255), then "
                "(x - mean[c]) / std[c] per channel, in float32",
            ]}


def write_model_spec(path, *, preprocess, folds, tta, variants, defaults, files, checkpoints, versions, source):
    """Write model.json (atomically) and return it parsed and validated. ``defaults``: a function
    of the parsed spec giving the ``defaults`` section (runtime.backends.select.default_choices)."""
    data = {"format": FORMAT, "version": VERSION, "class_names": list(CLASS_NAMES),
            "preprocess": preprocess.to_dict(), "input": input_section(preprocess),
            **contract_sections(tta), "variants": variants, "defaults": {"rule": "", "choices": []}, "folds": folds,
            "files": files, "checkpoints": checkpoints, "versions": versions, "source": source}
    data = json.loads(json.dumps(data))  # validate exactly what is written (tuples become lists)
    data["defaults"] = defaults(ModelSpec(path, data))
    spec = ModelSpec(path, data)
    atomic_write_json(path, data)
    return spec
