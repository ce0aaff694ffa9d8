"""One contract for every inference engine (Polygraphy's runner pattern).

- Constructing a backend is cheap and allocates nothing.
- ``__enter__`` loads the model (sessions, engines, device memory, streams); ``__exit__`` frees it.
- ``infer(batch)`` takes uint8 (N, 4, S, S) images (resized, channels first: what
  ``runtime.pipeline`` yields) and returns (N, 28) float32 probabilities. A file that normalises
  in its graph (model.json version 3) gets the uint8 batch as it is; a version-2 file, whose graph
  takes the normalised float32 tensor, gets it normalised on the host
  (``runtime.preprocess.normalize_chw``), so a version-2 folder gives the probabilities it was
  exported with. A backend that normalises on its own device says so (``host_normalizes``).
  ``predict(batch, views)`` averages ``infer`` over test-time views. The public method checks the
  batch against ``model.json``; backends implement ``_load``, ``_infer`` and ``_free`` only, so
  adding an engine touches one file.
- When ``_load`` fails half-way, ``__enter__`` calls ``_free`` before the error propagates, so
  ``_free`` must release whatever ``_load`` got as far as allocating.
"""

import importlib

import numpy as np

from runtime.classes import NUM_CLASSES
from runtime.errors import DataError
from runtime.preprocess import normalize_chw
from runtime.tta import predict_views


class BackendUnavailable(Exception):
    """This backend cannot run here (library or GPU missing); the message says why, in one line."""


class Backend:
    name = "base"
    options = ()            # keyword options make_backend may pass to this backend's constructor

    def __init__(self, spec, model_file, device="cpu", model="ensemble"):
        self.spec = spec
        self.file = model_file
        self.device = device
        self.model = model      # 'ensemble' or 'fold<k>' (what the file holds)
        self.choice = None      # set by make_backend: why this backend and file
        self._entered = False

    @property
    def description(self):
        return f"{self.name} ({self.file.path.name}, {self.file.precision})"

    @property
    def max_batch(self):
        return None

    @property
    def settings(self):
        """The backend options in effect that decide results (runtime infer records them with the
        run's settings); none for most backends."""
        return {}

    @property
    def ignored_options(self):
        """{``key=value``: why} for the options given that cannot change this backend's run here
        (make_backend warns once for each); none for most backends."""
        return {}

    @property
    def host_normalizes(self):
        """Whether ``infer`` normalises the uint8 batch on the host: for a file whose graph takes
        float32 (model.json version 2)."""
        return self.spec.input["dtype"] == "float32"

    def __enter__(self):
        try:
            self._load()
        except BaseException:
            self._free()
            raise
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
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (4, size, size):
            raise ValueError(f"{self.name}: expected the uint8 images (N, 4, {size}, {size}), "
                             f"got {batch.dtype} {batch.shape}")
        limit = self.max_batch
        if limit and len(batch) > limit:
            return np.concatenate([self.infer(batch[i:i + limit]) for i in range(0, len(batch), limit)])
        x = normalize_chw(batch, self.spec.preprocess) if self.host_normalizes else batch
        out = np.asarray(self._infer(np.ascontiguousarray(x)), dtype=np.float32)
        if out.shape != (len(batch), NUM_CLASSES):  # a wrong model is the user's file: one line naming it
            raise DataError(self.file.path if self.file else self.spec.path,
                            f"the model returned {out.shape} for a batch of {len(batch)}, expected "
                            f"({len(batch)}, {NUM_CLASSES}): one probability per class")
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
    "onnxruntime-cuda": ("runtime.backends.onnxruntime_backend", "OnnxRuntimeCudaBackend"),
    "onnxruntime-tensorrt": ("runtime.backends.onnxruntime_backend", "OnnxRuntimeTensorRTBackend"),
    "onnxruntime-tensorrt-rtx": ("runtime.backends.onnxruntime_rtx", "OnnxRuntimeRtxBackend"),
    "tensorrt": ("runtime.backends.tensorrt_backend", "TensorRTBackend"),
    "torch": ("runtime.backends.torch_backend", "TorchBackend"),
}


def backend_class(name):
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; valid: auto, {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def option_pair(text):
    """``KEY=VALUE`` -> (key, value), a ``-`` in the key read as ``_``; None when it is not one."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    return (key, value.strip()) if sep and key else None


def backend_options(pairs, engine_cache=""):
    """The backend options of a command line: ``--backend-option KEY=VALUE`` pairs (values stay
    strings; each backend checks its own) and ``--engine-cache``."""
    options = {}
    for pair in pairs or ():
        parsed = option_pair(pair)
        if parsed is None:
            raise ValueError(f"--backend-option {pair!r}: give KEY=VALUE, e.g. cuda_graph=1")
        options[parsed[0]] = parsed[1]
    if engine_cache:
        options["engine_cache"] = engine_cache
    return options


def check_options(names, options):
    """``options`` unless one of them is taken by none of the backends ``names`` (auto: by none at
    all): a bench of several backends gives each the ones it takes, but a typo is still an error."""
    names = list(_REGISTRY) if "auto" in names else names
    taken = {o for n in names for o in backend_class(n).options}
    unknown = sorted(set(options) - taken)
    if unknown:
        raise ValueError(f"--backend-option {unknown[0]}: none of {', '.join(names)} takes it"
                         + (f" (they take: {', '.join(sorted(taken))})" if taken else ""))
    return options


def available_backends():
    return ["auto", *_REGISTRY]
