"""ONNX Runtime sessions with the right providers.

onnxruntime-gpu lists the CUDA provider even on machines without a GPU, and asking for it there
logs a loud error; so CUDA is requested only when an NVIDIA device node exists.
"""

import logging
import os

import onnxruntime as ort

from runtime.errors import DataError

log = logging.getLogger(__name__)


def gpu_present():
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def available_providers():
    return ort.get_available_providers()


def cuda_available():
    return gpu_present() and "CUDAExecutionProvider" in available_providers()


def make_session(path, device="cpu", threads=0):
    """An InferenceSession on 'cpu' or 'cuda' (falls back to CPU with a warning when CUDA is absent)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # No spin-waiting between calls: runtime infer decodes on threads that share the cores, and
    # ONNX Runtime's spinning pool took a fifth of end-to-end speed for a few percent of model
    # speed (docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if cuda_available():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            log.warning("CUDA requested but no GPU/CUDA provider here; using the CPU")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for a bad file
        raise DataError(path, f"ONNX Runtime cannot load it ({str(err).splitlines()[0][:160]})") from None
