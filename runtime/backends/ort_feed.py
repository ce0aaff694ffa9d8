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
provider's graph-id run option, ``graph_key``). ``runtime infer`` sends full batches and one
shorter tail, so it captures one graph; ``runtime bench`` one per batch size.

Memory, per provider: ``CpuMemory`` (numpy arrays; the host buffer is the device buffer, so there
is no copy: used by the tests, where the CPU provider runs this same code) and ``CudaMemory`` (the
device buffers on CUDA device ``device_id``; pinned host buffers from the execution provider's
host-accessible allocator when its OrtEpDevice is listed, else plain numpy memory, said once in
the log). A slot's buffers are allocated when the first batch of its size comes and freed by
``close`` (the backend's ``_free``).
"""

import ctypes
import logging
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

# The run option selecting a captured CUDA graph: ONNX Runtime's CUDA provider reads gpu_graph_id
# (onnxruntime_run_options_config_keys.h); the TensorRT for RTX plugin reads its own key,
# cuda_graph_annotation_id (tensorrt_rtx_provider_options.h, run_option_names).
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
        return self.host(shape, dtype)  # the session writes the host array itself


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
                value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, memory_info=info)
                return value, _view(value, shape, dtype)
            except Exception as err:  # noqa: BLE001 - onnxruntime's own types: no such allocator in this build
                self.pinned = False
                log.info("no pinned host memory from %s (%s): host buffers are pageable",
                         getattr(self.ep_device, "ep_name", "the provider"), str(err).splitlines()[0][:160])
        array = np.zeros(shape, dtype)
        return ort.OrtValue.ortvalue_from_numpy(array), array

    def device(self, shape, dtype, host_value):
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, "cuda", self.device_id)

    def output(self, shape, dtype):
        return self.device(shape, dtype, None), None  # read back with OrtValue.numpy()


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
    host_out: object     # the output's host array when the session writes there (the CPU), else None
    device_out: object
    graph_id: int


class BoundFeed:
    max_slots = 2   # without graphs: buffers for the last two batch sizes (a run's batch and its tail)
    """Runs ``session`` through IO binding with reused buffers (see the module docstring).

    ``input_name``/``output_name``: the graph's input and the output read back; ``item_shape``:
    one image's input shape (4, S, S); ``input_dtype``: uint8 (model.json version 3) or float32;
    ``classes``: the output's width; ``fixed``: CUDA graphs are on (fixed shapes and addresses);
    ``graph_key``: the provider's run option naming the graph to capture or replay."""

    def __init__(self, session, memory, input_name, output_name, item_shape, input_dtype, classes, fixed=False,
                 graph_key=GRAPH_ID_KEY):
        self.session = session
        self.memory = memory
        self.input_name, self.output_name = input_name, output_name
        self.item_shape = tuple(item_shape)
        self.input_dtype = np.dtype(input_dtype)
        self.classes = classes
        self.fixed = fixed
        self.graph_key = graph_key
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
        device_out, host_out = self.memory.output((rows, self.classes), np.float32)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, device_in)   # bound once: a captured graph replays
        binding.bind_ortvalue_output(self.output_name, device_out)  # these addresses
        self.graphs += 1  # graph id 0 is ONNX Runtime's default annotation; ours start at 1
        slot = _Slot(rows, binding, host_in, host_in_value, device_in, host_out, device_out,
                     graph_id=self.graphs)
        self.slots.append(slot)
        return slot

    def run(self, batch):
        """(N, classes) float32 outputs of ``batch`` (N rows of ``item_shape``, ``input_dtype``)."""
        n = len(batch)
        slot = self._slot(n)
        slot.host_in[:n] = batch
        if slot.device_in is not slot.host_in_value:
            slot.device_in.update_inplace(slot.host_in)  # the one host-to-device copy
        options = None
        if self.fixed:
            options = ort.RunOptions()
            options.add_run_config_entry(self.graph_key, str(slot.graph_id))
        self.session.run_with_iobinding(slot.binding, options)
        if slot.host_out is not None:
            return slot.host_out[:n].copy()
        return slot.device_out.numpy()[:n]  # the one device-to-host copy

    def close(self):
        """Release the buffers and bindings (the device memory goes with its OrtValues)."""
        for slot in self.slots:
            slot.binding.clear_binding_inputs()
            slot.binding.clear_binding_outputs()
        self.slots.clear()
