"""TensorRT engines run through NVIDIA's Polygraphy (``TrtRunner``).

Why Polygraphy and not hand-written device memory code: its runner is NVIDIA's own Python client
of TensorRT's execution API, tested against every TensorRT release. It sets each input shape and
address and checks the result, gives every output tensor (a fold engine has ``logits`` and
``probs``) memory from an output allocator that TensorRT sizes and aligns itself, and owns its CUDA
stream; host pointers cross into CUDA through ctypes as plain integers. Each batch runs in one
``execute_async_v3`` at its own size, so the optimised batch is the batch a caller sends.

What is left here: the engine's input/outputs checked against model.json (a version-3 engine
takes the uint8 image and normalises it in the network, as its ONNX file did; a version-2 engine
takes float32, normalised on the host by ``Backend.infer``), batches below the
profile's minimum padded up to it (``pad_to``), and CUDA/TensorRT failures turned into one line,
each naming its own cause: TensorRT's libraries not loading, CUDA not starting, or a plan from
another TensorRT release or GPU.
``tensorrt`` and ``polygraphy`` are imported only when the backend is entered.
"""

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

from runtime.backends.base import Backend, BackendUnavailable
from runtime.model_spec import INPUT_NAME, PROBS

INSTALL = "on a GPU host: pip install -r requirements-tensorrt.txt (docs/gpu.md)"


# Where each CUDA major's pip wheel (nvidia-cuda-runtime) puts libcudart, under site-packages.
CUDA_RUNTIME_FOLDERS = {13: ("nvidia", "cu13", "lib"), 12: ("nvidia", "cuda_runtime", "lib")}


def tensorrt_cuda_major(version=importlib.metadata.version):
    """12 or 13: the CUDA major version the installed TensorRT wheels are built for (the
    tensorrt-cu12-libs or tensorrt-cu13-libs distribution); None when that cannot be told (TensorRT
    from a tarball or a container, or both wheels installed)."""
    found = []
    for major in CUDA_RUNTIME_FOLDERS:
        try:
            version(f"tensorrt-cu{major}-libs")
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(major)
    return found[0] if len(found) == 1 else None


def expose_pip_cuda_runtime(paths=None, cuda_major=None):
    """Name the pip wheels' CUDA runtime folder on LD_LIBRARY_PATH, where Polygraphy looks for
    libcudart. Its search covers LD_LIBRARY_PATH, /usr/local/cuda and the CUDA 12 wheel's
    nvidia/cuda_runtime/lib, but not nvidia/cu13/lib, where the CUDA 13 wheels put it; on a host
    with no CUDA toolkit its CUDA calls would then fail. Only the folder of TensorRT's own CUDA
    major (``cuda_major``, else ``tensorrt_cuda_major()``) is named when that is known: the CUDA 12
    set installs beside torch's CUDA 13 wheels, and Polygraphy takes the first libcudart it finds,
    which on a CUDA 12 driver cannot start (cudaErrorInsufficientDriver). (Polygraphy reads the
    variable itself; the process's dynamic loader is not affected.) Returns the folders added."""
    cuda_major = cuda_major or tensorrt_cuda_major()
    layouts = [CUDA_RUNTIME_FOLDERS[cuda_major]] if cuda_major in CUDA_RUNTIME_FOLDERS \
        else list(CUDA_RUNTIME_FOLDERS.values())
    found = []
    for base in map(Path, paths if paths is not None else sys.path):
        for folder in (base.joinpath(*layout) for layout in layouts):
            if folder.is_dir() and any(folder.glob("libcudart.so*")) and str(folder) not in found:
                found.append(str(folder))
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    added = [f for f in found if f not in current]
    if added:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(added + current)
    return added


def pad_to(batch, minimum):
    """``batch`` with its last image repeated up to ``minimum`` rows (an engine's optimization
    profile refuses smaller batches); the caller keeps the first ``len(batch)`` results."""
    if len(batch) >= minimum:
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], minimum - len(batch), axis=0)])


def _first_line(err):
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


# What trt.Runtime(logger) and trt.Builder(logger) raise when TensorRT cannot start CUDA: their
# factories return nullptr and pybind11 turns that into this TypeError, right after TensorRT logs
# "CUDA initialization failure with error: N" (NVIDIA/TensorRT#2913; pyCore.cpp binds both
# constructors as py::init factories). Error 35 is cudaErrorInsufficientDriver.
CUDA_INIT_FAILED = ("TensorRT could not initialise CUDA (the TensorRT log above gives the CUDA error; 35 means "
                    "the NVIDIA driver is older than the CUDA this TensorRT is built for: install the matched set "
                    "for your driver, docs/gpu.md)")


def cuda_init_failed(err):
    """Whether ``err`` is TensorRT's Python bindings failing to create a Runtime or Builder."""
    return isinstance(err, TypeError) and "factory function returned nullptr" in str(err)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, spec, model_file, device="cuda", model="ensemble"):
        super().__init__(spec, model_file, device, model)
        self.runner = None
        self.profile = None         # (min, opt, max) batch of the engine's optimization profile

    @property
    def max_batch(self):
        return self.profile[2] if self.profile else self.file.info.get("profile", {}).get("max_batch")

    @property
    def description(self):
        return f"tensorrt ({self.file.path.name}, {self.file.precision})"

    def _load(self):
        for module in ("tensorrt", "polygraphy"):
            if importlib.util.find_spec(module) is None:
                raise BackendUnavailable(f"{module} is not installed ({INSTALL})")
        from runtime.onnx_session import gpu_present

        if not gpu_present():
            raise BackendUnavailable("no NVIDIA GPU found: TensorRT engines run on one only")
        try:  # here, not through Polygraphy, which would report a library that fails to load as a PolygraphyException
            import tensorrt  # noqa: F401
        except (ImportError, OSError) as err:  # libnvinfer or a CUDA library it needs
            raise BackendUnavailable(f"TensorRT cannot start here: {_first_line(err)} ({INSTALL})") from None
        expose_pip_cuda_runtime()
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        from polygraphy.exception import PolygraphyException
        from polygraphy.logger import G_LOGGER

        built = self.file.info
        with G_LOGGER.verbosity(G_LOGGER.WARNING):
            try:
                engine = EngineFromBytes(self.file.verified_bytes())()
            except PolygraphyException as err:  # deserialize_cuda_engine gave None: a plan for another TensorRT/GPU
                raise BackendUnavailable(
                    f"{self.file.path}: TensorRT cannot run this engine ({_first_line(err)}); it was built with "
                    f"TensorRT {built.get('tensorrt', '?')} for compute capability "
                    f"{built.get('compute_capability', '?')}, and a plan runs only with that TensorRT release on "
                    "that kind of GPU") from None
            except TypeError as err:
                if not cuda_init_failed(err):
                    raise
                raise BackendUnavailable(f"{self.file.path.name}: {CUDA_INIT_FAILED}") from None
            self.profile = self._check(engine)
            self.runner = TrtRunner(engine)
            try:
                self.runner.activate()
            except (PolygraphyException, OSError) as err:  # context, stream, CUDA runtime (libcudart through ctypes)
                raise BackendUnavailable(f"{self.file.path.name}: TensorRT could not start the engine on this GPU "
                                         f"({_first_line(err)}); see docs/gpu.md") from None

    def _check(self, engine):
        import tensorrt as trt

        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [INPUT_NAME] or PROBS not in names:
            raise BackendUnavailable(f"{self.file.path}: engine tensors {names}; model.json expects input "
                                     f"{INPUT_NAME!r} and output {PROBS!r}")
        wanted = {"uint8": trt.DataType.UINT8, "float32": trt.DataType.FLOAT}[self.spec.input["dtype"]]
        if engine.get_tensor_dtype(INPUT_NAME) != wanted:
            raise BackendUnavailable(f"{self.file.path}: engine input {INPUT_NAME!r} is "
                                     f"{engine.get_tensor_dtype(INPUT_NAME)}, model.json says {self.spec.input['dtype']}")
        classes = engine.get_tensor_shape(PROBS)[-1]
        if classes != len(self.spec.class_names):
            raise BackendUnavailable(f"{self.file.path}: engine gives {classes} classes, model.json lists "
                                     f"{len(self.spec.class_names)}")
        low, opt, high = (int(shape[0]) for shape in engine.get_tensor_profile_shape(INPUT_NAME, 0))
        return low, opt, high

    def _infer(self, batch):
        from polygraphy.exception import PolygraphyException

        try:
            out = self.runner.infer({INPUT_NAME: pad_to(batch, self.profile[0])})[PROBS]
        except PolygraphyException as err:
            raise BackendUnavailable(f"TensorRT inference failed on {self.file.path.name}: {_first_line(err)}") from None
        # The runner reuses its host buffers on the next call: copy out this batch's rows.
        return np.array(out[: len(batch)], dtype=np.float32)

    def _free(self):
        if self.runner is not None and self.runner.is_active:
            self.runner.deactivate()
        self.runner = None
