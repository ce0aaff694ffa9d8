"""Build a serialized TensorRT engine from one of the exported ONNX files.

Written against the current API (TensorRT 10 and 11): ``build_serialized_network``,
``set_memory_pool_limit``, an optimization profile for the dynamic batch, a reusable timing
cache, and strongly typed networks. TensorRT 11 removed the FP16/INT8 builder flags and
calibrators; precision comes from the ONNX file itself (pass the ``.fp16.onnx`` or the
symmetric ``.int8-trt.onnx`` variant). On TensorRT 10 the same files are built as strongly typed
networks, so both versions build the same thing. ``tensorrt`` is imported only here, lazily.
"""

from pathlib import Path

from runtime.errors import DataError
from runtime.model_spec import INPUT_NAME
from runtime.writeutil import atomic_write_bytes



class TensorRTUnavailable(Exception):
    """TensorRT or a GPU is missing: a one-line reason for the user."""


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed (on a GPU host: pip install -r requirements-tensorrt.txt)") from None
    from runtime.onnx_session import gpu_present

    if not gpu_present():
        raise TensorRTUnavailable("no NVIDIA GPU found: TensorRT engines can only be built and run on one")
    return trt


def _network_flags(trt):
    # TensorRT 10: explicit batch is implicit and STRONGLY_TYPED is opt-in; TensorRT 11: every
    # network is strongly typed and the flag may be gone. Ask for it whenever it exists.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_engine(onnx_path, engine_path, min_batch=1, opt_batch=32, max_batch=64, workspace_gb=4.0,
                 timing_cache=None):
    """Parse, build and write the engine; returns a dict describing it."""
    if not (1 <= min_batch <= opt_batch <= max_batch):
        raise ValueError(f"need 1 <= min ({min_batch}) <= opt ({opt_batch}) <= max ({max_batch}) batch")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise DataError(onnx_path, "ONNX file not found")
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise DataError(onnx_path, "TensorRT could not parse it:\n" + "\n".join(errors))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    cache = None
    if timing_cache:
        data = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)

    inp = network.get_input(0)
    if inp.name != INPUT_NAME:
        raise DataError(onnx_path, f"input is named {inp.name!r}, expected {INPUT_NAME!r}")
    _, c, h, w = inp.shape
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (min_batch, c, h, w), (opt_batch, c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DataError(onnx_path, "TensorRT failed to build an engine (see the TensorRT log above)")
    atomic_write_bytes(engine_path, bytes(serialized))
    if cache is not None:
        atomic_write_bytes(timing_cache, bytes(cache.serialize()))
    return {"path": str(engine_path), "tensorrt": trt.__version__, "min_batch": min_batch, "opt_batch": opt_batch,
            "max_batch": max_batch, "input_shape": [c, h, w]}
