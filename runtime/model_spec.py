"""``model.json``: the one contract between export and everything downstream.

The runtime and the viewer read only this file to know how to feed a model and how to turn its
output into labels: class names, preprocessing, the named test-time views and how they are
averaged, the decision rule, thresholds per variant (precision and flavour) and view count, every
exported file with its outputs, variant and sha256, and the default file per backend and device.
docs/model-json.md describes every key; ``runtime.model_schema`` is its JSON Schema.

``load_model_spec`` validates the file as a whole before anything else happens: a plain file of
at most 16 MiB, JSON nested at most 32 levels deep whose every number is finite and within
float32's range (NaN and Infinity are not JSON, and 1e400 would parse as infinity), the schema
(types, ranges, thresholds in [0, 1], whole numbers written as JSON integers), then what a schema
cannot say: every path inside the deployment folder, references between sections, the input size
the same everywhere. Any fault is one ``DataError(path, reason)`` that names the key. A listed file
is checked again when a backend loads it (``ModelFile.verified_bytes``): its sha256, and for ONNX
that it is self-contained and its graph's input and outputs agree with model.json; the backend
then loads the very bytes that were hashed.
"""

import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from runtime.errors import DataError
from runtime.model_schema import DECISION, FORMAT, INPUT_DTYPES, SCHEMA, VERSION
from runtime.onnx_external import external_tensor
from runtime.preprocess import Preprocess
from runtime.regular import NotRegularFile, open_regular
from runtime.tta import contract as tta_contract
from runtime.writeutil import atomic_write_json

INPUT_NAME = "image"
PROBS = "probs"
LOGITS = "logits"
FP32 = "fp32"  # the variant of the FP32 files, and of the checkpoints the torch backend runs
ONNX_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}  # model.json's input.dtype -> ONNX Runtime's

# The draft's "integer" accepts 32.0 (a number with a zero fraction); the runtime wants JSON
# integers where it counts, indexes or sizes (json gives 32.0 as a float), and a bool is never one.
_STRICT_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
_VALIDATOR = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_STRICT_TYPES)(SCHEMA)

# *Decision*: an exported model.json is tens of kilobytes, six levels deep; these bounds leave
# room for any real one and keep a hostile one from exhausting memory or the stack (a deeply
# nested file made json and jsonschema raise RecursionError).
MAX_BYTES = 16 << 20
MAX_DEPTH = 32
FLOAT32_MAX = 3.4028234663852886e38


def sha256_of(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_plain(path, limit=None):
    """The bytes of the plain file ``path`` (at most ``limit + 1`` of them when a limit is
    given). Opened without blocking and checked with fstat, so a FIFO or device put in its place
    after an earlier os.stat is refused, never read."""
    try:
        handle, _ = open_regular(path)  # runtime.regular: checked before and after opening
    except NotRegularFile as err:
        raise DataError(path, f"not a plain file ({err.kind})") from None
    with handle:
        return handle.read() if limit is None else handle.read(limit + 1)


def read_verified(path, sha256):
    """The bytes of ``path``, read once, after checking they are a plain file's and their sha256
    is model.json's. Whoever loads the file loads these bytes, so what runs is what was hashed."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(path, "listed in model.json but missing") from None
    if not stat.S_ISREG(mode):  # a folder or a FIFO: never opened (a FIFO would block the read)
        raise DataError(path, "listed in model.json but not a plain file")
    data = read_plain(path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DataError(path, f"sha256 {actual[:12]}... does not match model.json ({sha256[:12]}...)")
    return data


def verified(path, sha256):
    """``path``, after checking the file exists and its sha256 matches model.json's."""
    read_verified(path, sha256)
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

    def verified_bytes(self):
        """The file's bytes, after checking their sha256 and, for ONNX, that the file is
        self-contained and the graph takes (batch, 4, size, size) as model.json says and has the
        outputs it lists, of the dtype model.json says. Backends make their sessions from these
        bytes, not from the path, so a file replaced after the check is never run."""
        data = read_verified(self.path, self.sha256)
        if self.format == "onnx":
            from runtime.onnx_session import make_session

            external = external_tensor(data)
            if external is not None:
                # Export always writes self-contained files; external data (weights in files
                # beside the .onnx) would be read unhashed, so it is refused rather than trusted.
                # A session made from bytes cannot read external data anyway.
                raise DataError(self.path, f"tensor {external!r} keeps its weights in an external data file; "
                                           "this runtime runs only self-contained ONNX files (as export writes them), "
                                           "whose every byte model.json's sha256 covers")
            session = make_session(self.path, "cpu", data=data)
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
        return data

    def verified(self):
        """The path, after the checks of ``verified_bytes``."""
        self.verified_bytes()
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


def _check_tree(path, data):
    """Refuse nesting deeper than MAX_DEPTH and any number that is not finite or not within
    float32's range (the runtime computes in float32), naming the key. Iterative: a hostile depth
    cannot exhaust the stack here."""
    def where(keys):
        return ("/".join(keys) or "top level")[:200]

    stack = [(data, ())]
    while stack:
        value, keys = stack.pop()
        if isinstance(value, (dict, list)):
            if len(keys) >= MAX_DEPTH:
                raise DataError(path, f"{where(keys)}: nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, (*keys, str(k)[:40])) for k, v in items)
        elif isinstance(value, float) and not math.isfinite(value):
            raise DataError(path, f"{where(keys)}: {value} is not a finite number "
                                  "(a JSON number too large for a float)")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > FLOAT32_MAX:
            raise DataError(path, f"{where(keys)}: {value:.6g} is outside the range of float32 (±{FLOAT32_MAX:.6g})")


def _validate(path, data):
    """One DataError for the first fault of a parsed model.json, or nothing."""
    _check_tree(path, data)
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
    return ModelSpec(path, _read_json(path))


def _read_json(path):
    """The parsed JSON of a plain file of at most MAX_BYTES. The file's type and size are taken
    with os.stat before it is opened: a FIFO (or a device) is refused, never read, so it cannot
    block; a file that grows after the check is still read only up to the limit."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(path, "model.json not found") from None
    except OSError as err:
        raise DataError(path, f"cannot read it ({err.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(path, "model.json not found (a folder has its name)")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(path, "not a plain file (a FIFO, socket or device): model.json must be a regular file")
    if st.st_size > MAX_BYTES:
        raise DataError(path, f"{st.st_size} bytes, over the {MAX_BYTES >> 20} MiB a model.json may have")
    raw = read_plain(path, MAX_BYTES)
    if len(raw) > MAX_BYTES:
        raise DataError(path, f"over the {MAX_BYTES >> 20} MiB a model.json may have")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:  # json's parser recurses once per level: refused like any deep file
        raise DataError(path, f"not valid JSON (nested deeper than {MAX_DEPTH} levels)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise DataError(path, f"not valid JSON ({err})") from None


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
