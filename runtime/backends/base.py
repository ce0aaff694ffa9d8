"""One contract for every inference engine (Polygraphy's runner pattern).

- Constructing a backend is cheap and allocates nothing.
- ``__enter__`` loads the model (sessions, engines, device memory, streams); ``__exit__`` frees it.
- ``infer(batch)`` takes float32 (N, 4, S, S) preprocessed images and returns (N, 28) float32
  probabilities; ``predict(batch, views)`` averages ``infer`` over test-time views. The public method checks the batch against ``model.json``; backends implement
  ``_load``, ``_infer`` and ``_free`` only, so adding an engine touches one file.
"""

import importlib

import numpy as np

from runtime.classes import NUM_CLASSES
from runtime.tta import predict_views


class BackendUnavailable(Exception):
    """This backend cannot run here (library or GPU missing); the message says why, in one line."""


class Backend:
    name = "base"

    def __init__(self, spec, model_file):
        self.spec = spec
        self.file = model_file
        self._entered = False

    @property
    def description(self):
        return f"{self.name} ({self.file.path.name}, {self.file.precision})"

    @property
    def max_batch(self):
        return None

    def __enter__(self):
        self._load()
        self._entered = True
        return self

    def __exit__(self, *exc):
        self._entered = False
        self._free()
        return False

    def infer(self, batch):
        if not self._entered:
            raise RuntimeError(f"{self.name} backend used outside its 'with' block")
        batch = np.asarray(batch)
        size = self.spec.preprocess.size
        if batch.dtype != np.float32 or batch.ndim != 4 or batch.shape[1:] != (4, size, size):
            raise ValueError(f"{self.name}: expected float32 (N, 4, {size}, {size}) as model.json says, "
                             f"got {batch.dtype} {batch.shape}")
        limit = self.max_batch
        if limit and len(batch) > limit:
            return np.concatenate([self.infer(batch[i:i + limit]) for i in range(0, len(batch), limit)])
        out = np.asarray(self._infer(np.ascontiguousarray(batch)), dtype=np.float32)
        if out.shape != (len(batch), NUM_CLASSES):
            raise RuntimeError(f"{self.name}: model returned {out.shape}, expected ({len(batch)}, {NUM_CLASSES})")
        return out

    def predict(self, batch, views=1):
        """``infer`` averaged over ``views`` dihedral views of the batch (runtime.tta): what the
        thresholds of a model exported with test-time augmentation were tuned on."""
        return predict_views(self.infer, batch, views)

    def _load(self):
        raise NotImplementedError

    def _infer(self, batch):
        raise NotImplementedError

    def _free(self):
        pass


# name -> (module, class): imported only when asked for.
_REGISTRY = {
    "onnxruntime": ("runtime.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("runtime.backends.tensorrt_backend", "TensorRTBackend"),
    "torch": ("runtime.backends.torch_backend", "TorchBackend"),
}


def backend_class(name):
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; valid: auto, {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def make_backend(spec, name="auto", model="ensemble", precision=None, device=None):
    """Pick the file and backend for a request.

    ``auto``: TensorRT when an engine is listed and a GPU and TensorRT are present; else ONNX
    Runtime with CUDA when a GPU is present; else ONNX Runtime on the CPU, preferring the INT8
    CPU flavour when it was exported. ``model`` is 'ensemble' or 'fold0', 'fold1', ...
    """
    from runtime.onnx_session import cuda_available, gpu_present

    kind, fold = ("ensemble", None) if model == "ensemble" else ("fold", _fold_index(model))
    if name == "auto":
        engine = spec.find(kind, precision, fmt="engine", fold=fold)
        if engine and gpu_present() and importlib.util.find_spec("tensorrt") is not None:
            return backend_class("tensorrt")(spec, engine)
        gpu = cuda_available()
        order = [precision] if precision else (["fp16", "fp32"] if gpu else ["int8", "fp32"])
        for p in order:
            f = spec.find(kind, p, None if gpu or p != "int8" else "cpu", fold=fold)
            if f:
                return backend_class("onnxruntime")(spec, f, device="cuda" if gpu else "cpu")
        raise ValueError(f"model.json lists no ONNX file for {model} ({', '.join(spec.choices())})")
    if name == "tensorrt":
        f = spec.find(kind, precision, fmt="engine", fold=fold)
        if f is None:
            raise ValueError("model.json lists no TensorRT engine; build one with `python -m export tensorrt`")
        return backend_class("tensorrt")(spec, f)
    if name == "onnxruntime":
        p = precision or "fp32"
        f = spec.find(kind, p, "cpu" if p == "int8" and device != "cuda" else None, fold=fold)
        if f is None:
            raise ValueError(f"model.json lists no {p} ONNX file for {model}")
        return backend_class("onnxruntime")(spec, f, device=device or ("cuda" if cuda_available() else "cpu"))
    return backend_class(name)(spec, spec.find(kind, "fp32", fold=fold), model=model, device=device)


def available_backends():
    return ["auto", *_REGISTRY]


def _fold_index(model):
    if not model.startswith("fold") or not model[4:].isdigit():
        raise ValueError(f"--model-file must be 'ensemble' or 'fold<k>', got {model!r}")
    return int(model[4:])
