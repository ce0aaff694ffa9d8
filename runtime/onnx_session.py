"""ONNX Runtime sessions on the CPU or with a GPU execution provider, and why a provider is missing.

onnxruntime-gpu lists its CUDA and TensorRT providers even where they cannot run (no GPU, CUDA or
cuDNN libraries missing, TensorRT absent), and asked for one there it logs an error and quietly
runs on the CPU. So a GPU session is only made when an NVIDIA device exists, and is then checked:
``gpu_session`` raises ProviderUnavailable, naming what is missing, unless the asked-for provider is
the one the session really uses (``session.get_providers()``).
"""

import ctypes
import logging
import os
from pathlib import Path

import onnxruntime as ort

from runtime.errors import DataError

log = logging.getLogger(__name__)

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
# The shared library behind each GPU provider in the onnxruntime-gpu wheel (onnxruntime/capi/).
_PROVIDER_LIBRARY = {CUDA: "libonnxruntime_providers_cuda.so", TENSORRT: "libonnxruntime_providers_tensorrt.so"}


RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"
# Nodes that carry the model's arithmetic: one of them on another provider is a silent fallback
# (shape arithmetic a provider leaves to the CPU is not).
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "ConvInteger", "MatMulInteger",
                         "QLinearMatMul", "BatchNormalization", "GlobalAveragePool", "AveragePool", "MaxPool"})


def first_line(err, limit=200):
    """The first line of ``err``'s message (its type's name when it has none), at most ``limit``
    characters: onnxruntime's messages run over several lines, with a source path and a stack."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]


class ProviderUnavailable(Exception):
    """A GPU execution provider cannot run here; the message says what is missing, in one line."""


def gpu_present():
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def available_providers():
    return ort.get_available_providers()


def built_for_cuda():
    """The CUDA version this onnxruntime build targets ('13.0'), or None for a CPU build."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return None
    return getattr(info, "cuda_version", None) or None


def _options(threads, record_assignment=False):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # No spin-waiting between calls: runtime infer decodes on threads that share the cores, and
    # ONNX Runtime's spinning pool took a fifth of end-to-end speed for a few percent of model
    # speed (docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    if record_assignment:  # which provider runs each node: what assigned_elsewhere reads
        options.add_session_config_entry(RECORD_ASSIGNMENT, "1")
    return options


def _session(path, providers, threads, data=None):
    """A session of the model bytes ``data`` (``path`` names them in errors), or of the file."""
    try:
        return ort.InferenceSession(str(path) if data is None else data, _options(threads), providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for a bad file or provider
        raise DataError(path, f"ONNX Runtime cannot load it ({first_line(err, 160)})") from None


def make_session(path, device="cpu", threads=0, data=None):
    """An InferenceSession on the CPU (``device`` 'cpu') or with the CUDA provider ('cuda', checked
    as ``gpu_session`` does). ``data``: the model's bytes, already read (and checked) from ``path``."""
    if device == "cuda":
        return gpu_session(path, [(CUDA, {"use_tf32": 0})], threads, data)
    if device != "cpu":
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    return _session(path, [CPU], threads, data)


def gpu_session(path, providers, threads=0, data=None):
    """A session whose first provider is ``providers[0]`` (a name or (name, options)), with the
    rest as fallbacks for nodes it cannot take; ProviderUnavailable unless that provider is active."""
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    problem = missing_before(wanted)
    if problem:
        raise ProviderUnavailable(f"{wanted}: {problem}")
    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels, so no LD_LIBRARY_PATH is needed
        ort.preload_dlls()
    session = _session(path, [*providers, CPU], threads, data)
    active = session.get_providers()
    if active[0] != wanted:
        raise ProviderUnavailable(f"{wanted} is not active (the session runs on {', '.join(active)}): "
                                  f"{missing_after(wanted)}")
    return session


def missing_before(provider):
    """Why ``provider`` cannot even be asked for here, or None."""
    if provider not in available_providers():
        return (f"this onnxruntime ({ort.__version__}) has no {provider}; install onnxruntime-gpu from one of the "
                "matched sets in requirements-tensorrt.txt")
    if not gpu_present():
        return "no NVIDIA GPU found (no /dev/nvidia* device)"
    return None


def missing_after(provider):
    """Why ONNX Runtime could not start ``provider``: the library its provider module fails to load
    with, when that is the cause (the usual one: CUDA, cuDNN or TensorRT libraries of another major
    version, or none)."""
    library = Path(ort.__file__).parent / "capi" / _PROVIDER_LIBRARY.get(provider, "")
    if provider in _PROVIDER_LIBRARY and library.is_file():
        try:
            ctypes.CDLL(str(library))
        except OSError as err:
            wanted = f" (this onnxruntime is built for CUDA {built_for_cuda()})" if built_for_cuda() else ""
            return f"{library.name} cannot load: {err}{wanted}; see docs/gpu.md"
    return "ONNX Runtime could not start it (its log above says why); see docs/gpu.md"


def assigned_elsewhere(session, wanted):
    """{provider: [op types]} of the compute nodes (COMPUTE_OPS) ``session`` runs on a provider other
    than ``wanted``, from ONNX Runtime's graph assignment record (a session made with
    ``record_assignment``); None when this onnxruntime cannot tell."""
    if not hasattr(session, "get_provider_graph_assignment_info"):
        return None
    elsewhere = {}
    for subgraph in session.get_provider_graph_assignment_info():
        if subgraph.ep_name == wanted:
            continue
        ops = [n.op_type for n in subgraph.get_nodes() if n.op_type in COMPUTE_OPS]
        if ops:
            elsewhere.setdefault(subgraph.ep_name, []).extend(ops)
    return elsewhere


def plugin_session(path, ep_devices, provider_options, wanted, threads=0, data=None):
    """A session on a plugin execution provider (registered with
    ``onnxruntime.register_execution_provider_library``) for ``ep_devices``; ProviderUnavailable,
    naming the nodes, when any compute node runs elsewhere (a silent CPU fallback)."""
    options = _options(threads, record_assignment=True)
    options.add_provider_for_devices(list(ep_devices), {k: str(v) for k, v in provider_options.items()})
    try:
        session = ort.InferenceSession(str(path) if data is None else data, options)
    except Exception as err:  # onnxruntime's own exception types: the file, or the provider refusing it
        raise DataError(path, f"{wanted} cannot load it ({first_line(err)})") from None
    active = session.get_providers()
    if wanted not in active:
        raise ProviderUnavailable(f"{wanted} is not active (the session runs on {', '.join(active)})")
    elsewhere = assigned_elsewhere(session, wanted)
    if elsewhere:
        where = "; ".join(f"{len(ops)} on {ep} ({', '.join(sorted(set(ops))[:4])})" for ep, ops in elsewhere.items())
        raise ProviderUnavailable(f"{wanted} does not run the whole graph of {Path(path).name}: compute nodes {where}")
    return session
