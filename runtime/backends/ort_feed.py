"""The device feed of the ONNX Runtime backends: IO binding with buffers this object owns.

ONNX Runtime's ``session.run`` takes a numpy batch and, on a GPU provider, copies it from pageable
host memory into memory it allocates for that call, then allocates the output and copies it back:
per batch, allocations and a staged copy. ``BoundFeed`` does what ONNX Runtime's IO-binding
examples do instead:

- the uint8 batch (or, for a version-2 file, the normalised float32 batch) is written into a host
  buffer that stays allocated, pinned (page-locked) where the provider offers pinned memory, so
  the copy to the device is one DMA;
- that buffer is copied once into a device buffer the session reuses (an OrtValue on the device,
  ``update_inplace`` from the host array, its long-standing numpy form), bound
  as the input;
- the output is bound to a reused device buffer and read back in one copy (``OrtValue.numpy()``:
  28 floats per image, so a fresh host array costs nothing worth pinning); the caller gets its own
  copy of the rows it sent.

Slots. Buffers come in slots of a fixed number of rows (``capacity``), bound once when made.
Without CUDA graphs a batch runs in the slot of its own size (the last two sizes are kept: a run's
batch size and its tail), so the graph runs at the batch's size and no row is copied twice. With
CUDA graphs (``fixed``) a captured graph replays fixed shapes at fixed addresses: a batch runs in
the smallest slot that holds it, the tail rows (whatever that slot's last batch left there)
computed and dropped; a batch no slot holds gets a new slot, captured as its own graph (the
provider's graph-id run option, ``gpu_graph_id``). ``runtime infer`` sends full batches and one
shorter tail, so it captures one graph; ``runtime bench`` one per batch size.

Memory, per provider: ``CpuMemory`` (numpy arrays; the host buffer is the device buffer, so there
is no copy: used by the tests, where the CPU provider runs this same code), ``CudaMemory`` (ONNX
Runtime's CUDA provider: device buffers are 'cuda' OrtValues on CUDA device ``device_id``, copied
with ``update_inplace`` and ``numpy()``; pinned host buffers from the provider's host-accessible
allocator when its OrtEpDevice is listed, else plain numpy memory, said once in the log) and
``EpMemory`` (a plugin execution provider such as TensorRT for RTX: every buffer comes from the
allocators its OrtEpDevice lists, so on the plugin's own GPU, and every copy goes through
``onnxruntime.copy_tensors``, the data transfer the plugin registers; a 'cuda' OrtValue would need
ONNX Runtime's CUDA provider library, which the plugin's install does not bring, and would sit on
CUDA device ``gpu`` rather than the plugin's ``gpu``-th listed device). A slot's buffers are
allocated when the first batch of its size comes and freed by ``close`` (the backend's ``_free``).
"""

import ctypes
import inspect
import logging
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

# The run option selecting a captured CUDA graph: gpu_graph_id (onnxruntime_run_options_config_keys.h,
# kOrtRunOptionsConfigCudaGraphAnnotation). ONNX Runtime's session reads it to decide between
# capture and replay for every provider that captures graphs, plugin providers included (ONNX
# Runtime 1.26's OrtEp::IsGraphCaptured/ReplayGraph), so every feed sets it; the TensorRT for RTX
# plugin also names its own key, cuda_graph_annotation_id (tensorrt_rtx_provider_options.h,
# run_option_names), which its feed sets to the same id.
GRAPH_ID_KEY = "gpu_graph_id"


def _view(value, shape, dtype):
    """A writable numpy view of a host OrtValue's memory (``OrtValue.numpy()`` returns a copy)."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_uint8 * n).from_address(value.data_ptr()), dtype=dtype).reshape(shape)


class CpuMemory:
    """Buffers in ordinary memory, for a session on the CPU provider."""

    device_type, device_id, pinned = "cpu", 0, False

    def host(self, shape, dtype):
        array = np.zeros(shape, dtype)
        return ort.OrtValue.ortvalue_from_numpy(array), array

    def device(self, shape, dtype, host_value):
        return host_value  # the host buffer is what the session reads: no copy

    def output(self, shape, dtype):
        value, array = self.host(shape, dtype)
        return value, value, array  # the session writes the host array itself

    def upload(self, host_value, host_array, device_value):
        pass  # the session reads the host buffer

    def download(self, device_value, host_value, host_array, rows):
        return host_array[:rows].copy()


class CudaMemory:
    """Device buffers on CUDA device ``device_id`` (``OrtValue``s on 'cuda', the device ONNX
    Runtime's CUDA provider and NVIDIA plugin providers share); pinned host buffers from the
    provider's host-accessible memory when ``ep_device`` (its OrtEpDevice) is given and ONNX Runtime
    has that allocator, else pageable numpy buffers (said once in the log)."""

    device_type = "cuda"

    def __init__(self, device_id=0, ep_device=None):
        self.device_id = device_id
        self.ep_device = ep_device
        self.pinned = ep_device is not None
        if not self.pinned:
            log.info("no OrtEpDevice for this provider: host buffers are pageable, so each host-to-device "
                     "copy is staged by the driver")

    def host(self, shape, dtype):
        if self.pinned:
            try:
                info = self.ep_device.memory_info(ort.OrtDeviceMemoryType.HOST_ACCESSIBLE)
                if info is None:  # memory_info=None would allocate plain CPU memory, not pinned
                    raise ValueError("it lists no host-accessible memory")
                value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, memory_info=info)
                return value, _view(value, shape, dtype)
            except Exception as err:  # noqa: BLE001 - onnxruntime's own types: no such allocator in this build
                self.pinned = False
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
                log.info("no pinned host memory from %s (%s): host buffers are pageable",
                         getattr(self.ep_device, "ep_name", "the provider"), reason)
        array = np.zeros(shape, dtype)
        return ort.OrtValue.ortvalue_from_numpy(array), array

    def device(self, shape, dtype, host_value):
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, "cuda", self.device_id)

    def output(self, shape, dtype):
        return self.device(shape, dtype, None), None, None  # read back with OrtValue.numpy()

    def upload(self, host_value, host_array, device_value):
        device_value.update_inplace(host_array)  # a synchronous copy (ONNX Runtime syncs after it)

    def download(self, device_value, host_value, host_array, rows):
        return device_value.numpy()[:rows]  # after run_with_iobinding, which synchronised the stream


class EpMemory:
    """Buffers of a plugin execution provider, from the allocators its OrtEpDevice ``ep_device``
    lists: device memory (``OrtDeviceMemoryType.DEFAULT``) on the plugin's GPU, pinned host memory
    (``HOST_ACCESSIBLE``) where it lists one, else numpy memory; copies through
    ``onnxruntime.copy_tensors`` (synchronous without a stream). An onnxruntime whose
    ``ortvalue_from_shape_and_type`` takes no ``memory_info`` (1.26 and older) gets the device
    buffers by the device memory's vendor and device id (the plugin's shared allocator, keyed so) and
    pageable host buffers. ValueError, one line, when the device lists no device memory."""

    device_type = "ep"

    def __init__(self, ep_device):
        self.ep_device = ep_device
        name = getattr(ep_device, "ep_name", "the provider")
        self.device_info = ep_device.memory_info(ort.OrtDeviceMemoryType.DEFAULT)
        if self.device_info is None:
            raise ValueError(f"{name} lists no device memory for its device, so no input can be bound there")
        self.by_info = "memory_info" in inspect.signature(ort.OrtValue.ortvalue_from_shape_and_type).parameters
        self.host_info = ep_device.memory_info(ort.OrtDeviceMemoryType.HOST_ACCESSIBLE) if self.by_info else None
        self.pinned = self.host_info is not None
        if not self.pinned:
            log.info("no host-accessible memory from %s in this onnxruntime: host buffers are pageable", name)

    def host(self, shape, dtype):
        if self.pinned:
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, memory_info=self.host_info)
            return value, _view(value, shape, dtype)
        array = np.zeros(shape, dtype)
        return ort.OrtValue.ortvalue_from_numpy(array), array

    def device(self, shape, dtype, host_value):
        if self.by_info:
            return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, memory_info=self.device_info)
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, "gpu", self.device_info.device_id,
                                                         self.device_info.device_vendor_id)

    def output(self, shape, dtype):
        host_value, host_array = self.host(shape, dtype)
        return self.device(shape, dtype, None), host_value, host_array

    def upload(self, host_value, host_array, device_value):
        ort.copy_tensors([host_value], [device_value])

    def download(self, device_value, host_value, host_array, rows):
        ort.copy_tensors([device_value], [host_value])  # after run_with_iobinding, which synchronised
        return host_array[:rows].copy()


def cuda_ep_device(ep_name, index=0):
    """The ``index``-th OrtEpDevice ONNX Runtime lists for ``ep_name`` on a GPU, or None (a build
    whose provider is not listed there: then no pinned memory from it)."""
    try:
        devices = [d for d in ort.get_ep_devices() if d.ep_name == ep_name
                   and d.device.type == ort.OrtHardwareDeviceType.GPU]
    except AttributeError:  # an onnxruntime older than the EP-device API
        return None
    return devices[index] if index < len(devices) else None


@dataclass
class _Slot:
    capacity: int
    binding: object
    host_in: np.ndarray
    host_in_value: object
    device_in: object
    device_out: object
    host_out_value: object  # the output's host buffer (the CPU's and EpMemory's), else None
    host_out: object
    graph_id: int


class BoundFeed:
    max_slots = 2   # without graphs: buffers for the last two batch sizes (a run's batch and its tail)
    """Runs ``session`` through IO binding with reused buffers (see the module docstring).

    ``input_name``/``output_name``: the graph's input and the output read back; ``item_shape``:
    one image's input shape (4, S, S); ``input_dtype``: uint8 (model.json version 3) or float32;
    ``classes``: the output's width; ``fixed``: CUDA graphs are on (fixed shapes and addresses);
    ``graph_keys``: the run options naming the graph to capture or replay (each set to the slot's id)."""

    def __init__(self, session, memory, input_name, output_name, item_shape, input_dtype, classes, fixed=False,
                 graph_keys=(GRAPH_ID_KEY,)):
        self.session = session
        self.memory = memory
        self.input_name, self.output_name = input_name, output_name
        self.item_shape = tuple(item_shape)
        self.input_dtype = np.dtype(input_dtype)
        self.classes = classes
        self.fixed = fixed
        self.graph_keys = tuple(graph_keys)
        self.slots = []
        self.graphs = 0

    def _slot(self, rows):
        """The slot a batch of ``rows`` runs in, made when needed."""
        if self.fixed:
            fitting = [s for s in self.slots if s.capacity >= rows]
            if fitting:
                return min(fitting, key=lambda s: s.capacity)
        else:
            for slot in self.slots:
                if slot.capacity == rows:
                    return slot
            del self.slots[:len(self.slots) + 1 - self.max_slots]  # the run's batch size and its tail stay
        host_in_value, host_in = self.memory.host((rows, *self.item_shape), self.input_dtype)
        device_in = self.memory.device((rows, *self.item_shape), self.input_dtype, host_in_value)
        device_out, host_out_value, host_out = self.memory.output((rows, self.classes), np.float32)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, device_in)   # bound once: a captured graph replays
        binding.bind_ortvalue_output(self.output_name, device_out)  # these addresses
        self.graphs += 1  # graph id 0 is ONNX Runtime's default annotation; ours start at 1
        slot = _Slot(rows, binding, host_in, host_in_value, device_in, device_out, host_out_value, host_out,
                     graph_id=self.graphs)
        self.slots.append(slot)
        return slot

    def run(self, batch):
        """(N, classes) float32 outputs of ``batch`` (N rows of ``item_shape``, ``input_dtype``)."""
        n = len(batch)
        slot = self._slot(n)
        slot.host_in[:n] = batch
        self.memory.upload(slot.host_in_value, slot.host_in, slot.device_in)  # the one host-to-device copy
        options = None
        if self.fixed:
            options = ort.RunOptions()
            for key in self.graph_keys:
                options.add_run_config_entry(key, str(slot.graph_id))
        self.session.run_with_iobinding(slot.binding, options)
        # Run synchronises the provider's stream before it returns, and a graph replay is followed
        # by the provider's own stream sync; reading back only after synchronize_outputs keeps the
        # read correct whatever a provider does there (on an idle stream it costs microseconds).
        slot.binding.synchronize_outputs()
        return self.memory.download(slot.device_out, slot.host_out_value, slot.host_out, n)  # and one back

    def close(self):
        """Release the buffers and bindings (the device memory goes with its OrtValues)."""
        for slot in self.slots:
            slot.binding.clear_binding_inputs()
            slot.binding.clear_binding_outputs()
        self.slots.clear()
