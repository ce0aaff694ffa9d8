"""Which backend runs which file: one pure function of the request, model.json and what this
machine has (``Environment``), so the policy is testable without a GPU and said once.

``auto``: a TensorRT engine when one is listed and a GPU and TensorRT are present; else ONNX
Runtime with CUDA when a GPU and the CUDA provider are present; else ONNX Runtime on the CPU
(INT8 CPU flavour when exported, else FP32). Every choice carries the reason, which the command
line prints.
"""

import importlib.util
from dataclasses import dataclass

from runtime.errors import DataError


@dataclass(frozen=True)
class Environment:
    """What the machine offers the backends."""

    gpu: bool = False                 # an NVIDIA device node exists
    tensorrt: bool = False            # the tensorrt package is importable
    ort_providers: tuple = ("CPUExecutionProvider",)   # onnxruntime.get_available_providers()

    @property
    def ort_cuda(self):
        return self.gpu and "CUDAExecutionProvider" in self.ort_providers

    @property
    def ort_tensorrt(self):
        """ONNX Runtime's TensorRT provider can be asked for: listed, a GPU, and TensorRT's libraries."""
        return self.gpu and self.tensorrt and "TensorrtExecutionProvider" in self.ort_providers


def detect_environment():
    from runtime.onnx_session import available_providers, gpu_present

    return Environment(gpu=gpu_present(), tensorrt=importlib.util.find_spec("tensorrt") is not None,
                       ort_providers=tuple(available_providers()))


@dataclass(frozen=True)
class Choice:
    backend: str      # a name in runtime.backends.base's registry
    file: object      # the ModelFile to load (None for the torch backend, which reads the checkpoints)
    device: str       # cpu or cuda (auto for torch: CUDA when PyTorch sees a GPU)
    reason: str       # one line for the user: why this backend and file


def _fold_index(model):
    if model == "ensemble":
        return None
    if not model.startswith("fold") or not model[4:].isdigit():
        raise ValueError(f"--model-file must be 'ensemble' or 'fold<k>', got {model!r}")
    return int(model[4:])


def choose(spec, backend="auto", precision=None, device=None, model="ensemble", env=None):
    """The Choice for a request: ``backend`` auto or one of _EXPLICIT, ``precision``
    fp32|fp16|int8 or None (the backend's default), ``device`` cpu|cuda or None, ``model``
    'ensemble' or 'fold<k>'."""
    env = env or detect_environment()
    fold = _fold_index(model)
    kind = "ensemble" if fold is None else "fold"
    if fold is not None and not 0 <= fold < spec.folds:
        raise ValueError(f"--model-file {model}: the model has folds 0..{spec.folds - 1}")
    if backend == "auto":
        return _auto(spec, kind, fold, precision, env)
    if backend == "tensorrt":
        f = spec.find(kind, precision, fmt="engine", fold=fold)
        if f is None:
            raise DataError(spec.path, f"lists no {precision or ''} TensorRT engine for {model}; "
                                       "build one with `python -m export tensorrt`")
        return Choice("tensorrt", f, "cuda", "asked for TensorRT")
    if backend in ("onnxruntime-cuda", "onnxruntime-tensorrt"):
        return _onnxruntime_gpu(spec, backend, kind, fold, precision or "fp32", model)
    if backend == "onnxruntime":
        device = device or ("cuda" if env.ort_cuda else "cpu")
        p = precision or "fp32"
        f = spec.find(kind, p, "cpu" if p == "int8" and device == "cpu" else None, fold=fold)
        if f is None:
            raise DataError(spec.path, f"lists no {p} ONNX file for {model} ({', '.join(spec.choices())})")
        return Choice("onnxruntime", f, device, f"asked for ONNX Runtime ({p}, {device})")
    if backend == "torch":
        if precision not in (None, "fp32"):
            raise ValueError("the torch backend runs the fp32 checkpoints only")
        return Choice("torch", None, device or "auto", "asked for the PyTorch reference")
    raise ValueError(f"unknown backend {backend!r}; valid: auto, {', '.join(_EXPLICIT)}")


_EXPLICIT = ("onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt", "torch")


def _onnxruntime_gpu(spec, backend, kind, fold, precision, model):
    """ONNX Runtime's CUDA or TensorRT provider. INT8 runs the TensorRT-flavour Q/DQ file and only
    through TensorRT: the CUDA provider has no INT8 convolutions (it would dequantize and run FP32)."""
    if precision == "int8" and backend == "onnxruntime-cuda":
        raise ValueError("onnxruntime-cuda has no INT8 convolutions; for INT8 on a GPU use "
                         "--backend onnxruntime-tensorrt or tensorrt")
    f = spec.find(kind, precision, "tensorrt" if precision == "int8" else None, fold=fold)
    if f is None:
        raise DataError(spec.path, f"lists no {precision} ONNX file for {model} ({', '.join(spec.choices())})")
    provider = "CUDA" if backend == "onnxruntime-cuda" else "TensorRT"
    return Choice(backend, f, "cuda", f"asked for ONNX Runtime's {provider} provider ({precision})")


def _auto(spec, kind, fold, precision, env):
    engine = spec.find(kind, precision, fmt="engine", fold=fold)
    if engine is not None and env.gpu and env.tensorrt:
        return Choice("tensorrt", engine, "cuda", "a TensorRT engine is listed and TensorRT and a GPU are present")
    device = "cuda" if env.ort_cuda else "cpu"
    order = [precision] if precision else (["fp16", "fp32"] if device == "cuda" else ["int8", "fp32"])
    for p in order:
        f = spec.find(kind, p, "cpu" if p == "int8" and device == "cpu" else None, fold=fold)
        if f is not None:
            where = "the CUDA provider is present" if device == "cuda" else "no GPU with ONNX Runtime's CUDA provider"
            return Choice("onnxruntime", f, device, f"ONNX Runtime {p} on {device}: {where}")
    raise DataError(spec.path, f"lists no ONNX file for {kind if fold is None else f'fold{fold}'} "
                               f"({', '.join(spec.choices())})")
