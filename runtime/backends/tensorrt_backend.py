"""TensorRT engines through TensorRT's current execution API and cuda-python.

Why cuda-python and not pycuda: NVIDIA's own TensorRT samples moved to cuda-python; it ships as
wheels (no compiler, no CUDA toolkit headers at install time), follows the CUDA runtime API one to
one, and does not keep a global context of its own that fights with other libraries'.

Execution: ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` (no binding
indices). Host buffers are pinned; a batch is cut into chunks whose host-to-device copies run on a
copy stream while the previous chunk computes on the compute stream (double-buffered inputs,
ordered by CUDA events), so copies and compute overlap.
"""

import numpy as np

from runtime.backends.base import Backend, BackendUnavailable
from runtime.model_spec import INPUT_NAME, PROBS


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise BackendUnavailable("cuda-python is not installed (pip install -r requirements-tensorrt.txt)") from None
    return cudart


def _check(result):
    err, *rest = result
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, spec, model_file, device="cuda", model="ensemble", chunks=2):
        super().__init__(spec, model_file, device, model)
        self.chunks = chunks
        self._allocs = []

    @property
    def max_batch(self):
        return self.file.info.get("profile", {}).get("max_batch")

    def _load(self):
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendUnavailable("TensorRT is not installed (pip install -r requirements-tensorrt.txt)") from None
        from runtime.onnx_session import gpu_present

        if not gpu_present():
            raise BackendUnavailable("no NVIDIA GPU found")
        cudart = self.cudart = _cudart()
        self.trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.file.verified().read_bytes())
        if self.engine is None:
            raise BackendUnavailable(f"{self.file.path}: engine was built for another TensorRT version or GPU")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if INPUT_NAME not in names or PROBS not in names:
            raise ValueError(f"{self.file.path}: tensors {names}, model.json expects {INPUT_NAME!r} and {PROBS!r}")
        self.context = self.engine.create_execution_context()
        _, _, max_shape = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.profile_max = int(max_shape[0])
        c, h, w = (int(v) for v in max_shape[1:])
        self.sample_shape = (c, h, w)
        self.in_dtype = trt.nptype(self.engine.get_tensor_dtype(INPUT_NAME))
        self.out_dtype = trt.nptype(self.engine.get_tensor_dtype(PROBS))
        n = self.profile_max
        in_bytes = n * c * h * w * np.dtype(self.in_dtype).itemsize
        out_bytes = n * 28 * np.dtype(self.out_dtype).itemsize
        self.d_in = [self._malloc(in_bytes), self._malloc(in_bytes)]
        self.d_out = self._malloc(out_bytes)
        self.h_in = self._pinned(in_bytes, self.in_dtype, (n, c, h, w))
        self.h_out = self._pinned(out_bytes, self.out_dtype, (n, 28))
        self.copy_stream = _check(cudart.cudaStreamCreate())
        self.compute_stream = _check(cudart.cudaStreamCreate())
        self.copied = [_check(cudart.cudaEventCreate()) for _ in range(2)]
        self.consumed = [_check(cudart.cudaEventCreate()) for _ in range(2)]

    def _malloc(self, nbytes):
        ptr = _check(self.cudart.cudaMalloc(nbytes))
        self._allocs.append(("device", ptr))
        return ptr

    def _pinned(self, nbytes, dtype, shape):
        ptr = _check(self.cudart.cudaMallocHost(nbytes))
        self._allocs.append(("host", ptr))
        buf = (np.ctypeslib.as_array((np.ctypeslib.ctypes.c_byte * nbytes).from_address(int(ptr))))
        return buf.view(dtype).reshape(shape)

    @property
    def description(self):
        return f"tensorrt {self.trt.__version__ if hasattr(self, 'trt') else ''} ({self.file.path.name}, {self.file.precision})"

    def _infer(self, batch):
        cudart = self.cudart
        n = len(batch)
        if n > self.profile_max:
            raise ValueError(f"batch {n} above the engine's max batch {self.profile_max}")
        self.h_in[:n] = batch.astype(self.in_dtype, copy=False)
        edges = np.linspace(0, n, min(self.chunks, n) + 1).astype(int)
        per_sample_in = int(np.prod(self.sample_shape)) * np.dtype(self.in_dtype).itemsize
        per_sample_out = 28 * np.dtype(self.out_dtype).itemsize
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            slot = i % 2
            # the copy into this slot must wait until the compute that last read it is done
            _check(cudart.cudaStreamWaitEvent(self.copy_stream, self.consumed[slot], 0))
            src = self.h_in.ctypes.data + a * per_sample_in
            _check(cudart.cudaMemcpyAsync(self.d_in[slot], src, (b - a) * per_sample_in, h2d, self.copy_stream))
            _check(cudart.cudaEventRecord(self.copied[slot], self.copy_stream))
            _check(cudart.cudaStreamWaitEvent(self.compute_stream, self.copied[slot], 0))
            self.context.set_input_shape(INPUT_NAME, (b - a, *self.sample_shape))
            self.context.set_tensor_address(INPUT_NAME, int(self.d_in[slot]))
            self.context.set_tensor_address(PROBS, int(self.d_out) + a * per_sample_out)
            if not self.context.execute_async_v3(int(self.compute_stream)):
                raise RuntimeError("TensorRT execution failed")
            _check(cudart.cudaEventRecord(self.consumed[slot], self.compute_stream))
        _check(cudart.cudaMemcpyAsync(self.h_out.ctypes.data, self.d_out, n * per_sample_out, d2h, self.compute_stream))
        _check(cudart.cudaStreamSynchronize(self.compute_stream))
        return self.h_out[:n].astype(np.float32)

    def _free(self):
        cudart = getattr(self, "cudart", None)
        if cudart is None:
            return
        for kind, ptr in self._allocs:
            (cudart.cudaFree if kind == "device" else cudart.cudaFreeHost)(ptr)
        self._allocs = []
        for name in ("copy_stream", "compute_stream"):
            if getattr(self, name, None) is not None:
                cudart.cudaStreamDestroy(getattr(self, name))
                setattr(self, name, None)
        for ev in getattr(self, "copied", []) + getattr(self, "consumed", []):
            cudart.cudaEventDestroy(ev)
        self.copied, self.consumed = [], []
        self.context = self.engine = self.runtime = None
