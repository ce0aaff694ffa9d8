"""The ONNX Runtime feed through IO binding (runtime/backends/ort_feed.py) and the CUDA provider
options: the buffer logic runs for real on the CPU provider (the same class a GPU runs) and is
compared with ``session.run``; the CUDA-only parts (pinned memory, device copies, CUDA graphs) run
against fakes of the onnxruntime calls they make, whose names are checked against the installed
onnxruntime."""

import ctypes
import inspect
import json
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest

from runtime.__main__ import main as runtime_main
from runtime.backends import make_backend
from runtime.backends import ort_feed
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, cuda_provider_options, cuda_settings
from runtime.backends.ort_feed import GRAPH_ID_KEY, BoundFeed, CpuMemory, CudaMemory, EpMemory
from runtime.bench import bench
from runtime.infer import run_settings
from runtime.reader import ImageFolder
from runtime.model_spec import INPUT_NAME, PROBS


@pytest.fixture
def spec(tiny_deploy):
    return tiny_deploy[1]


def batches(size, counts, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (n, 4, size, size), dtype=np.uint8) for n in counts]


def test_bound_cpu_backend_matches_session_run(spec):
    """The backend through the feed (io_binding on the CPU provider) gives session.run's results for
    batches of changing size, keeping buffers for two sizes only (a run's batch and its tail)."""
    f = spec.find("ensemble", "fp32")
    size = spec.preprocess.size
    with OnnxRuntimeBackend(spec, f, "cpu", io_binding=True) as bound, OnnxRuntimeBackend(spec, f, "cpu") as plain:
        assert bound.feed is not None and plain.feed is None
        for x in batches(size, (5, 3, 5, 7, 2, 1)):
            np.testing.assert_allclose(bound.infer(x), plain.infer(x), rtol=0, atol=1e-6)
        assert [s.capacity for s in bound.feed.slots] == [2, 1]
    assert bound.feed is None  # freed on exit


class GraphIds:
    """A session wrapper recording the gpu_graph_id of each run (what selects a captured graph)."""

    def __init__(self, session):
        self.session, self.ids = session, []

    def io_binding(self):
        return self.session.io_binding()

    def run_with_iobinding(self, binding, options=None):
        self.ids.append(options.get_run_config_entry(GRAPH_ID_KEY) if options else None)
        return self.session.run_with_iobinding(binding, options)


def test_fixed_slots_pad_the_tail_and_trim_its_results(spec):
    """CUDA graphs' fixed mode, on the CPU provider: a batch runs padded in the smallest slot that
    holds it (the tail rows hold the slot's previous batch) and only its own rows come back; a
    larger batch gets a slot, and a graph id, of its own."""
    f = spec.find("ensemble", "fp32")
    size = spec.preprocess.size
    with OnnxRuntimeBackend(spec, f, "cpu") as plain:
        session = GraphIds(plain.session)
        feed = BoundFeed(session, CpuMemory(), INPUT_NAME, PROBS, (4, size, size), np.uint8, 28, fixed=True)
        for x in batches(size, (6, 2, 6, 9, 4)):
            out = feed.run(x)
            assert out.shape == (len(x), 28)
            np.testing.assert_allclose(out, plain.infer(x), rtol=0, atol=1e-6)
        assert [s.capacity for s in feed.slots] == [6, 9]
        assert session.ids == ["1", "1", "1", "2", "1"]
        feed.close()
        assert feed.slots == []


class FakeValue:
    """onnxruntime.OrtValue as the feed uses it: memory at a fixed address, update_inplace copies."""

    made = []

    def __init__(self, shape, dtype, where):
        self.array, self.where = np.zeros(shape, dtype), where
        self.copies = 0
        FakeValue.made.append(self)

    @classmethod
    def ortvalue_from_shape_and_type(cls, shape, dtype, device_type="cpu", device_id=0, memory_info=None):
        return cls(shape, dtype, memory_info or (device_type, device_id))

    @classmethod
    def ortvalue_from_numpy(cls, array):
        value = cls(array.shape, array.dtype, ("cpu", 0))
        value.array = array
        return value

    def data_ptr(self):
        return self.array.ctypes.data

    def update_inplace(self, array):
        self.copies += 1
        self.array[...] = array

    def numpy(self):
        self.copies += 1
        return self.array.copy()


class FakeEpDevice:
    ep_name = "CUDAExecutionProvider"

    def memory_info(self, kind):
        return f"{self.ep_name}:{kind.name}"


class FakeSession:
    """A session whose 'graph' sums each image; binds and runs as onnxruntime's IO binding does."""

    def __init__(self):
        self.runs, self.events = [], []

    def io_binding(self):
        return SimpleNamespace(bind_ortvalue_input=lambda name, v: setattr(self, "input", v),
                               bind_ortvalue_output=lambda name, v: setattr(self, "output", v),
                               clear_binding_inputs=lambda: None, clear_binding_outputs=lambda: None,
                               synchronize_outputs=lambda: self.events.append("sync"))

    def run_with_iobinding(self, binding, options=None):
        self.events.append("run")
        self.runs.append(options.get_run_config_entry(GRAPH_ID_KEY) if options else None)
        x = self.input.array.reshape(len(self.input.array), -1).astype(np.float32)
        self.output.array[...] = x.sum(1, keepdims=True) + np.arange(self.output.array.shape[1])


def test_cuda_memory_uses_pinned_host_buffers_and_one_copy_each_way(monkeypatch):
    """On CUDA: host buffers from the provider's host-accessible (pinned) memory, device buffers from
    its device memory, one host-to-device and one device-to-host copy per batch into reused
    buffers, graph ids per slot under CUDA graphs."""
    fake_ort = SimpleNamespace(OrtValue=FakeValue, OrtDeviceMemoryType=onnxruntime.OrtDeviceMemoryType,
                               RunOptions=onnxruntime.RunOptions)
    monkeypatch.setattr(ort_feed, "ort", fake_ort)
    monkeypatch.setattr(ort_feed, "_view", lambda value, shape, dtype: value.array)
    FakeValue.made = []
    memory = CudaMemory(0, FakeEpDevice())
    read = memory.download
    monkeypatch.setattr(memory, "download", lambda *a: (session.events.append("read"), read(*a))[1])
    assert memory.pinned
    session = FakeSession()
    feed = BoundFeed(session, memory, INPUT_NAME, PROBS, (4, 2, 2), np.uint8, 3, fixed=True)
    x = np.arange(5 * 16, dtype=np.uint8).reshape(5, 4, 2, 2)
    expected = x.reshape(5, -1).astype(np.float32).sum(1, keepdims=True) + np.arange(3)
    np.testing.assert_array_equal(feed.run(x), expected)
    np.testing.assert_array_equal(feed.run(x[:2]), expected[:2])   # padded into the 5-row slot
    slot = feed.slots[0]
    assert [v.where for v in FakeValue.made] == ["CUDAExecutionProvider:HOST_ACCESSIBLE", ("cuda", 0), ("cuda", 0)]
    assert (slot.device_in.copies, slot.device_out.copies) == (2, 2)  # pinned input, device input and output
    assert slot.host_in.ctypes.data == slot.host_in_value.data_ptr()   # the batch is written into pinned memory
    assert session.runs == ["1", "1"] and session.events == ["run", "sync", "read"] * 2
    out = feed.run(x[:2])
    out[:] = -1  # the caller's copy: the feed's buffer is not handed out
    assert slot.device_out.array[0, 0] != -1


def test_cuda_memory_without_pinned_memory_falls_back_to_pageable(monkeypatch):
    """No OrtEpDevice, or one whose host-accessible allocator this build lacks: pageable buffers."""
    monkeypatch.setattr(ort_feed, "ort", SimpleNamespace(OrtValue=FakeValue,
                                                         OrtDeviceMemoryType=onnxruntime.OrtDeviceMemoryType))
    FakeValue.made = []
    memory = CudaMemory(1, None)
    assert not memory.pinned
    host, array = memory.host((2, 3), np.float32)
    device = memory.device((2, 3), np.float32, host)
    assert isinstance(array, np.ndarray) and device.where == ("cuda", 1)

    class NoAllocator(FakeEpDevice):
        def memory_info(self, kind):
            raise RuntimeError("no allocator for HOST_ACCESSIBLE")

    class NotListed(FakeEpDevice):
        def memory_info(self, kind):
            return None  # memory_info=None would give plain CPU memory under the name of pinned

    class Silent(FakeEpDevice):
        def memory_info(self, kind):
            raise RuntimeError()  # no message: still one log line, no IndexError
    for device in (NoAllocator(), NotListed(), Silent()):
        memory = CudaMemory(0, device)
        host, array = memory.host((2, 3), np.uint8)
        assert not memory.pinned and host.array is array


class PluginValue(FakeValue):
    """OrtValue as onnxruntime-gpu makes it beside a plugin provider: a 'cuda' value needs the CUDA
    provider's library (which the TensorRT for RTX install does not bring: 'CUDA Provider not
    available'), and so do update_inplace and numpy() on a device value; a value from an
    OrtEpDevice's memory info comes from the plugin's own allocator."""

    @classmethod
    def ortvalue_from_shape_and_type(cls, shape, dtype, device_type="cpu", device_id=0, memory_info=None):
        if device_type == "cuda":
            raise RuntimeError("provider_bridge_ort.cc:2465 GetProviderInfo_CUDA() CUDA Provider not available")
        return super().ortvalue_from_shape_and_type(shape, dtype, device_type, device_id, memory_info)

    def update_inplace(self, array):
        raise RuntimeError("CUDA Provider not available")

    def numpy(self):
        raise RuntimeError("CUDA Provider not available")


class PluginDevice:
    """An OrtEpDevice of a plugin on its second GPU (what the backend's gpu=1 selects)."""

    ep_name = "NvTensorRTRTXExecutionProvider"

    def __init__(self, host_accessible=True):
        self.host_accessible = host_accessible

    def memory_info(self, kind):
        if kind.name == "HOST_ACCESSIBLE" and not self.host_accessible:
            return None
        return f"gpu1:{kind.name}"


def plugin_ort(copies):
    def copy_tensors(src, dst, stream=None):
        for s, d in zip(src, dst):
            copies.append((s.where, d.where))
            d.array[...] = s.array
    return SimpleNamespace(OrtValue=PluginValue, OrtDeviceMemoryType=onnxruntime.OrtDeviceMemoryType,
                           RunOptions=onnxruntime.RunOptions, copy_tensors=copy_tensors)


@pytest.mark.parametrize("host_accessible", [True, False])
def test_plugin_memory_allocates_and_copies_through_the_plugins_device(monkeypatch, host_accessible):
    """A plugin provider's feed (TensorRT for RTX): every buffer from its OrtEpDevice's allocators
    (device memory on the GPU it was selected for, pinned host memory where listed), every copy
    through onnxruntime.copy_tensors; no 'cuda' OrtValue, whose allocation needs the CUDA provider's
    library and would sit on CUDA device 'gpu' whatever device the plugin listed at that index."""
    copies = []
    monkeypatch.setattr(ort_feed, "ort", plugin_ort(copies))
    monkeypatch.setattr(ort_feed, "_view", lambda value, shape, dtype: value.array)
    FakeValue.made = []
    memory = EpMemory(PluginDevice(host_accessible))
    assert memory.pinned is host_accessible
    session = FakeSession()
    feed = BoundFeed(session, memory, INPUT_NAME, PROBS, (4, 2, 2), np.uint8, 3, fixed=True,
                     graph_keys=(GRAPH_ID_KEY, "cuda_graph_annotation_id"))
    x = np.arange(5 * 16, dtype=np.uint8).reshape(5, 4, 2, 2)
    expected = x.reshape(5, -1).astype(np.float32).sum(1, keepdims=True) + np.arange(3)
    np.testing.assert_array_equal(feed.run(x), expected)
    np.testing.assert_array_equal(feed.run(x[:2]), expected[:2])  # padded into the 5-row slot
    host = "gpu1:HOST_ACCESSIBLE" if host_accessible else ("cpu", 0)
    assert [v.where for v in FakeValue.made] == [host, "gpu1:DEFAULT", host, "gpu1:DEFAULT"]  # in, out
    assert copies == [(host, "gpu1:DEFAULT"), ("gpu1:DEFAULT", host)] * 2  # one copy each way per batch
    assert session.events == ["run", "sync"] * 2  # outputs synchronised before they are read
    assert session.runs == ["1", "1"]
    out = feed.run(x[:2])
    out[:] = -1  # the caller's copy
    assert feed.slots[0].host_out[0, 0] != -1
    feed.close()
    assert feed.slots == []


def test_plugin_memory_on_an_onnxruntime_without_memory_info(monkeypatch):
    """onnxruntime 1.26 (requirements-tensorrt-rtx-cu12.txt) has no memory_info argument: device
    buffers by the device memory's vendor and device id, which key the plugin's shared allocator."""
    class OldValue(PluginValue):
        @classmethod
        def ortvalue_from_shape_and_type(cls, shape, dtype, device_type="cpu", device_id=0, vendor_id=-1):
            return cls(shape, dtype, (device_type, device_id, vendor_id))

    class Info:
        device_id, device_vendor_id = 1, 0x10DE

    fake = plugin_ort([])
    fake.OrtValue = OldValue
    monkeypatch.setattr(ort_feed, "ort", fake)
    device = PluginDevice()
    device.memory_info = lambda kind: Info()
    memory = EpMemory(device)
    assert not memory.pinned
    assert memory.device((2, 3), np.uint8, None).where == ("gpu", 1, 0x10DE)


def test_plugin_memory_without_device_memory_is_one_line(monkeypatch):
    monkeypatch.setattr(ort_feed, "ort", plugin_ort([]))

    class NoMemory(PluginDevice):
        def memory_info(self, kind):
            return None
    with pytest.raises(ValueError, match="^NvTensorRTRTXExecutionProvider lists no device memory for its device"):
        EpMemory(NoMemory())


def test_every_graph_key_names_the_slots_graph(monkeypatch):
    """Under CUDA graphs each run carries gpu_graph_id (what ONNX Runtime's session reads to replay
    a captured graph, for the CUDA provider and plugin providers alike) and any key of the
    provider's own, all set to the slot's id."""
    monkeypatch.setattr(ort_feed, "ort", SimpleNamespace(OrtValue=FakeValue, RunOptions=onnxruntime.RunOptions))
    session = FakeSession()
    seen = []
    run = session.run_with_iobinding

    def record(binding, options=None):
        seen.append((options.get_run_config_entry(GRAPH_ID_KEY), options.get_run_config_entry("own_key")))
        return run(binding, options)
    session.run_with_iobinding = record
    feed = BoundFeed(session, CudaMemory(0, None), INPUT_NAME, PROBS, (4, 2, 2), np.uint8, 3, fixed=True,
                     graph_keys=(GRAPH_ID_KEY, "own_key"))
    for n in (4, 2, 6):
        feed.run(np.zeros((n, 4, 2, 2), np.uint8))
    assert seen == [("1", "1"), ("1", "1"), ("2", "2")]


def test_the_onnxruntime_calls_the_feed_makes_exist():
    """The fakes above stand for these onnxruntime names; a rename upstream fails here."""
    assert {"bind_ortvalue_input", "bind_ortvalue_output", "clear_binding_inputs",
            "clear_binding_outputs", "synchronize_outputs"} <= set(dir(onnxruntime.IOBinding))
    assert "memory_info" in inspect.signature(onnxruntime.OrtValue.ortvalue_from_shape_and_type).parameters
    assert {"update_inplace", "data_ptr", "numpy"} <= set(dir(onnxruntime.OrtValue))
    assert "stream" in inspect.signature(onnxruntime.copy_tensors).parameters  # EpMemory's copies
    assert {"device_id", "device_vendor_id"} <= set(dir(onnxruntime.OrtMemoryInfo))  # its fallback allocation
    assert {"DEFAULT", "HOST_ACCESSIBLE"} <= set(onnxruntime.OrtDeviceMemoryType.__members__)
    assert "memory_info" in dir(onnxruntime.OrtEpDevice) and hasattr(onnxruntime, "get_ep_devices")
    assert hasattr(onnxruntime.InferenceSession, "run_with_iobinding")
    options = onnxruntime.RunOptions()
    options.add_run_config_entry(GRAPH_ID_KEY, "3")
    assert options.get_run_config_entry(GRAPH_ID_KEY) == "3"


def test_view_writes_into_the_values_memory():
    array = np.zeros((2, 3), np.float32)
    value = onnxruntime.OrtValue.ortvalue_from_numpy(array)
    ort_feed._view(value, (2, 3), np.float32)[1, 2] = 7
    assert array[1, 2] == 7 and ctypes.sizeof(ctypes.c_float) == 4


def test_cuda_provider_options_follow_the_backend_options(spec):
    assert cuda_provider_options(cuda_settings()) == {
        "use_tf32": "0", "enable_cuda_graph": "0", "prefer_nhwc": "0", "cudnn_conv_algo_search": "EXHAUSTIVE",
        "cudnn_conv_use_max_workspace": "1"}
    backend = make_backend(spec, "onnxruntime-cuda", precision="fp16", cuda_graph="1", prefer_nhwc="on",
                           conv_algo="heuristic", conv_workspace="default")
    options = dict(backend._providers())["CUDAExecutionProvider"]
    assert (options["enable_cuda_graph"], options["prefer_nhwc"], options["cudnn_conv_algo_search"],
            options["cudnn_conv_use_max_workspace"]) == ("1", "1", "HEURISTIC", "0")
    assert backend.settings == {"cuda_graph": True, "prefer_nhwc": True, "conv_algo": "heuristic",
                                "conv_workspace": "default"}
    assert "cuda_graph=1, prefer_nhwc=1" in backend.description
    with pytest.raises(ValueError, match=r"conv_algo='fastest': valid: exhaustive, heuristic, default"):
        make_backend(spec, "onnxruntime-cuda", conv_algo="fastest")
    with pytest.raises(ValueError, match="cuda_graph=1 needs io_binding"):
        make_backend(spec, "onnxruntime-cuda", cuda_graph="1", io_binding="0")
    with pytest.raises(ValueError, match="takes no option 'engine_cache'"):
        make_backend(spec, "onnxruntime-cuda", engine_cache="x")
    assert make_backend(spec, "onnxruntime", device="cpu", cuda_graph="1").settings == {}  # no effect on a CPU


def test_infer_takes_backend_options_and_records_them_only_where_they_act(tiny_deploy, tiny_data, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["infer", "--model", str(tiny_deploy[0]), "--images", str(tiny_data / "test"), "--out", str(out),
            "--backend", "onnxruntime", "--workers", "0"]
    assert runtime_main([*args, "--backend-option", "prefer_nhwc=1"]) == 0
    assert "backend_options" not in json.loads((out / "summary.json").read_text())["settings"]  # CPU: no CUDA options
    cuda = make_backend(tiny_deploy[1], "onnxruntime-cuda", precision="fp16", cuda_graph="1")
    settings = run_settings(cuda, ImageFolder(tiny_data / "test"), 1, [0.5] * 28, 8)
    assert settings["backend_options"]["cuda_graph"] is True and settings["backend"] == "onnxruntime-cuda-cuda"
    assert runtime_main([*args, "--backend-option", "bogus=1"]) == 2
    assert "takes no option 'bogus'" in capsys.readouterr().err
    assert runtime_main([*args, "--backend-option", "cuda_graph"]) == 2
    assert "give KEY=VALUE" in capsys.readouterr().err


def test_bench_items_take_their_own_options(tiny_deploy):
    rows = bench(str(tiny_deploy[0]), "onnxruntime:fp32,onnxruntime:fp32+io_binding=1", [3], seconds=0.05)
    assert len(rows) == 2 and all(r["images_per_s"] > 0 for r in rows)
    with pytest.raises(ValueError, match="--backend-option cuda_graf: none of onnxruntime takes it"):
        bench(str(tiny_deploy[0]), "onnxruntime:fp32", [3], seconds=0.05, options={"cuda_graf": "1"})
    with pytest.raises(ValueError, match=r"^--backend item 'torch\+cuda_graph=1': torch takes no option 'cuda_graph' "
                                         r"\(it takes: channels_last\)$"):
        bench(str(tiny_deploy[0]), "torch+cuda_graph=1", [3], seconds=0.05)


def test_a_graph_capture_onnxruntime_refuses_blames_the_option_not_the_file(spec, monkeypatch):
    from runtime.backends import BackendUnavailable, onnxruntime_backend
    from runtime.errors import DataError

    def refuse(path, providers, threads, data):
        raise DataError(path, "ONNX Runtime cannot load it (graph capture needs every node on the CUDA EP)")
    monkeypatch.setattr(onnxruntime_backend, "gpu_session", refuse)
    with pytest.raises(BackendUnavailable, match=r"cuda_graph=1 is not possible for ensemble.fp16.onnx: .*run without"):
        make_backend(spec, "onnxruntime-cuda", precision="fp16", cuda_graph="1").__enter__()
    with pytest.raises(DataError):  # without the option it is the file's error, as before
        make_backend(spec, "onnxruntime-cuda", precision="fp16").__enter__()
