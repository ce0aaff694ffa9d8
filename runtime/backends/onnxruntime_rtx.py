"""``onnxruntime-tensorrt-rtx``: NVIDIA's TensorRT for RTX through ONNX Runtime, for workstation GPUs.

TensorRT for RTX ships as an ONNX Runtime plugin execution provider, the pip package
``onnxruntime-ep-nv-tensorrt-rtx-cu13`` (or ``-cu12``; requirements-tensorrt-rtx-cu13.txt), which
bundles ``libtensorrt_rtx`` and its ONNX parser: no TensorRT install, no compiler. Its module
gives the plugin library (``get_library_path()``) and the provider's name (``get_ep_name()``,
NvTensorRTRTXExecutionProvider). This backend

- checks, each failure one line: the package installed; the NVIDIA driver (libcuda.so.1) and a GPU
  (runtime/gpu_info.py); a compute capability the plugin supports (8.6, 8.9, 12.0 or newer: the
  plugin 0.5.0's own check, ``SUPPORTED``; not 7.5, nor 8.0 or 9.0, the A100 and H100/H200, which
  take TensorRT 10 through onnxruntime-tensorrt or tensorrt, docs/gpu.md);
- registers the plugin once per process (``onnxruntime.register_execution_provider_library``) and
  takes the provider's OrtEpDevice for GPU ``gpu`` (the index among the GPUs the plugin lists, in
  CUDA's order; default 0) for ``SessionOptions.add_provider_for_devices``;
- runs the FP32 or FP16 file (TensorRT for RTX builds strongly typed networks: the FP16 file runs in
  FP16; INT8 Q/DQ convolutions are not among its precisions) for batches 1..``max_batch`` (one
  optimization profile; larger batches are split);
- keeps the kernels TensorRT for RTX compiles just in time in its runtime cache
  (``nv_runtime_cache_path``), a folder per model file under the user's cache
  (``default_runtime_cache``) or ``--engine-cache``, so only the first session pays for them;
- refuses a session in which any compute node runs on another provider (runtime/onnx_session.py:
  ``plugin_session``), so a result is never labelled TensorRT-RTX when the CPU computed it;
- feeds the batch through the same IO binding as onnxruntime-cuda (runtime/backends/ort_feed.py),
  with buffers from the plugin's own allocators (device memory on its GPU, pinned host memory)
  and copies through its data transfer (``EpMemory``), and, with ``cuda_graph``, captured CUDA graphs.

``auto`` takes it on a supported GPU where a probe measures it faster than the CUDA provider
(``measured_speedup``; runtime/backends/select.py). Nothing here has run on a GPU yet.
"""

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from runtime.backends.base import BackendUnavailable
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, flag
from runtime.backends.ort_feed import GRAPH_ID_KEY, EpMemory
from runtime.errors import DataError
from runtime.model_spec import INPUT_NAME
from runtime.onnx_session import first_line

log = logging.getLogger(__name__)

PACKAGE = "onnxruntime_ep_nv_tensorrt_rtx"
DISTRIBUTIONS = ("onnxruntime-ep-nv-tensorrt-rtx-cu13", "onnxruntime-ep-nv-tensorrt-rtx-cu12")
EP_NAME = "NvTensorRTRTXExecutionProvider"
INSTALL = "pip install -r requirements-tensorrt-rtx-cu13.txt, or -cu12.txt for a driver older than CUDA 13; docs/gpu.md"
# The compute capabilities the plugin runs on. TensorRT for RTX itself lists 7.5 (Turing) too
# (NVIDIA's TensorRT-RTX 1.x support matrix), but the plugin 0.5.0 (-cu13 and -cu12 wheels alike)
# does not: its tensorrt_rtx_provider_options.h, IsComputeCapabilitySupported, takes "sm86",
# "sm89" (kTargetSMValues) and any 12.0 or newer; its library refuses others with "Supported
# compute capabilities are 8.6, 8.9, and 12.0 or newer"; its README asks for "Ampere / RTX 30xx
# and later". The backend runs through the plugin, so its list is the plugin's (docs/gpu.md).
SUPPORTED = ("8.6", "8.9", "12.0 or newer")
PROBE_BATCH = 32
PROBE_SECONDS = 1.0
PROBE_CACHE = "rtx-probe.json"

_lock = threading.Lock()
_registered = set()   # plugin library paths registered in this process


def plugin_package():
    """The installed plugin module; BackendUnavailable (one line) when it is not installed."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise BackendUnavailable(f"onnxruntime-tensorrt-rtx: the TensorRT for RTX plugin is not installed ({INSTALL})")
    try:
        return importlib.import_module(PACKAGE)
    except (ImportError, OSError) as err:
        raise BackendUnavailable(f"onnxruntime-tensorrt-rtx: the plugin package does not import "
                                 f"({first_line(err)}; {INSTALL})") from None


def plugin_version():
    for dist in DISTRIBUTIONS:
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def is_supported(compute_capability):
    """Whether the plugin takes a GPU of ``compute_capability`` ("8.6", "12.0"): SUPPORTED."""
    major, _, minor = str(compute_capability).partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return False
    return (int(major), int(minor)) in ((8, 6), (8, 9)) or int(major) >= 12


def unsupported_reason(gpu_name, compute_capability):
    """Why TensorRT for RTX cannot run on this GPU, or None."""
    if is_supported(compute_capability):
        return None
    return (f"onnxruntime-tensorrt-rtx: {gpu_name} has compute capability {compute_capability}; TensorRT for RTX "
            f"(the onnxruntime-ep-nv-tensorrt-rtx plugin) supports {', '.join(SUPPORTED)} (on 7.5, 8.0 and 9.0, e.g. "
            "RTX 20xx, A100 and H100/H200, use onnxruntime-tensorrt or tensorrt: docs/gpu.md)")


def check_gpu(capability=True):
    """The GpuInfo of device 0 when TensorRT for RTX can run on it; BackendUnavailable otherwise.
    ``capability=False`` checks the driver and a GPU only: device 0's compute capability says
    nothing of another GPU (``gpu=N``), which the plugin lists only when it supports it."""
    from runtime.gpu_info import NoGpu, gpu_info

    try:
        gpu = gpu_info()
    except NoGpu as err:
        raise BackendUnavailable(f"onnxruntime-tensorrt-rtx: {err}") from None
    reason = unsupported_reason(gpu.name, gpu.compute_capability) if capability else None
    if reason:
        raise BackendUnavailable(reason)
    return gpu


def register_plugin(package, ort=None):
    """Register the plugin's library with ONNX Runtime, once per process; returns its provider name.
    A library that cannot load (no libcuda.so.1 without a driver, a CUDA runtime of another major)
    is one line naming the loader's reason."""
    if ort is None:
        import onnxruntime as ort
    name, library = package.get_ep_name(), package.get_library_path()
    with _lock:
        if library in _registered:
            return name
        try:
            ort.register_execution_provider_library(name, library)
        except Exception as err:  # onnxruntime raises its own Fail type
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if "already registered" not in text.lower():
                reason = text.split("with error: ", 1)[-1][:200]
                raise BackendUnavailable(f"onnxruntime-tensorrt-rtx: the TensorRT for RTX plugin cannot load "
                                         f"({reason}); it needs an NVIDIA driver and GPU, docs/gpu.md") from None
        _registered.add(library)
    return name


def select_device(ep_devices, ep_name, index=0):
    """The OrtEpDevice of GPU ``index`` among those the plugin lists, in their order (CUDA's)."""
    import onnxruntime as ort

    gpus = [d for d in ep_devices if d.ep_name == ep_name and d.device.type == ort.OrtHardwareDeviceType.GPU]
    if not gpus:
        listed = sorted({d.ep_name for d in ep_devices})
        raise BackendUnavailable(f"onnxruntime-tensorrt-rtx: {ep_name} lists no GPU here (ONNX Runtime lists devices "
                                 f"for: {', '.join(listed) or 'none'}); the plugin takes compute capability "
                                 f"{', '.join(SUPPORTED)}")
    if not 0 <= index < len(gpus):
        raise BackendUnavailable(f"onnxruntime-tensorrt-rtx: gpu={index}, but {ep_name} lists {len(gpus)} GPU(s) "
                                 f"(0..{len(gpus) - 1})")
    return gpus[index]


def default_runtime_cache(model_file):
    """Where TensorRT for RTX keeps the kernels it compiles for ``model_file``: one folder per file
    content under the user's cache (XDG_CACHE_HOME or ~/.cache), like onnxruntime-tensorrt's engines."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "hpa-toolkit" / "tensorrt-rtx" / model_file.sha256[:16]


def rtx_provider_options(size, max_batch, cache, cuda_graph):
    """TensorRT for RTX provider options: the runtime cache in ``cache``, one optimization profile
    for batch 1..max_batch, CUDA graphs when asked for."""
    shape = f"x4x{size}x{size}"
    return {"nv_runtime_cache_path": str(cache), "enable_cuda_graph": "1" if cuda_graph else "0",
            "nv_profile_min_shapes": f"{INPUT_NAME}:1{shape}",
            "nv_profile_opt_shapes": f"{INPUT_NAME}:{min(32, max_batch)}{shape}",
            "nv_profile_max_shapes": f"{INPUT_NAME}:{max_batch}{shape}"}


class OnnxRuntimeRtxBackend(OnnxRuntimeBackend):
    name = "onnxruntime-tensorrt-rtx"
    options = ("engine_cache", "max_batch", "cuda_graph", "gpu")
    provider = EP_NAME
    # ONNX Runtime's gpu_graph_id (what its session reads to replay a plugin's captured graph) and the
    # plugin's own cuda_graph_annotation_id (tensorrt_rtx_provider_options.h): both name the slot's graph.
    graph_keys = (GRAPH_ID_KEY, "cuda_graph_annotation_id")

    def __init__(self, spec, model_file, device="cuda", model="ensemble", threads=0, engine_cache=None,
                 max_batch=64, cuda_graph=None, gpu=0):
        super().__init__(spec, model_file, "cuda", model, threads)
        if model_file.precision not in ("fp32", "fp16"):
            raise ValueError(f"{model_file.path.name}: onnxruntime-tensorrt-rtx runs the FP32 and FP16 files, "
                             f"not {model_file.precision}")
        self.engine_cache = Path(engine_cache) if engine_cache else default_runtime_cache(model_file)
        self._max_batch = int(max_batch)
        self.cuda = {"cuda_graph": flag("cuda_graph", cuda_graph) if cuda_graph is not None else False}
        try:
            self.gpu = int(gpu)
        except ValueError:
            raise ValueError(f"backend option gpu={gpu!r}: give the GPU's index (0, 1, ...)") from None
        self.ep_device = None

    @property
    def max_batch(self):
        return self._max_batch

    @property
    def description(self):
        graph = ", cuda_graph=1" if self.cuda["cuda_graph"] else ""
        return f"onnxruntime-tensorrt-rtx ({self.file.path.name}, {self.file.precision}{graph})"

    @property
    def settings(self):
        return dict(self.cuda)

    def _load(self):
        import onnxruntime as ort

        from runtime.onnx_session import ProviderUnavailable, plugin_session

        package = plugin_package()
        check_gpu(capability=self.gpu == 0)  # GPU 0's capability; select_device answers for another
        ep_name = register_plugin(package, ort)
        self.ep_device = select_device(ort.get_ep_devices(), ep_name, self.gpu)
        self.engine_cache.mkdir(parents=True, exist_ok=True)
        options = rtx_provider_options(self.spec.preprocess.size, self._max_batch, self.engine_cache,
                                       self.cuda["cuda_graph"])
        t0 = time.perf_counter()
        try:
            self.session = plugin_session(self.file.path, [self.ep_device], options, ep_name, self.threads,
                                          self.file.verified_bytes())
        except ProviderUnavailable as err:
            raise BackendUnavailable(f"{self.name}: {err}") from None
        except DataError as err:  # graph capture refused (a node left to the CPU): the option, not the file
            if not self.cuda["cuda_graph"]:
                raise
            raise BackendUnavailable(f"{self.name}: cuda_graph=1 is not possible for {self.file.path.name}: "
                                     f"{err.reason}; run without it") from None
        log.info("TensorRT for RTX session for %s in %.1f s (runtime cache %s)", self.file.path.name,
                 time.perf_counter() - t0, self.engine_cache)
        self._check_inputs()
        try:  # the plugin's own allocators and copies: its GPU, and no CUDA provider library needed
            memory = EpMemory(self.ep_device)
        except ValueError as err:
            raise BackendUnavailable(f"{self.name}: {err}") from None
        self.feed = self._feed(memory, fixed=self.cuda["cuda_graph"])

    def _free(self):
        super()._free()
        self.ep_device = None


def probe_key(model_file, gpu):
    import onnxruntime

    return "|".join([model_file.sha256, gpu.name, gpu.driver or "?", onnxruntime.__version__, plugin_version() or "?"])


def measured_speedup(spec, model_file, seconds=PROBE_SECONDS):
    """TensorRT for RTX images/s over the CUDA provider's on ``model_file`` (batch PROBE_BATCH, the
    two timed in turns), measured once per file, GPU, driver, onnxruntime and plugin version and
    cached in ``$HPA_TOOLKIT_CACHE/rtx-probe.json``. BackendUnavailable (cached too) when either
    cannot run."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeCudaBackend
    from runtime.probe import cached_probe, interleaved

    entry = cached_probe(PROBE_CACHE, probe_key(model_file, check_gpu()),
                         lambda: _measure(spec, model_file, seconds, OnnxRuntimeCudaBackend, interleaved),
                         lambda e: isinstance(e, dict) and ("ratio" in e or "error" in e), "TensorRT-RTX probe")
    if "error" in entry:
        raise BackendUnavailable(entry["error"])
    return float(entry["ratio"])


def _measure(spec, model_file, seconds, cuda_class, interleaved):
    size = spec.preprocess.size
    x = np.random.default_rng(0).integers(0, 256, (PROBE_BATCH, 4, size, size), dtype=np.uint8)
    t0 = time.perf_counter()
    try:
        with OnnxRuntimeRtxBackend(spec, model_file, max_batch=PROBE_BATCH) as rtx, \
                cuda_class(spec, model_file) as cuda:
            times = interleaved([lambda: rtx.infer(x), lambda: cuda.infer(x)], seconds / 2, block=seconds / 8)
    except BackendUnavailable as err:
        return {"error": str(err)}
    ratio = float(np.median(times[1]) / np.median(times[0]))
    log.info("TensorRT-RTX/CUDA probe on %s: %.2fx in %.1f s", model_file.path.name, ratio, time.perf_counter() - t0)
    return {"ratio": ratio}
