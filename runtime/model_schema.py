"""The JSON Schema of model.json (types, ranges, required keys), built from the runtime's own
constants so that it cannot drift from what the runtime does.

``docs/model.schema.json`` is this schema written out (``python -m runtime.model_schema >
docs/model.schema.json``); a test checks the two are equal and that every exported model.json
passes it. ``runtime.model_spec`` validates with it first, then checks what a schema cannot say
(paths inside the folder, references between sections, sizes that must agree)."""

import json

from runtime.classes import CHANNELS, NUM_CLASSES
from runtime.preprocess import INTERPOLATIONS, MEAN_RANGE, SIZE_RANGE, STD_RANGE
from runtime.tta import SETTINGS, TRANSFORMS

FORMAT = "hpa-toolkit-model"
# 2: thresholds per variant and view count, named test-time views, the decision rule, each
# file's outputs and variant, defaults per backend and device, checkpoints inside the folder.
# 3: the graph takes the resized uint8 image (input.dtype uint8) and normalises it itself.
VERSION = 3
# What the runtime reads, and the input each version's graphs take: a version-2 file takes the
# float32 tensor normalised on the host (the runtime still does that for it).
INPUT_DTYPES = {2: "float32", 3: "uint8"}
PRECISIONS = ("fp32", "fp16", "int8")
CPU_CLASSES = ("vnni", "avx2")
VIEW_KEYS = [str(n) for n in SETTINGS]
# The decision rule the runtime applies (runtime.infer.predicted_classes), stated in model.json.
DECISION = {"comparison": ">", "when_none_passes": "top-class"}

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_PATH = {"type": "string", "minLength": 1}
_TEXT = {"type": "string"}
_PROB = {"type": "number", "minimum": 0, "maximum": 1}
# Every whole number is typed "integer" as well as constrained (an enum or const alone accepts
# 4.0 for 4); the runtime's validator (runtime.model_spec) also refuses 32.0 as an "integer",
# which the draft's own definition accepts.
_VIEWS = {"type": "integer", "enum": list(SETTINGS)}


def _array(items, n=None, **extra):
    return {"type": "array", "items": items, **({"minItems": n, "maxItems": n} if n else {}), **extra}


def _object(properties, required=None, closed=True, **extra):
    return {"type": "object", "properties": properties, "required": list(required or properties),
            "additionalProperties": not closed, **extra}


_THRESHOLDS = _object({"values": _array(_PROB, NUM_CLASSES),
                       "tuned_on_views": _VIEWS})

_VARIANT = _object({
    "precision": {"enum": list(PRECISIONS)},
    "target": {"enum": ["any", "cpu", "tensorrt"]},
    "cpu": {"enum": list(CPU_CLASSES)},
    "usable": {"type": "boolean"},
    "reason": _TEXT,
    "thresholds": _object({k: _THRESHOLDS for k in VIEW_KEYS}),
    "quality": {"type": "object"},
    "settings": {"type": "object"},
}, required=["precision", "target", "usable", "reason", "thresholds"])

_FILE = _object({
    "path": _PATH,
    "kind": {"enum": ["fold", "ensemble"]},
    "fold": {"type": "integer", "minimum": -1},
    "precision": {"enum": list(PRECISIONS)},
    "target": {"enum": ["any", "cpu", "tensorrt"]},
    "format": {"enum": ["onnx", "engine"]},
    "variant": {"type": "string", "minLength": 1},
    "outputs": _array({"enum": ["probs", "logits"]}, uniqueItems=True, contains={"const": "probs"}),
    "sha256": _SHA256,
}, closed=False)  # files carry more: bytes, opset, parity, a TensorRT engine's profile and source

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "model.json of the HPA toolkit",
    "description": "Everything a client needs to reproduce `python -m runtime infer` (docs/model-json.md).",
    **_object({
        "format": {"const": FORMAT},
        "version": {"type": "integer", "enum": list(INPUT_DTYPES)},
        "class_names": _array(_TEXT, NUM_CLASSES),
        "preprocess": _object({"size": {"type": "integer", "minimum": 8, "maximum": SIZE_RANGE[1]},
                               "mean": _array({"type": "number",
                                               "minimum": MEAN_RANGE[0], "maximum": MEAN_RANGE[1]}, 4),
                               # std: positive, and at least the floor training writes (runtime.preprocess)
                               "std": _array({"type": "number", "exclusiveMinimum": 0,
                                              "minimum": STD_RANGE[0], "maximum": STD_RANGE[1]}, 4),
                               "channels": {"const": list(CHANNELS)},
                               "interpolation": {"enum": list(INTERPOLATIONS)}}),
        "input": _object({"name": {"const": "image"}, "dtype": {"enum": sorted(set(INPUT_DTYPES.values()))},
                          "shape": {"type": "array", "prefixItems": [{"const": "batch"},
                                                                     {"type": "integer", "const": len(CHANNELS)},
                                                                     {"type": "integer"}, {"type": "integer"}],
                                    "items": False, "minItems": 4},
                          "from_files": _array(_TEXT)}),
        "outputs": _object({name: _object({"dtype": {"const": "float32"},
                                           "shape": {"type": "array", "items": False, "minItems": 2,
                                                     "prefixItems": [{"const": "batch"},
                                                                     {"type": "integer", "const": NUM_CLASSES}]},
                                           "meaning": _TEXT})
                            for name in ("probs", "logits")}),
        "tta": _object({"default": _VIEWS, "apply_to": _TEXT, "average": _TEXT,
                        "transforms": _object({name: {"const": rule} for name, (_, rule) in TRANSFORMS.items()}),
                        "views": _object({str(n): {"const": list(names)} for n, names in SETTINGS.items()})}),
        "decision": _object({**{k: {"const": v} for k, v in DECISION.items()},
                             "rule": _TEXT, "thresholds": _TEXT}),
        "variants": {"type": "object", "minProperties": 1, "additionalProperties": _VARIANT,
                     "propertyNames": {"pattern": "^[a-z0-9][a-z0-9-]*$"}},
        "defaults": _object({"rule": _TEXT,
                             "choices": _array(_object({"backend": _TEXT, "device": {"enum": ["cpu", "cuda"]},
                                                        "cpu": {"enum": list(CPU_CLASSES)},
                                                        "candidates": _array(_PATH, minItems=1)},
                                                       required=["backend", "device", "candidates"]))}),
        "folds": {"type": "integer", "minimum": 1},
        "files": _array(_FILE, minItems=1),
        "checkpoints": _array(_object({"fold": {"type": "integer", "minimum": 0}, "path": _PATH,
                                       "sha256": _SHA256})),
        "versions": {"type": "object"},
        # optional provenance; training_data (train.synth.dataset_record) is absent from older files
        "source": {"type": "object", "properties": {
            "training_data": {"type": ["object", "null"], "properties": {
                "kind": {"type": "string"}, "path": {"type": "string"}}}}},
    }, required=["format", "version", "class_names", "preprocess", "input", "outputs", "tta", "decision",
                 "variants", "defaults", "folds", "files", "checkpoints"]),
    "allOf": [{"if": {"properties": {"version": {"const": v}}, "required": ["version"]},
               "then": {"properties": {"input": {"properties": {"dtype": {"const": dtype}}}}}}
              for v, dtype in INPUT_DTYPES.items()],
}

if __name__ == "__main__":
    print(json.dumps(SCHEMA, indent=2))
