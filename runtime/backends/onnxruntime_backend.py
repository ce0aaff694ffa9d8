"""ONNX Runtime on the CPU, with its CUDA provider (``onnxruntime-cuda``) and with its TensorRT
provider (``onnxruntime-tensorrt``).

A GPU backend is checked after its session is made: unless the asked-for provider is the one the
session runs on, it stops with one line naming what is missing (runtime/onnx_session.py), so a
result is never labelled with a provider that did not compute it.

TF32: the CUDA provider runs with ``use_tf32=0``, so FP32 files compute in full FP32 on Ampere and
newer and match the CPU. ONNX Runtime's TensorRT provider has no TF32 switch (its FP32 engines use
TensorRT's default, TF32 allowed); gpu-check holds it to the TF32 tolerance.

The feed. On a GPU the batch goes through IO binding with buffers the backend owns
(runtime/backends/ort_feed.py: pinned host buffer, one copy into a reused device buffer, the output
read back in one copy), allocated when the first batch of a size arrives and freed in ``_free``.
On the CPU ``session.run`` reads the numpy batch in place, which a bound buffer would only copy;
``io_binding=True`` runs the CPU through the same feed (the tests do, so its buffers, padding and
trimming run for real); ``io_binding=0`` runs a GPU through ``session.run`` (to measure what the
feed gains: docs/gpu.md).

CUDA provider options (backend options, ``--backend-option KEY=VALUE`` on ``runtime infer`` and
``runtime bench``, recorded in the run's settings): ``cuda_graph`` (capture and replay CUDA
graphs: fixed shapes, so a batch runs padded in a captured slot, see ort_feed), ``prefer_nhwc``
(channels-last convolutions), ``conv_algo`` (cuDNN's algorithm search: exhaustive, heuristic,
default) and ``conv_workspace`` (max: let cuDNN take the workspace its fastest algorithm wants).
*Decision*: the defaults are ONNX Runtime's own (graphs off, NHWC off, exhaustive search, max
workspace) until the commands in docs/gpu.md measure the others faster on a GPU, and ``auto``
changes none of them: ``prefer_nhwc`` measured slower on an H200 (docs/gpu.md); the feed, graphs
and the search options have not run on a GPU yet.
*Decision*: those four options given to a backend that runs on the CPU (``--backend auto`` or
``onnxruntime`` on a machine without the CUDA provider) are ignored with a one-line warning naming
the option and the backend (``ignored_options``; runtime.backends.factory), not refused: the same
command line then runs on a GPU host and on a CPU host (a script, a CI job), and on the CPU the
options cannot change a result. An option no backend takes (a typo) is still refused.
"""

import os
from pathlib import Path

import numpy as np

from runtime.backends.base import Backend, BackendUnavailable
from runtime.backends.ort_feed import GRAPH_ID_KEY, BoundFeed, CpuMemory, CudaMemory, cuda_ep_device
from runtime.classes import NUM_CLASSES
from runtime.errors import DataError
from runtime.model_spec import INPUT_NAME, PROBS
from runtime.onnx_session import CUDA, TENSORRT, ProviderUnavailable, gpu_session, make_session

CUDA_OPTIONS = {"use_tf32": "0"}
CONV_ALGOS = {"exhaustive": "EXHAUSTIVE", "heuristic": "HEURISTIC", "default": "DEFAULT"}
CONV_WORKSPACES = {"max": "1", "default": "0"}
# What ONNX Runtime does when not told (its CUDA provider's defaults): the backend's defaults too.
CUDA_DEFAULTS = {"cuda_graph": False, "prefer_nhwc": False, "conv_algo": "exhaustive", "conv_workspace": "max"}
INPUT_TYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}


def flag(name, value):
    """A boolean backend option from the command line (1/0, on/off, true/false, yes/no) or Python."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "on", "true", "yes"):
        return True
    if text in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"backend option {name}={value!r}: give 1 or 0 (on/off)")


def choice_of(name, value, allowed):
    text = str(value).strip().lower()
    if text not in allowed:
        raise ValueError(f"backend option {name}={value!r}: valid: {', '.join(allowed)}")
    return text


def cuda_settings(cuda_graph=None, prefer_nhwc=None, conv_algo=None, conv_workspace=None):
    """The CUDA options in effect: each given one checked, the others ONNX Runtime's defaults."""
    given = {"cuda_graph": cuda_graph, "prefer_nhwc": prefer_nhwc, "conv_algo": conv_algo,
             "conv_workspace": conv_workspace}
    out = dict(CUDA_DEFAULTS)
    for key, value in given.items():
        if value is None:
            continue
        out[key] = flag(key, value) if key in ("cuda_graph", "prefer_nhwc") else \
            choice_of(key, value, CONV_ALGOS if key == "conv_algo" else CONV_WORKSPACES)
    return out


def cuda_provider_options(settings):
    """ONNX Runtime CUDA provider options for ``settings`` (cuda_settings)."""
    return {**CUDA_OPTIONS, "enable_cuda_graph": "1" if settings["cuda_graph"] else "0",
            "prefer_nhwc": "1" if settings["prefer_nhwc"] else "0",
            "cudnn_conv_algo_search": CONV_ALGOS[settings["conv_algo"]],
            "cudnn_conv_use_max_workspace": CONV_WORKSPACES[settings["conv_workspace"]]}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    options = ("cuda_graph", "prefer_nhwc", "conv_algo", "conv_workspace", "io_binding")
    provider = CUDA          # the provider whose OrtEpDevice gives pinned host memory
    graph_keys = (GRAPH_ID_KEY,)  # the run options naming a captured CUDA graph

    def __init__(self, spec, model_file, device="cpu", model="ensemble", threads=0, io_binding=None,
                 cuda_graph=None, prefer_nhwc=None, conv_algo=None, conv_workspace=None):
        super().__init__(spec, model_file, device, model)
        self.threads = threads
        self.io_binding = device != "cpu" if io_binding is None else flag("io_binding", io_binding)
        self.cuda = cuda_settings(cuda_graph, prefer_nhwc, conv_algo, conv_workspace)
        self._given = {k: v for k, v in (("cuda_graph", cuda_graph), ("prefer_nhwc", prefer_nhwc),
                                         ("conv_algo", conv_algo), ("conv_workspace", conv_workspace))
                       if v is not None}
        if self.cuda["cuda_graph"] and not self.io_binding and device != "cpu":
            raise ValueError("backend option cuda_graph=1 needs io_binding (a captured graph replays bound buffers)")
        self.session = None
        self.feed = None

    @property
    def description(self):
        return f"onnxruntime-{self.device} ({self.file.path.name}, {self.file.precision}{self._tuned()})"

    def _tuned(self):
        """The options that differ from the defaults, for the description."""
        changed = [] if self.device == "cpu" else \
            [f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in self.cuda.items() if CUDA_DEFAULTS[k] != v]
        if self.io_binding != (self.device != "cpu"):
            changed.append(f"io_binding={int(self.io_binding)}")
        return ", " + ", ".join(changed) if changed else ""

    @property
    def ignored_options(self):
        """The CUDA provider options given to a run on the CPU (see the module's decision)."""
        if self.device != "cpu":
            return {}
        return {f"{k}={v}": "a CUDA provider option, and this backend runs on the CPU" for k, v in self._given.items()}

    @property
    def settings(self):
        """The provider options that decide results: the CUDA ones, on a GPU (none on the CPU)."""
        return {} if self.device == "cpu" else dict(self.cuda)

    def _providers(self):
        return [(CUDA, cuda_provider_options(self.cuda))]

    def _load(self):
        path, data = self.file.path, self.file.verified_bytes()  # the session runs the bytes that were hashed
        try:
            self.session = (make_session(path, "cpu", self.threads, data) if self.device == "cpu"
                            else gpu_session(path, self._providers(), self.threads, data))
        except ProviderUnavailable as err:
            raise BackendUnavailable(f"{self.name}: {err}") from None
        except DataError as err:  # graph capture refused (a node left to the CPU): the option, not the file
            if self.device == "cpu" or not self.cuda.get("cuda_graph"):
                raise
            raise BackendUnavailable(f"{self.name}: cuda_graph=1 is not possible for {path.name}: {err.reason}; "
                                     "run without it") from None
        self._check_inputs()
        if self.io_binding:
            memory = CpuMemory() if self.device == "cpu" else CudaMemory(0, cuda_ep_device(self.provider))
            self.feed = self._feed(memory, fixed=self.device != "cpu" and self.cuda.get("cuda_graph", False))

    def _check_inputs(self):
        names = [i.name for i in self.session.get_inputs()]
        if names != [INPUT_NAME]:
            raise ValueError(f"{self.file.path}: inputs {names}, model.json says [{INPUT_NAME!r}]")

    def _feed(self, memory, fixed):
        kind = self.session.get_inputs()[0].type
        if kind not in INPUT_TYPES:
            raise ValueError(f"{self.file.path}: input {INPUT_NAME!r} is {kind}; expected uint8 or float")
        size = self.spec.preprocess.size
        return BoundFeed(self.session, memory, INPUT_NAME, PROBS, (4, size, size), INPUT_TYPES[kind], NUM_CLASSES,
                         fixed=fixed, graph_keys=self.graph_keys)

    def _infer(self, batch):
        if self.feed is not None:
            return self.feed.run(batch)
        return self.session.run([PROBS], {INPUT_NAME: batch})[0]

    def _free(self):
        if self.feed is not None:
            self.feed.close()
        self.feed = None
        self.session = None


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    name = "onnxruntime-cuda"

    def __init__(self, spec, model_file, device="cuda", model="ensemble", threads=0, **options):
        super().__init__(spec, model_file, "cuda", model, threads, **options)


def default_engine_cache(model_file):
    """Where onnxruntime-tensorrt keeps the engines it builds for ``model_file``: one folder per
    file content, under the user's cache (XDG_CACHE_HOME or ~/.cache)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "hpa-toolkit" / "onnxruntime-tensorrt" / model_file.sha256[:16]


def tensorrt_provider_options(precision, size, max_batch, cache):
    """ONNX Runtime TensorRT provider options for a file of ``precision``: FP16 kernels allowed for
    FP16 and INT8 files (a Q/DQ graph also needs INT8 enabled, and no calibration table), engines and
    timing cache kept in ``cache``, one optimization profile for batch 1..max_batch so no batch size
    triggers a rebuild."""
    shape = f"x4x{size}x{size}"
    return {
        "trt_fp16_enable": "1" if precision in ("fp16", "int8") else "0",
        "trt_int8_enable": "1" if precision == "int8" else "0",
        "trt_engine_cache_enable": "1", "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "1", "trt_timing_cache_path": str(cache),
        "trt_profile_min_shapes": f"{INPUT_NAME}:1{shape}",
        "trt_profile_opt_shapes": f"{INPUT_NAME}:{min(32, max_batch)}{shape}",
        "trt_profile_max_shapes": f"{INPUT_NAME}:{max_batch}{shape}",
    }


class OnnxRuntimeTensorRTBackend(OnnxRuntimeBackend):
    """ONNX Runtime's TensorRT provider, with the CUDA provider for any node TensorRT does not take.
    ``--precision fp16`` runs the FP16 file with FP16 kernels allowed; ``int8`` the TensorRT-flavour
    Q/DQ file. The first session for a file builds its engine (seconds to minutes); later ones load
    it from ``engine_cache``."""

    name = "onnxruntime-tensorrt"
    options = ("engine_cache", "max_batch")

    def __init__(self, spec, model_file, device="cuda", model="ensemble", threads=0, engine_cache=None,
                 max_batch=64):
        super().__init__(spec, model_file, "cuda", model, threads)
        self.cuda = {}  # the CUDA provider only runs what TensorRT leaves, with its defaults
        self.engine_cache = Path(engine_cache) if engine_cache else default_engine_cache(model_file)
        self._max_batch = int(max_batch)

    @property
    def max_batch(self):
        return self._max_batch

    @property
    def description(self):
        return f"onnxruntime-tensorrt ({self.file.path.name}, {self.file.precision})"

    def _providers(self):
        self.engine_cache.mkdir(parents=True, exist_ok=True)
        options = tensorrt_provider_options(self.file.precision, self.spec.preprocess.size, self._max_batch,
                                            self.engine_cache)
        return [(TENSORRT, options), (CUDA, CUDA_OPTIONS)]

    @property
    def settings(self):
        return {}

    def _load(self):
        # The provider loads libnvinfer by name; the tensorrt wheel's copy is found once the
        # tensorrt module has loaded it into this process.
        try:
            import tensorrt  # noqa: F401
        except (ImportError, OSError):
            pass  # then libnvinfer must be on the loader path; gpu_session says so if it is not
        super()._load()
