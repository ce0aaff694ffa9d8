"""Which backend runs which file: one pure function of the request, model.json and what this
machine has (``Environment``), so the policy is testable without a GPU and said once.

``auto``: a TensorRT engine when one is listed and a GPU and TensorRT are present; else TensorRT
for RTX (``onnxruntime-tensorrt-rtx``, FP16 when usable, else FP32) on a GPU of a compute
capability it supports when its plugin is installed and either no CUDA provider is present or a
probe (``runtime.backends.onnxruntime_rtx.measured_speedup``: both timed in turns for about a
second at batch 32, cached per file, GPU, driver and versions) measures it at least
``RTX_MIN_SPEEDUP`` times the CUDA provider's speed; else ONNX
Runtime with CUDA (FP16 when usable, else FP32) when a GPU and the CUDA provider are present;
else ONNX Runtime on the CPU: the INT8 flavour for this CPU's class when export marked it usable
and a probe (runtime.probe, about a second, cached) measures it at least ``INT8_MIN_SPEEDUP``
times FP32's speed here, else FP32. Every choice carries the reason, which the command line
prints; model.json lists the resulting default files (``default_choices``) for clients.
"""

import dataclasses
import importlib.util
from dataclasses import dataclass

from runtime.errors import DataError


@dataclass(frozen=True)
class Environment:
    """What the machine offers the backends."""

    gpu: bool = False                 # an NVIDIA device node exists
    tensorrt: bool = False            # the tensorrt package is importable
    ort_providers: tuple = ("CPUExecutionProvider",)   # onnxruntime.get_available_providers()
    cpu_class: str = "avx2"           # vnni or avx2: which INT8 CPU flavour suits it (runtime.probe.cpu_class)
    int8_speedup: object = None       # (FP32 ModelFile, INT8 ModelFile) -> INT8/FP32 speed here; None: never INT8
    rtx: bool = False                 # the TensorRT for RTX plugin package is importable
    compute_capability: str | None = None   # GPU 0's, as its driver reports it (looked up when rtx is installed)
    rtx_speedup: object = None        # (spec, ModelFile) -> TensorRT-RTX/CUDA speed here; None: never probed

    @property
    def ort_cuda(self):
        return self.gpu and "CUDAExecutionProvider" in self.ort_providers

    @property
    def ort_rtx(self):
        """TensorRT for RTX can be asked for: its plugin, a GPU, and a compute capability it supports."""
        from runtime.backends.onnxruntime_rtx import is_supported

        return self.gpu and self.rtx and self.compute_capability is not None and is_supported(self.compute_capability)

    @property
    def ort_tensorrt(self):
        """ONNX Runtime's TensorRT provider can be asked for: listed, a GPU, and TensorRT's libraries."""
        return self.gpu and self.tensorrt and "TensorrtExecutionProvider" in self.ort_providers


def detect_environment():
    from runtime.onnx_session import available_providers, gpu_present
    from runtime.probe import cpu_class, cpu_info, speedup

    gpu = gpu_present()
    rtx = importlib.util.find_spec("onnxruntime_ep_nv_tensorrt_rtx") is not None
    return Environment(gpu=gpu, tensorrt=importlib.util.find_spec("tensorrt") is not None,
                       ort_providers=tuple(available_providers()), cpu_class=cpu_class(cpu_info()[1]),
                       int8_speedup=speedup, rtx=rtx, compute_capability=_compute_capability() if gpu and rtx else None,
                       rtx_speedup=_rtx_speedup)


def _compute_capability():
    from runtime.gpu_info import NoGpu, gpu_info

    try:
        return gpu_info().compute_capability
    except NoGpu:
        return None


def _rtx_speedup(spec, model_file):
    from runtime.backends.onnxruntime_rtx import measured_speedup

    return measured_speedup(spec, model_file)


@dataclass(frozen=True)
class Choice:
    backend: str      # a name in runtime.backends.base's registry
    file: object      # the ModelFile to load (None for the torch backend, which reads the checkpoints)
    device: str       # cpu or cuda (auto for torch: CUDA when PyTorch sees a GPU)
    reason: str       # one line for the user: why this backend and file
    precision: str = None  # for the torch backend (no file): fp32, or fp16 autocast on CUDA


def _fold_index(model):
    if model == "ensemble":
        return None
    if not model.startswith("fold") or not model[4:].isdigit():
        raise ValueError(f"--model-file must be 'ensemble', 'fold<k>' or a file model.json lists, got {model!r}")
    return int(model[4:])


def choose(spec, backend="auto", precision=None, device=None, model="ensemble", env=None):
    """The Choice for a request: ``backend`` auto or one of _EXPLICIT, ``precision``
    fp32|fp16|int8 or None (the backend's default), ``device`` cpu|cuda or None, ``model``
    'ensemble', 'fold<k>' or the name of a file model.json lists."""
    env = env or detect_environment()
    named = spec.named(model)
    if named is not None:
        return _named(named, backend, precision, device, env)
    fold = _fold_index(model)
    kind = "ensemble" if fold is None else "fold"
    if fold is not None and not 0 <= fold < spec.folds:
        raise ValueError(f"--model-file {model}: the model has folds 0..{spec.folds - 1}")
    if backend == "auto":
        return _auto(spec, kind, fold, precision, env)
    if backend == "tensorrt":
        f = spec.find(kind, precision, fmt="engine", fold=fold)
        if f is None:
            raise DataError(spec.path, f"lists no {precision + ' ' if precision else ''}TensorRT engine for {model}; "
                                       "build one with `python -m export tensorrt`")
        return Choice("tensorrt", f, "cuda", "asked for TensorRT")
    if backend in ("onnxruntime-cuda", "onnxruntime-tensorrt", "onnxruntime-tensorrt-rtx"):
        return _onnxruntime_gpu(spec, backend, kind, fold, precision or "fp32", model)
    if backend == "onnxruntime":
        device = device or ("cuda" if env.ort_cuda else "cpu")
        p = precision or "fp32"
        f = spec.find(kind, p, "cpu" if p == "int8" and device == "cpu" else None, fold=fold)
        if f is None:
            raise DataError(spec.path, f"lists no {p} ONNX file for {model} ({', '.join(spec.choices())})")
        return Choice("onnxruntime", f, device, f"asked for ONNX Runtime ({p}, {device})")
    if backend == "torch":
        if precision not in (None, "fp32", "fp16"):
            raise ValueError("the torch backend runs the checkpoints in fp32, or fp16 autocast on CUDA")
        return Choice("torch", None, device or "auto", f"asked for the PyTorch reference ({precision or 'fp32'})",
                      precision or "fp32")
    raise ValueError(f"unknown backend {backend!r}; valid: auto, {', '.join(_EXPLICIT)}")


_EXPLICIT = ("onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "onnxruntime-tensorrt-rtx", "tensorrt", "torch")


def _onnxruntime_gpu(spec, backend, kind, fold, precision, model):
    """ONNX Runtime's CUDA or TensorRT provider. INT8 runs the TensorRT-flavour Q/DQ file and only
    through TensorRT: the CUDA provider has no INT8 convolutions (it would dequantize and run FP32)."""
    if precision == "int8" and backend in ("onnxruntime-cuda", "onnxruntime-tensorrt-rtx"):
        raise ValueError(f"{backend} has no INT8 convolutions; for INT8 on a GPU use "
                         "--backend onnxruntime-tensorrt or tensorrt")
    f = spec.find(kind, precision, "tensorrt" if precision == "int8" else None, fold=fold)
    if f is None:
        raise DataError(spec.path, f"lists no {precision} ONNX file for {model} ({', '.join(spec.choices())})")
    provider = {"onnxruntime-cuda": "CUDA", "onnxruntime-tensorrt": "TensorRT"}.get(backend, "TensorRT for RTX")
    return Choice(backend, f, "cuda", f"asked for ONNX Runtime's {provider} provider ({precision})")


def _named(f, backend, precision, device, env):
    """A file asked for by its name: run by the backend for its format, on the device asked for."""
    runner = "tensorrt" if f.format == "engine" else "onnxruntime"
    if backend not in ("auto", runner) or precision not in (None, f.precision):
        raise ValueError(f"--model-file {f.info['path']} is a {f.precision} {f.format} file: run it with "
                         f"--backend {runner} or auto, and --precision {f.precision} or none")
    device = "cuda" if runner == "tensorrt" else device or ("cuda" if env.ort_cuda else "cpu")
    return Choice(runner, f, device, f"asked for {f.info['path']}")


# An INT8 file is worth its small accuracy cost only when clearly faster: a one-second probe is
# noisy to a few percent, and a ratio near 1 means nothing to gain.
INT8_MIN_SPEEDUP = 1.1
# TensorRT for RTX over the CUDA provider: the same bar. Its first session on a machine also pays
# for compiling kernels (kept in its runtime cache), which only a clear gain is worth.
RTX_MIN_SPEEDUP = 1.1
DEFAULTS_RULE = (f"per backend and device, the first usable candidate; on a CPU an INT8 candidate only when a "
                 f"probe on the machine measures it at least {INT8_MIN_SPEEDUP}x as fast as the last (FP32) "
                 "candidate. A listed TensorRT engine comes first where a GPU and TensorRT are present.")


def candidates(spec, device, cpu, kind="ensemble", fold=None):
    """The ONNX files ``auto`` considers, in order, for ONNX Runtime on ``device`` (a CPU of class
    ``cpu``): reduced precision first (FP16 on CUDA; on a CPU the INT8 flavours it runs without
    saturation), FP32 last. Files whose variant export marked unusable are left out."""
    def listed(precision, target=None, cpu_ok=None):
        return [f for f in spec.files if f.kind == kind and f.format == "onnx" and f.precision == precision
                and (fold is None or f.fold == fold) and (target is None or f.target == target)
                and (cpu_ok is None or spec.variant_of(f).cpu in cpu_ok) and spec.variant_of(f).usable]
    fp32 = [f for f in listed("fp32") if f.target == "any"]
    if device == "cuda":
        return [f for f in listed("fp16") if f.target == "any"] + fp32
    # An INT8 flavour with full 8-bit weights can saturate without VNNI; the reduce_range one runs anywhere.
    flavours = ("vnni", "avx2") if cpu == "vnni" else ("avx2",)
    return sorted(listed("int8", "cpu", flavours), key=lambda f: flavours.index(spec.variant_of(f).cpu)) + fp32


def default_choices(spec):
    """model.json's ``defaults``: the ensemble candidates per backend, device and CPU class."""
    choices = [{"backend": "onnxruntime", "device": "cuda"},
               *({"backend": "onnxruntime", "device": "cpu", "cpu": c} for c in ("vnni", "avx2"))]
    for choice in choices:
        choice["candidates"] = [f.info["path"] for f in candidates(spec, choice["device"], choice.get("cpu"))]
    return {"rule": DEFAULTS_RULE, "choices": [c for c in choices if c["candidates"]]}


def _auto(spec, kind, fold, precision, env):
    engine = spec.find(kind, precision, fmt="engine", fold=fold)
    if engine is not None and env.gpu and env.tensorrt and spec.variant_of(engine).usable:
        return Choice("tensorrt", engine, "cuda", "a TensorRT engine is listed and TensorRT and a GPU are present")
    rtx, note = _auto_rtx(spec, kind, fold, precision, env)
    if rtx is not None:
        return rtx
    choice = _auto_onnxruntime(spec, kind, fold, precision, env)
    if note and choice.device == "cuda":
        return dataclasses.replace(choice, reason=f"{choice.reason}; {note}")
    return choice


def _auto_rtx(spec, kind, fold, precision, env):
    """(the TensorRT-RTX Choice, None) when auto takes it, else (None, a note on why not, or None)."""
    if not env.ort_rtx or precision == "int8":
        return None, None
    if precision:
        f = spec.find(kind, precision, fold=fold)
    else:
        files = candidates(spec, "cuda", env.cpu_class, kind, fold)
        f = files[0] if files else None
    if f is None:
        return None, None
    where = f"TensorRT for RTX {f.variant} on cuda (compute capability {env.compute_capability})"
    if not env.ort_cuda:
        return Choice("onnxruntime-tensorrt-rtx", f, "cuda", f"{where}: the GPU provider here (no CUDA provider)"), None
    if env.rtx_speedup is None:
        return None, "TensorRT for RTX only where a probe measures it faster, and none was run"
    from runtime.backends.base import BackendUnavailable

    try:
        ratio = env.rtx_speedup(spec, f)
    except BackendUnavailable as err:
        return None, f"TensorRT for RTX could not run ({err})"
    if ratio >= RTX_MIN_SPEEDUP:
        return Choice("onnxruntime-tensorrt-rtx", f, "cuda", f"{where}: {ratio:.2f}x the CUDA provider's speed on "
                                                            "this GPU (probe)"), None
    return None, f"TensorRT for RTX measured {ratio:.2f}x the CUDA provider's speed (below {RTX_MIN_SPEEDUP}x)"


def _auto_onnxruntime(spec, kind, fold, precision, env):
    device = "cuda" if env.ort_cuda else "cpu"
    where = "the CUDA provider is present" if device == "cuda" else "no GPU with ONNX Runtime's CUDA provider"
    if precision:
        f = spec.find(kind, precision, "cpu" if precision == "int8" and device == "cpu" else None, fold=fold,
                      cpu=env.cpu_class)
        if f is None:
            raise DataError(spec.path, f"lists no {precision} ONNX file for {kind if fold is None else f'fold{fold}'} "
                                       f"({', '.join(spec.choices())})")
        variant = spec.variant_of(f)
        return Choice("onnxruntime", f, device, f"ONNX Runtime {f.variant} on {device}: asked for {precision}"
                      + ("" if variant.usable else f" (export marked it unusable: {variant.reason})"))
    files = candidates(spec, device, env.cpu_class, kind, fold)
    if not files or files[-1].precision != "fp32":
        raise DataError(spec.path, f"lists no usable FP32 ONNX file for {kind if fold is None else f'fold{fold}'} "
                                   f"({', '.join(spec.choices())})")
    fp32, reduced = files[-1], files[0]
    if reduced is fp32:
        return Choice("onnxruntime", fp32, device, f"ONNX Runtime fp32 on {device}: {where}; "
                                                   f"{_why_not_reduced(spec, kind, device, env)}")
    if device == "cuda":
        return Choice("onnxruntime", reduced, device, f"ONNX Runtime {reduced.variant} on cuda: {where}")
    if env.int8_speedup is None:
        return Choice("onnxruntime", fp32, "cpu", "ONNX Runtime fp32 on cpu: INT8 only where a probe measures it "
                                                  "faster, and none was run")
    ratio = env.int8_speedup(fp32, reduced)
    if ratio >= INT8_MIN_SPEEDUP:
        return Choice("onnxruntime", reduced, "cpu", f"ONNX Runtime {reduced.variant} on cpu: {ratio:.2f}x FP32's "
                                                     f"speed on this CPU ({env.cpu_class} class, probe)")
    return Choice("onnxruntime", fp32, "cpu", f"ONNX Runtime fp32 on cpu: {reduced.variant} measured {ratio:.2f}x "
                                               f"FP32's speed on this CPU (below {INT8_MIN_SPEEDUP}x)")


def _why_not_reduced(spec, kind, device, env):
    precision = "fp16" if device == "cuda" else "int8"
    unusable = [v for v in spec.variants.values() if v.precision == precision and not v.usable]
    if unusable:
        return f"{unusable[0].name} was marked unusable at export ({unusable[0].reason})"
    if device == "cpu" and any(v.precision == "int8" and v.target == "cpu" for v in spec.variants.values()):
        return f"no INT8 flavour for this CPU's class ({env.cpu_class}) was exported"
    return f"no {precision} {kind} file was exported"
