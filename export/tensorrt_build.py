"""Build a serialized TensorRT engine from one of the exported ONNX files, with NVIDIA's Polygraphy
loaders (``NetworkFromOnnxPath`` -> ``CreateConfig`` -> ``EngineBytesFromNetwork``): one TensorRT
logger, parse errors reported, one optimization profile for the dynamic batch.

- Precision comes from the ONNX file itself (TensorRT 11 has no FP16/INT8 builder flags): the
  ``.fp16.onnx`` file for FP16, the ``.int8-trt.onnx`` Q/DQ file for INT8. Networks are strongly
  typed, on TensorRT 10 by flag and on TensorRT 11 always, so both build the same engine.
- TF32 is cleared: an FP32 engine computes in full FP32 on Ampere and newer GPUs and matches ONNX
  Runtime on the CPU to 1e-4, the bound export holds FP32 to.
- The timing cache is attached with ``set_timing_cache``'s result checked: a cache from another GPU
  or TensorRT release is replaced by an empty one, with a warning.
- What the plan is tied to (TensorRT release, GPU compute capability) is returned for model.json
  and Triton.
``tensorrt`` and ``polygraphy`` are imported only here, when a build is asked for.
"""

import importlib.util
import logging
from pathlib import Path

import onnx

from runtime.backends.tensorrt_backend import CUDA_INIT_FAILED, cuda_init_failed, expose_pip_cuda_runtime
from runtime.errors import DataError
from runtime.gpu_info import NoGpu, gpu_info
from runtime.model_spec import INPUT_NAME
from runtime.writeutil import atomic_write_bytes

log = logging.getLogger(__name__)
INSTALL = "on a GPU host: pip install -r requirements-tensorrt.txt (docs/gpu.md)"


class TensorRTUnavailable(Exception):
    """TensorRT, Polygraphy or a GPU is missing: a one-line reason for the user."""


def import_tensorrt():
    for module in ("tensorrt", "polygraphy"):
        if importlib.util.find_spec(module) is None:
            raise TensorRTUnavailable(f"{module} is not installed ({INSTALL})")
    from runtime.onnx_session import gpu_present

    if not gpu_present():
        raise TensorRTUnavailable("no NVIDIA GPU found: TensorRT engines can only be built and run on one")
    try:
        import tensorrt as trt
    except (ImportError, OSError) as err:
        raise TensorRTUnavailable(f"TensorRT cannot be loaded ({str(err).strip().splitlines()[0][:200]})") from None
    expose_pip_cuda_runtime()
    return trt


def input_shape(onnx_path):
    """(C, H, W) of the ONNX file's one input, which must be model.json's."""
    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as err:  # protobuf's DecodeError and friends: a truncated or foreign file
        raise DataError(onnx_path, f"not a readable ONNX file ({type(err).__name__})") from None
    inp = graph.input[0]
    if inp.name != INPUT_NAME:
        raise DataError(onnx_path, f"input is named {inp.name!r}, expected {INPUT_NAME!r}")
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]]
    if len(dims) != 3 or not all(dims):
        raise DataError(onnx_path, f"input {INPUT_NAME!r} must be (batch, C, H, W) with fixed C, H, W")
    return tuple(dims)


class TimingCache:
    """A timing cache file attached to the builder config with the result checked, saved after the build."""

    def __init__(self, path):
        self.path = Path(path) if path else None
        self.cache = None

    def attach(self, builder, network, config):
        data = self.path.read_bytes() if self.path and self.path.is_file() else b""
        cache = config.create_timing_cache(data)
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            log.warning("%s: timing cache made on another GPU or TensorRT release; starting an empty one", self.path)
            cache = config.create_timing_cache(b"")
            if not config.set_timing_cache(cache, ignore_mismatch=False):
                raise DataError(self.path, "TensorRT refused even an empty timing cache")
        self.cache = cache

    def save(self):
        if self.path and self.cache is not None:
            atomic_write_bytes(self.path, bytes(self.cache.serialize()))


def build_engine(onnx_path, engine_path, min_batch=1, opt_batch=32, max_batch=64, workspace_gb=4.0,
                 timing_cache=None):
    """Parse, build and write the engine; returns a dict describing it (for model.json)."""
    if not (1 <= min_batch <= opt_batch <= max_batch):
        raise ValueError(f"need 1 <= min ({min_batch}) <= opt ({opt_batch}) <= max ({max_batch}) batch")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise DataError(onnx_path, "ONNX file not found")
    chw = input_shape(onnx_path)
    trt = import_tensorrt()
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, PostprocessConfig
    from polygraphy.backend.trt import Profile
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    major = int(trt.__version__.split(".")[0])
    profile = Profile().add(INPUT_NAME, min=(min_batch, *chw), opt=(opt_batch, *chw), max=(max_batch, *chw))
    cache = TimingCache(timing_cache)
    try:
        with G_LOGGER.verbosity(G_LOGGER.WARNING):
            # TensorRT 11 makes every network strongly typed (pyCore.cpp: STRONGLY_TYPED "Deprecated: always enabled").
            network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=major < 11)
            config = PostprocessConfig(CreateConfig(profiles=[profile], tf32=False, memory_pool_limits={
                trt.MemoryPoolType.WORKSPACE: int(workspace_gb * (1 << 30))}), cache.attach)
            serialized = EngineBytesFromNetwork(network, config)()
    except PolygraphyException as err:
        line = (str(err).strip().splitlines() or ["see the TensorRT log above"])[0][:200]
        raise DataError(onnx_path, f"TensorRT could not build an engine from it ({line})") from None
    except TypeError as err:  # trt.Builder(logger) returned nullptr: CUDA did not start
        if not cuda_init_failed(err):
            raise
        raise TensorRTUnavailable(CUDA_INIT_FAILED) from None
    atomic_write_bytes(engine_path, bytes(serialized))
    cache.save()
    try:
        gpu = gpu_info()
    except NoGpu:
        gpu = None
    return {"path": str(engine_path), "tensorrt": trt.__version__, "min_batch": min_batch, "opt_batch": opt_batch,
            "max_batch": max_batch, "input_shape": list(chw), "tf32": False,
            "gpu": gpu.name if gpu else None, "compute_capability": gpu.compute_capability if gpu else None}
