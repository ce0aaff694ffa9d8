"""onnxruntime-tensorrt-rtx: what a machine without a GPU can check. Registration of the plugin and
its failure line (with the real plugin where it is installed: here it cannot load without
libcuda.so.1), the one-line reasons (package, driver, compute capability), device selection with
fakes of ONNX Runtime's OrtEpDevice, its options and runtime-cache folder, and the check that the
provider runs the whole graph (on a real CPU session)."""

import importlib.util
import sys
from types import SimpleNamespace

import onnxruntime
import pytest

import runtime.errors
import runtime.gpu_info
import runtime.onnx_session
from runtime.backends import BackendUnavailable, make_backend
from runtime.backends import onnxruntime_rtx as rtx
from runtime.gpu_info import GpuInfo, NoGpu
from runtime.onnx_session import ProviderUnavailable, assigned_elsewhere, plugin_session

GPU = onnxruntime.OrtHardwareDeviceType.GPU
LIBCUDA = ("[ONNXRuntimeError] : 1 : FAIL : Failed to load library /x/libonnxruntime_providers_nv_tensorrt_rtx.so "
           "with error: libcuda.so.1: cannot open shared object file: No such file or directory")


@pytest.fixture
def spec(tiny_deploy):
    return tiny_deploy[1]


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.setattr(rtx, "_registered", set())


def gpu(name="NVIDIA GeForce RTX 4090", cc="8.9"):
    return GpuInfo(name=name, compute_capability=cc, driver_cuda="13.0", driver="580.95", devices=1)


class FakePackage:
    def get_ep_name(self):
        return rtx.EP_NAME

    def get_library_path(self):
        return "/site-packages/onnxruntime_ep_nv_tensorrt_rtx/libonnxruntime_providers_nv_tensorrt_rtx.so"


class FakeOrt:
    def __init__(self, error=None):
        self.calls, self.error = [], error

    def register_execution_provider_library(self, name, path):
        self.calls.append((name, path))
        if self.error:
            raise RuntimeError(self.error)


def test_the_plugin_is_registered_once_per_process():
    ort = FakeOrt()
    assert rtx.register_plugin(FakePackage(), ort) == "NvTensorRTRTXExecutionProvider"
    assert rtx.register_plugin(FakePackage(), ort) == "NvTensorRTRTXExecutionProvider"
    assert ort.calls == [(rtx.EP_NAME, FakePackage().get_library_path())]
    assert rtx.register_plugin(SimpleNamespace(get_ep_name=lambda: "X", get_library_path=lambda: "/other.so"),
                               FakeOrt("EP library already registered")) == "X"  # by someone else: fine


def test_a_plugin_that_cannot_load_is_one_line_naming_the_loaders_reason():
    ort = FakeOrt(LIBCUDA)
    with pytest.raises(BackendUnavailable) as err:
        rtx.register_plugin(FakePackage(), ort)
    assert str(err.value) == ("onnxruntime-tensorrt-rtx: the TensorRT for RTX plugin cannot load (libcuda.so.1: cannot "
                              "open shared object file: No such file or directory); it needs an NVIDIA driver and GPU, "
                              "docs/gpu.md")
    with pytest.raises(BackendUnavailable):  # not marked registered: tried again next time
        rtx.register_plugin(FakePackage(), ort)
    assert len(ort.calls) == 2


@pytest.mark.skipif(importlib.util.find_spec(rtx.PACKAGE) is None,
                    reason="the TensorRT for RTX plugin is not installed")
@pytest.mark.skipif(runtime.onnx_session.gpu_present(), reason="a GPU is present: registration succeeds there")
def test_the_real_plugin_without_a_driver_fails_with_that_line():
    """The installed plugin, really registered with this onnxruntime: without a driver its library
    cannot load libcuda.so.1, and the line says so."""
    with pytest.raises(BackendUnavailable, match=r"plugin cannot load \(libcuda\.so\.1: cannot open shared object"):
        rtx.register_plugin(rtx.plugin_package())


def test_a_missing_package_names_the_install(monkeypatch):
    monkeypatch.setattr(rtx, "PACKAGE", "no_such_plugin_package")
    with pytest.raises(BackendUnavailable, match=r"plugin is not installed \(pip install -r "
                                                 r"requirements-tensorrt-rtx-cu13\.txt, or -cu12\.txt"):
        rtx.plugin_package()


# The plugin 0.5.0's own list (its tensorrt_rtx_provider_options.h): 8.6, 8.9 and 12.0 or newer; not 7.5
@pytest.mark.parametrize("cc, ok", [("8.6", True), ("8.9", True), ("12.0", True), ("12.1", True), ("13.0", True),
                                    ("7.5", False), ("8.0", False), ("8.7", False), ("9.0", False), ("10.0", False),
                                    ("11.0", False), ("6.1", False), ("unknown", False)])
def test_compute_capability_is_checked_against_the_support_matrix(monkeypatch, cc, ok):
    monkeypatch.setattr(runtime.gpu_info, "gpu_info", lambda: gpu("NVIDIA H200" if cc == "9.0" else "GPU", cc))
    if ok:
        assert rtx.check_gpu().compute_capability == cc
        return
    with pytest.raises(BackendUnavailable) as err:
        rtx.check_gpu()
    assert f"has compute capability {cc}; TensorRT for RTX (the onnxruntime-ep-nv-tensorrt-rtx plugin) supports " \
           "8.6, 8.9, 12.0 or newer" in str(err.value)
    assert "\n" not in str(err.value)
    assert rtx.check_gpu(capability=False).compute_capability == cc  # gpu=N: the plugin's list decides


def test_no_driver_or_gpu_is_one_line(monkeypatch):
    def no_gpu():
        raise NoGpu("no NVIDIA driver library (libcuda.so.1 cannot be loaded)")
    monkeypatch.setattr(runtime.gpu_info, "gpu_info", no_gpu)
    with pytest.raises(BackendUnavailable, match=r"^onnxruntime-tensorrt-rtx: no NVIDIA driver library \(libcuda"):
        rtx.check_gpu()


def ep_device(name, kind=GPU, tag="", memory=True):
    """An OrtEpDevice: its provider, hardware device and the memory infos of its allocators."""
    return SimpleNamespace(ep_name=name, device=SimpleNamespace(type=kind), tag=tag,
                           memory_info=lambda kind: f"{tag}:{kind.name}" if memory else None)


def test_device_selection_takes_the_plugins_gpus_in_order():
    devices = [ep_device("CPUExecutionProvider", onnxruntime.OrtHardwareDeviceType.CPU),
               ep_device(rtx.EP_NAME, tag="gpu0"), ep_device("CUDAExecutionProvider", tag="cuda0"),
               ep_device(rtx.EP_NAME, tag="gpu1")]
    assert rtx.select_device(devices, rtx.EP_NAME).tag == "gpu0"
    assert rtx.select_device(devices, rtx.EP_NAME, 1).tag == "gpu1"
    with pytest.raises(BackendUnavailable, match=r"gpu=2, but NvTensorRTRTXExecutionProvider lists 2 GPU\(s\) "
                                                 r"\(0..1\)"):
        rtx.select_device(devices, rtx.EP_NAME, 2)
    with pytest.raises(BackendUnavailable, match="lists no GPU here .*devices for: CPUExecutionProvider, "
                                                 "CUDAExecutionProvider"):
        rtx.select_device(devices[:1] + devices[2:3], rtx.EP_NAME)


def test_options_and_the_runtime_cache_folder(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fp16 = spec.find("ensemble", "fp16")
    backend = make_backend(spec, "onnxruntime-tensorrt-rtx", precision="fp16")
    assert backend.file is fp16 and backend.engine_cache == tmp_path / "cache" / "hpa-toolkit" / "tensorrt-rtx" / \
        fp16.sha256[:16]
    assert (backend.max_batch, backend.gpu, backend.settings) == (64, 0, {"cuda_graph": False})
    other = make_backend(spec, "onnxruntime-tensorrt-rtx", engine_cache=str(tmp_path / "mine"), max_batch="16",
                         gpu="1", cuda_graph="1")
    assert (other.engine_cache, other.max_batch, other.gpu, other.file.precision) == (tmp_path / "mine", 16, 1, "fp32")
    assert other.settings == {"cuda_graph": True} and "cuda_graph=1" in other.description
    options = rtx.rtx_provider_options(48, 16, tmp_path / "mine", True)
    assert options == {"nv_runtime_cache_path": str(tmp_path / "mine"), "enable_cuda_graph": "1",
                       "nv_profile_min_shapes": "image:1x4x48x48", "nv_profile_opt_shapes": "image:16x4x48x48",
                       "nv_profile_max_shapes": "image:16x4x48x48"}
    with pytest.raises(ValueError, match="takes no option 'prefer_nhwc'.*engine_cache, max_batch, cuda_graph, gpu"):
        make_backend(spec, "onnxruntime-tensorrt-rtx", prefer_nhwc="1")
    with pytest.raises(ValueError, match="onnxruntime-tensorrt-rtx has no INT8 convolutions"):
        make_backend(spec, "onnxruntime-tensorrt-rtx", precision="int8")


def test_load_registers_selects_and_keeps_the_cache(spec, tmp_path, monkeypatch):
    """_load with fakes for the plugin, the GPU and the session: the chosen device and the provider
    options reach the session, the cache folder is made, and the feed gets the plugin's device."""
    chosen = ep_device(rtx.EP_NAME, tag="gpu1")
    devices = [ep_device(rtx.EP_NAME, tag="gpu0"), chosen]
    ort = FakeOrt()
    monkeypatch.setattr(rtx, "plugin_package", FakePackage)
    monkeypatch.setattr(runtime.gpu_info, "gpu_info", lambda: gpu())
    monkeypatch.setattr(onnxruntime, "register_execution_provider_library", ort.register_execution_provider_library)
    monkeypatch.setattr(onnxruntime, "get_ep_devices", lambda: devices)
    made = {}

    def session(path, ep_devices, options, wanted, threads, data):
        made.update(devices=ep_devices, options=options, wanted=wanted)
        return runtime.onnx_session.make_session(path, "cpu", threads, data)
    monkeypatch.setattr(runtime.onnx_session, "plugin_session", session)
    cache = tmp_path / "rtx-cache"
    backend = make_backend(spec, "onnxruntime-tensorrt-rtx", precision="fp16", engine_cache=str(cache), gpu="1")
    with backend:
        assert made["devices"] == [chosen] and made["wanted"] == rtx.EP_NAME
        assert made["options"]["nv_runtime_cache_path"] == str(cache) and cache.is_dir()
        memory = backend.feed.memory
        assert memory.ep_device is chosen and memory.pinned  # the plugin's own allocators, on its gpu1
        assert (memory.device_info, memory.host_info) == ("gpu1:DEFAULT", "gpu1:HOST_ACCESSIBLE")
    assert backend.feed is None and backend.ep_device is None
    assert ort.calls == [(rtx.EP_NAME, FakePackage().get_library_path())]
    monkeypatch.setattr(runtime.gpu_info, "gpu_info", lambda: gpu("NVIDIA H100", "9.0"))
    with make_backend(spec, "onnxruntime-tensorrt-rtx", precision="fp16", engine_cache=str(cache), gpu="1") as mixed:
        assert mixed.ep_device is chosen  # an H100 at 0 does not refuse the RTX card the plugin lists at 1
    with pytest.raises(BackendUnavailable, match="NVIDIA H100 has compute capability 9.0"):
        make_backend(spec, "onnxruntime-tensorrt-rtx", precision="fp16", engine_cache=str(cache)).__enter__()
    monkeypatch.setattr(runtime.gpu_info, "gpu_info", lambda: gpu())

    def refuse(path, ep_devices, options, wanted, threads, data):
        raise runtime.errors.DataError(path, f"{wanted} cannot load it (graph capture needs every node on the EP)")
    monkeypatch.setattr(runtime.onnx_session, "plugin_session", refuse)
    with pytest.raises(BackendUnavailable, match=r"cuda_graph=1 is not possible for ensemble.fp16.onnx: .*run without"):
        make_backend(spec, "onnxruntime-tensorrt-rtx", precision="fp16", engine_cache=str(cache),
                     cuda_graph="1").__enter__()
    with pytest.raises(runtime.errors.DataError):  # without the option it is the file's error
        make_backend(spec, "onnxruntime-tensorrt-rtx", precision="fp16", engine_cache=str(cache)).__enter__()
    monkeypatch.setattr(runtime.onnx_session, "plugin_session", session)
    devices[1] = ep_device(rtx.EP_NAME, tag="gpu1", memory=False)
    with pytest.raises(BackendUnavailable, match=r"^onnxruntime-tensorrt-rtx: NvTensorRTRTXExecutionProvider lists "
                                                 r"no device memory for its device"):
        make_backend(spec, "onnxruntime-tensorrt-rtx", precision="fp16", engine_cache=str(cache), gpu="1").__enter__()


def test_a_graph_the_provider_does_not_run_whole_is_refused(spec):
    """plugin_session with ONNX Runtime's real EP-device API (the CPU provider's device here): a
    session that is not on the wanted provider, or leaves compute nodes to another, is refused."""
    path = spec.find("ensemble", "fp32").path
    cpu = [d for d in onnxruntime.get_ep_devices() if d.ep_name == "CPUExecutionProvider"]
    session = plugin_session(path, cpu, {}, "CPUExecutionProvider")
    assert assigned_elsewhere(session, "CPUExecutionProvider") == {}
    elsewhere = assigned_elsewhere(session, rtx.EP_NAME)
    assert "Conv" in elsewhere["CPUExecutionProvider"]
    with pytest.raises(ProviderUnavailable, match=f"{rtx.EP_NAME} is not active"):
        plugin_session(path, cpu, {}, rtx.EP_NAME)


def test_cli_without_the_plugin_or_gpu_is_one_line(tiny_deploy, tiny_data, tmp_path, capsys):
    from runtime.__main__ import main

    code = main(["infer", "--model", str(tiny_deploy[0]), "--images", str(tiny_data / "test"),
                 "--out", str(tmp_path / "o"), "--backend", "onnxruntime-tensorrt-rtx", "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and "onnxruntime-tensorrt-rtx: " in err[-1] and "Traceback" not in "\n".join(err)
    assert sys.modules.get("tensorrt") is None


def test_the_speed_probe_runs_once_per_file_and_gpu(spec, tmp_path, monkeypatch):
    """auto's TensorRT-RTX/CUDA probe is cached (a failure too) per file, GPU, driver and versions."""
    monkeypatch.setenv("HPA_TOOLKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(rtx, "check_gpu", lambda: gpu())
    runs = []

    def measure(spec_, f, seconds, cuda_class, interleaved):
        runs.append(f.path.name)
        return {"ratio": 1.3} if f.precision == "fp16" else {"error": "onnxruntime-tensorrt-rtx: cannot build"}
    monkeypatch.setattr(rtx, "_measure", measure)
    fp16, fp32 = spec.find("ensemble", "fp16"), spec.find("ensemble", "fp32")
    assert rtx.measured_speedup(spec, fp16) == rtx.measured_speedup(spec, fp16) == 1.3
    for _ in range(2):
        with pytest.raises(BackendUnavailable, match="cannot build"):
            rtx.measured_speedup(spec, fp32)
    assert runs == ["ensemble.fp16.onnx", "ensemble.onnx"] and (tmp_path / rtx.PROBE_CACHE).is_file()
    monkeypatch.setattr(rtx, "check_gpu", lambda: gpu("NVIDIA RTX PRO 6000", "12.0"))
    rtx.measured_speedup(spec, fp16)
    assert len(runs) == 3  # another GPU: measured again


def test_the_install_the_messages_name_exists_and_matches_the_extras():
    """requirements-tensorrt-rtx-cu13/cu12.txt and pyproject's rtx-cu13/rtx-cu12 extras pin the same
    plugin wheels (binary: a runtime-only install needs no compiler)."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for cuda in ("cu13", "cu12"):
        assert f"requirements-tensorrt-rtx-{'cu13.txt' if cuda == 'cu13' else 'cu12.txt'}" in rtx.INSTALL.replace(
            "or -cu12.txt", "requirements-tensorrt-rtx-cu12.txt")
        pins = re.findall(rf"^(onnxruntime-ep-nv-tensorrt-rtx-{cuda}==[\d.]+)", (root / f"requirements-tensorrt-rtx-"
                                                                                  f"{cuda}.txt").read_text(), re.M)
        assert len(pins) == 1 and any(e.startswith(pins[0]) for e in extras[f"rtx-{cuda}"])
        assert f"onnxruntime-ep-nv-tensorrt-rtx-{cuda}" in rtx.DISTRIBUTIONS


def test_cuda_graphs_are_selected_with_onnxruntimes_key_and_the_plugins_own(spec, tmp_path):
    """ONNX Runtime's session reads gpu_graph_id to replay any provider's captured graph (plugin
    providers' too, since 1.26); the plugin names cuda_graph_annotation_id (its
    tensorrt_rtx_provider_options.h). The plugin's feed sets both: with its own key alone every
    batch size would replay graph 0, captured at the first size."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeCudaBackend

    backend = make_backend(spec, "onnxruntime-tensorrt-rtx", engine_cache=str(tmp_path), cuda_graph="1")
    assert backend.graph_keys == ("gpu_graph_id", "cuda_graph_annotation_id")
    assert OnnxRuntimeCudaBackend.graph_keys == ("gpu_graph_id",)
    header = importlib.util.find_spec(rtx.PACKAGE)
    if header is not None:  # the installed plugin's header says the same
        from pathlib import Path

        text = (Path(header.origin).parent / "tensorrt_rtx_provider_options.h").read_text()
        assert 'kCudaGraphAnnotation = "cuda_graph_annotation_id"' in text
        names = rtx.rtx_provider_options(48, 16, tmp_path, True)
        assert all(f'"{name}"' in text for name in names)  # every provider option the backend sets


def test_onnxruntime_errors_become_one_line():
    """onnxruntime's messages span lines (source path, stack); one without a message names its type."""
    from runtime.onnx_session import first_line

    err = RuntimeError("[ONNXRuntimeError] : 1 : FAIL : cannot load\n/onnxruntime_src/x.cc:12 stack\n#0 ...")
    assert first_line(err) == "[ONNXRuntimeError] : 1 : FAIL : cannot load"
    assert first_line(RuntimeError()) == "RuntimeError" and first_line(MemoryError("  ")) == "MemoryError"
    assert len(first_line(RuntimeError("x" * 500), 160)) == 160
