"""ONNX Runtime on the CPU, with its CUDA provider (``onnxruntime-cuda``) and with its TensorRT
provider (``onnxruntime-tensorrt``).

A GPU backend is checked after its session is made: unless the asked-for provider is the one the
session runs on, it stops with one line naming what is missing (runtime/onnx_session.py), so a
result is never labelled with a provider that did not compute it.

TF32: the CUDA provider runs with ``use_tf32=0``, so FP32 files compute in full FP32 on Ampere and
newer and match the CPU. ONNX Runtime's TensorRT provider has no TF32 switch (its FP32 engines use
TensorRT's default, TF32 allowed); gpu-check holds it to the TF32 tolerance.
"""

import os
from pathlib import Path

from runtime.backends.base import Backend, BackendUnavailable
from runtime.model_spec import INPUT_NAME, PROBS
from runtime.onnx_session import CUDA, TENSORRT, ProviderUnavailable, gpu_session, make_session

CUDA_OPTIONS = {"use_tf32": "0"}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, spec, model_file, device="cpu", model="ensemble", threads=0):
        super().__init__(spec, model_file, device, model)
        self.threads = threads
        self.session = None

    @property
    def description(self):
        return f"onnxruntime-{self.device} ({self.file.path.name}, {self.file.precision})"

    def _providers(self):
        return [(CUDA, CUDA_OPTIONS)]

    def _load(self):
        path, data = self.file.path, self.file.verified_bytes()  # the session runs the bytes that were hashed
        try:
            self.session = (make_session(path, "cpu", self.threads, data) if self.device == "cpu"
                            else gpu_session(path, self._providers(), self.threads, data))
        except ProviderUnavailable as err:
            raise BackendUnavailable(f"{self.name}: {err}") from None
        names = [i.name for i in self.session.get_inputs()]
        if names != [INPUT_NAME]:
            raise ValueError(f"{self.file.path}: inputs {names}, model.json says [{INPUT_NAME!r}]")

    def _infer(self, batch):
        return self.session.run([PROBS], {INPUT_NAME: batch})[0]

    def _free(self):
        self.session = None


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    name = "onnxruntime-cuda"

    def __init__(self, spec, model_file, device="cuda", model="ensemble", threads=0):
        super().__init__(spec, model_file, "cuda", model, threads)


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

    def _load(self):
        # The provider loads libnvinfer by name; the tensorrt wheel's copy is found once the
        # tensorrt module has loaded it into this process.
        try:
            import tensorrt  # noqa: F401
        except (ImportError, OSError):
            pass  # then libnvinfer must be on the loader path; gpu_session says so if it is not
        super()._load()
