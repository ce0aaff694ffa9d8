"""TensorRT: the INT8 flavour's Q/DQ conformance, engine building and the TensorRT backend.

What a CPU can check runs everywhere; building and running engines needs TensorRT and a GPU and
skips cleanly without them."""

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from export.__main__ import main as export_main
from export.int8_tensorrt import QUANTIZED_OPS, check_tensorrt_qdq, qdq_problems
from runtime.backends import BackendUnavailable, make_backend
from runtime.backends.tensorrt_backend import expose_pip_cuda_runtime, pad_to
from runtime.errors import DataError
from runtime.model_spec import load_model_spec
from runtime.onnx_session import gpu_present

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and gpu_present()
needs_trt = pytest.mark.skipif(not HAVE_TRT, reason="needs TensorRT and an NVIDIA GPU")


def test_every_tensorrt_flavour_graph_follows_tensorrts_qdq_rules(tiny_deploy):
    deploy, spec = tiny_deploy
    graphs = [f for f in spec.files if f.precision == "int8" and f.target == "tensorrt"]
    assert {f.path.name for f in graphs} == {"fold0.int8-trt.onnx", "fold1.int8-trt.onnx", "ensemble.int8-trt.onnx"}
    for f in graphs:
        model = onnx.load(str(f.path))
        assert qdq_problems(model) == [], f.path.name
        ops = {n.op_type for n in model.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        # every weighted layer is fed by Q/DQ: TensorRT runs it in INT8
        producers = {o: n for n in model.graph.node for o in n.output}
        for node in (n for n in model.graph.node if n.op_type in QUANTIZED_OPS):
            assert all(producers[i].op_type == "DequantizeLinear" for i in node.input[:2]), node.name


def test_the_cpu_flavour_breaks_them_and_the_checker_says_how(tiny_deploy):
    # u8 activations with a zero-point: valid ONNX, refused by TensorRT
    problems = qdq_problems(onnx.load(str(tiny_deploy[0] / "fold0.int8-cpu-vnni.onnx")))
    assert any("UINT8" in p and "TensorRT needs INT8" in p for p in problems)


def _qdq_conv(bias_type=onnx.TensorProto.INT8, axis=0, zero=0):
    """x -> Q -> DQ -> Conv(W: DQ(int8, per channel), B: DQ(bias)) as TensorRT sees it."""
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.int8), "w_q")
    inits = [w, numpy_helper.from_array(np.array([0.1, 0.2], np.float32), "w_s"),
             numpy_helper.from_array(np.zeros(2, np.int8), "w_z"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_s"),
             numpy_helper.from_array(np.array(zero, np.int8), "x_z"),
             helper.make_tensor("b_q", bias_type, [2], [1, 2]),
             numpy_helper.from_array(np.array([0.1, 0.2], np.float32), "b_s")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], name="dq_w", axis=axis),
             helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["bd"], name="dq_b", axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["y"], name="conv")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_checker_finds_each_rule_broken():
    assert qdq_problems(_qdq_conv()) == []
    int32 = qdq_problems(_qdq_conv(bias_type=onnx.TensorProto.INT32))
    assert any("dq_b: input b_q is INT32" in p for p in int32)
    axis = qdq_problems(_qdq_conv(axis=1))
    assert any("dq_w: per-channel axis 1" in p and "output-channel axis 0" in p for p in axis)
    zero = qdq_problems(_qdq_conv(zero=3))
    assert any("q_x: zero-point is not 0" in p for p in zero)
    with pytest.raises(DataError, match=r"^m\.onnx: not a Q/DQ graph TensorRT accepts: .*INT32") as err:
        check_tensorrt_qdq(_qdq_conv(bias_type=onnx.TensorProto.INT32), "m.onnx")
    assert "\n" not in str(err.value)


def test_quantize_bias_left_on_is_what_the_checker_refuses(tiny_deploy, tmp_path):
    """The defect the TensorRT flavour fixes: onnxruntime's default QuantizeBias=True writes INT32
    DequantizeLinear, which TensorRT's parser rejects."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from export.precision import _Batches, probs_only

    src = tmp_path / "probs.onnx"
    onnx.save(probs_only(onnx.load(str(tiny_deploy[0] / "fold0.onnx"))), str(src))
    x = np.random.default_rng(0).integers(0, 256, (4, 4, 48, 48), dtype=np.uint8)
    quantize_static(str(src), str(tmp_path / "q.onnx"), _Batches(x), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    assert any("INT32" in p for p in qdq_problems(onnx.load(str(tmp_path / "q.onnx"))))


def test_small_batches_are_padded_to_the_profile_minimum():
    x = np.arange(2 * 4 * 2 * 2, dtype=np.float32).reshape(2, 4, 2, 2)
    padded = pad_to(x, 5)
    assert padded.shape == (5, 4, 2, 2)
    np.testing.assert_array_equal(padded[:2], x)
    np.testing.assert_array_equal(padded[2:], np.repeat(x[1:], 3, axis=0))
    assert pad_to(x, 1) is x


def test_polygraphy_finds_the_cuda_runtime_of_the_pip_wheels(tmp_path, monkeypatch):
    polygraphy_cuda = pytest.importorskip("polygraphy.cuda.cuda")
    from polygraphy import util

    lib = tmp_path / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcudart.so.13").write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/other")
    assert expose_pip_cuda_runtime([tmp_path]) == [str(lib)]
    assert expose_pip_cuda_runtime([tmp_path]) == []  # once is enough
    found = util.find_in_dirs("libcudart.so*", polygraphy_cuda._find_cuda_lib_dirs())
    assert found[0] == str(lib / "libcudart.so.13")


def test_polygraphy_gets_the_cuda_runtime_of_tensorrts_own_cuda_major(tmp_path, monkeypatch):
    """The CUDA 12 set installs beside torch's CUDA 13 wheels: both libcudart folders exist, and
    Polygraphy takes the first it finds; on the r525-r575 drivers that set is for, libcudart.so.13
    cannot start (cudaErrorInsufficientDriver), so only TensorRT's own CUDA major is named."""
    polygraphy_cuda = pytest.importorskip("polygraphy.cuda.cuda")
    from polygraphy import util

    from runtime.backends.tensorrt_backend import tensorrt_cuda_major

    for folder, name in ((("cu13",), "libcudart.so.13"), (("cuda_runtime",), "libcudart.so.12")):
        lib = tmp_path.joinpath("nvidia", *folder, "lib")
        lib.mkdir(parents=True)
        (lib / name).write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    cu12 = tmp_path / "nvidia" / "cuda_runtime" / "lib"
    assert expose_pip_cuda_runtime([tmp_path], cuda_major=12) == [str(cu12)]
    assert util.find_in_dirs("libcudart.so*", polygraphy_cuda._find_cuda_lib_dirs())[0] == str(cu12 / "libcudart.so.12")

    def installed(*names):
        def version(dist):
            if dist not in names:
                raise importlib.metadata.PackageNotFoundError(dist)
            return "10.16.1.11"
        return version

    assert tensorrt_cuda_major(installed("tensorrt-cu12-libs")) == 12
    assert tensorrt_cuda_major(installed("tensorrt-cu13-libs")) == 13
    assert tensorrt_cuda_major(installed()) is None  # a tarball or container TensorRT: both folders, as before
    assert tensorrt_cuda_major(installed("tensorrt-cu12-libs", "tensorrt-cu13-libs")) is None


def test_engine_build_refuses_bad_profiles_and_missing_tensorrt_in_one_line(tiny_deploy, tmp_path, capsys):
    onnx_path = str(tiny_deploy[0] / "ensemble.fp16.onnx")
    assert export_main(["tensorrt", "--onnx", onnx_path, "--out", str(tmp_path / "e.engine"), "--min-batch", "8",
                        "--opt-batch", "4"]) == 2
    assert "need 1 <= min (8) <= opt (4)" in capsys.readouterr().err
    if HAVE_TRT:
        return
    assert export_main(["tensorrt", "--onnx", onnx_path, "--out", str(tmp_path / "e.engine")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and ("TensorRT" in err or "tensorrt" in err or "GPU" in err) and "\n" not in err
    assert not (tmp_path / "e.engine").exists()


def test_timing_cache_from_another_gpu_is_replaced_not_ignored(tmp_path, caplog):
    from export.tensorrt_build import TimingCache

    class Config:
        """IBuilderConfig's timing-cache calls: a foreign cache is refused (set_timing_cache -> False)."""

        def __init__(self):
            self.attached = None

        def create_timing_cache(self, data):
            return {"data": data}

        def set_timing_cache(self, cache, ignore_mismatch):
            ok = cache["data"] != b"foreign"
            self.attached = cache if ok else self.attached
            return ok

    (tmp_path / "cache").write_bytes(b"foreign")
    config = Config()
    with caplog.at_level(logging.WARNING):
        TimingCache(tmp_path / "cache").attach(None, None, config)
    assert config.attached == {"data": b""} and "another GPU or TensorRT release" in caplog.text
    (tmp_path / "cache").write_bytes(b"ours")
    TimingCache(tmp_path / "cache").attach(None, None, config)
    assert config.attached == {"data": b"ours"}


def fake_engine(deploy, tmp_path, min_batch=1):
    """A copy of ``deploy`` listing an FP16 engine as `python -m export tensorrt` registers one
    (the bytes are not a real plan: enough for choosing, listing and Triton, not for running)."""
    from export.tensorrt_register import register_engine

    copy = tmp_path / "deploy"
    shutil.copytree(deploy, copy)
    (copy / "ensemble.fp16.engine").write_bytes(b"plan")
    info = {"tensorrt": "10.16.1.11", "min_batch": min_batch, "opt_batch": 32, "max_batch": 64,
            "compute_capability": "9.0", "gpu": "NVIDIA H100 80GB HBM3", "tf32": False}
    assert register_engine(copy / "ensemble.fp16.onnx", copy / "ensemble.fp16.engine", info) == copy / "model.json"
    return copy


def test_a_registered_engine_records_what_it_is_tied_to(tiny_deploy, tmp_path):
    copy = fake_engine(tiny_deploy[0], tmp_path)
    entry = next(f for f in json.loads((copy / "model.json").read_text())["files"] if f["format"] == "engine")
    assert (entry["tensorrt"], entry["compute_capability"], entry["source"]) == ("10.16.1.11", "9.0", "ensemble.fp16.onnx")
    assert entry["profile"] == {"min_batch": 1, "opt_batch": 32, "max_batch": 64} and entry["tf32"] is False
    spec = load_model_spec(copy)
    assert spec.find("ensemble", "fp16", fmt="engine").verified().name == "ensemble.fp16.engine"


def test_tensorrt_backend_without_tensorrt_or_gpu_is_one_line(tiny_deploy, tmp_path):
    if HAVE_TRT:
        pytest.skip("TensorRT and a GPU are present: the engine tests run instead")
    spec = load_model_spec(fake_engine(tiny_deploy[0], tmp_path))
    backend = make_backend(spec, "tensorrt", precision="fp16")
    with pytest.raises(BackendUnavailable) as err:
        backend.__enter__()
    assert "\n" not in str(err.value) and ("not installed" in str(err.value) or "GPU" in str(err.value))
    assert backend.runner is None and not backend._entered


NULLPTR = TypeError("pybind11::init(): factory function returned nullptr")


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """A GPU host as far as the checks before TensorRT go, with an importable stand-in for the
    tensorrt module: enough to reach TensorRT's first call, which each test makes fail."""
    if HAVE_TRT:
        pytest.skip("TensorRT and a GPU are present: the real engine tests run instead")
    pytest.importorskip("polygraphy")
    import importlib.machinery
    import sys
    import types

    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = "10.16.1.11"
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("runtime.onnx_session.gpu_present", lambda: True)
    monkeypatch.setenv("LD_LIBRARY_PATH", os.environ.get("LD_LIBRARY_PATH", ""))  # expose_pip_cuda_runtime edits it
    return trt


def test_cuda_that_does_not_start_is_one_line_not_a_typeerror(tiny_deploy, tmp_path, monkeypatch, capsys,
                                                              fake_tensorrt):
    """On a driver older than the CUDA TensorRT is built for, trt.Runtime/trt.Builder raise
    pybind11's TypeError (NVIDIA/TensorRT#2913): the backend and the builder say so in one line."""
    def refuse(*args, **kwargs):
        raise NULLPTR

    monkeypatch.setattr("polygraphy.backend.trt.EngineFromBytes", lambda data: refuse)
    backend = make_backend(load_model_spec(fake_engine(tiny_deploy[0], tmp_path)), "tensorrt", precision="fp16")
    with pytest.raises(BackendUnavailable, match=r"^ensemble\.fp16\.engine: TensorRT could not initialise CUDA") as err:
        backend.__enter__()
    assert "\n" not in str(err.value) and "docs/gpu.md" in str(err.value) and backend.runner is None

    monkeypatch.setattr("polygraphy.backend.trt.EngineBytesFromNetwork", lambda network, config: refuse)
    out = tmp_path / "e.engine"
    code = export_main(["tensorrt", "--onnx", str(tiny_deploy[0] / "ensemble.onnx"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists() and "\n" not in err
    assert err.startswith("error: TensorRT could not initialise CUDA")


def test_tensorrt_libraries_that_do_not_load_are_named_not_blamed_on_the_plan(tiny_deploy, tmp_path, monkeypatch,
                                                                              fake_tensorrt):
    """``import tensorrt`` failing (libnvinfer or a CUDA library it needs) is TensorRT not starting,
    not "TensorRT cannot run this engine"; Polygraphy's lazy import would report it as the latter."""
    import sys

    package = tmp_path / "site" / "tensorrt"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("libnvinfer.so.10: cannot open shared object file")\n')
    monkeypatch.delitem(sys.modules, "tensorrt")
    monkeypatch.syspath_prepend(str(package.parent))
    backend = make_backend(load_model_spec(fake_engine(tiny_deploy[0], tmp_path)), "tensorrt", precision="fp16")
    with pytest.raises(BackendUnavailable, match=r"^TensorRT cannot start here: ") as err:
        backend.__enter__()
    assert "libnvinfer.so.10" in str(err.value) and "cannot run this engine" not in str(err.value)
    assert "\n" not in str(err.value)


# --- TensorRT and a GPU -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(tiny_deploy, tmp_path_factory):
    """tiny_deploy with fold0 (two outputs) and ensemble engines in every precision."""
    if not HAVE_TRT:
        pytest.skip("needs TensorRT and an NVIDIA GPU")
    copy = tmp_path_factory.mktemp("engines") / "deploy"
    shutil.copytree(tiny_deploy[0], copy)
    cache = str(copy.parent / "timing.cache")
    builds = [("ensemble.onnx", "ensemble.fp32.engine", "1"), ("ensemble.fp16.onnx", "ensemble.fp16.engine", "1"),
              ("ensemble.int8-trt.onnx", "ensemble.int8.engine", "1"), ("fold0.onnx", "fold0.fp32.engine", "4")]
    for src, dst, low in builds:
        assert export_main(["tensorrt", "--onnx", str(copy / src), "--out", str(copy / dst), "--min-batch", low,
                            "--opt-batch", "8", "--max-batch", "16", "--timing-cache", cache]) == 0
    return load_model_spec(copy)


@needs_trt
@pytest.mark.parametrize("precision, bound", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_engines_match_onnxruntime_on_the_cpu(engines, precision, bound):
    x = np.random.default_rng(1).integers(0, 256, (37, 4, 48, 48), dtype=np.uint8)  # > max batch 16: split
    with make_backend(engines, "tensorrt", precision=precision) as trt, \
            make_backend(engines, "onnxruntime", precision="fp32", device="cpu") as cpu:
        first = trt.infer(x)
        again = trt.infer(x[:3])  # a second call must not overwrite the first call's results
        np.testing.assert_allclose(first, cpu.infer(x), atol=bound)
        np.testing.assert_allclose(again, first[:3], atol=1e-6)


@needs_trt
def test_int8_engine_builds_from_the_qdq_graph_and_stays_close(engines, tiny_data):
    from runtime.preprocess import image_chw
    from runtime.reader import ImageFolder

    folder = ImageFolder(tiny_data / "test")  # images like those INT8 was calibrated on
    x = np.stack([image_chw(folder.read(i), engines.preprocess) for i in folder.ids()])
    with make_backend(engines, "tensorrt", precision="int8") as trt, \
            make_backend(engines, "onnxruntime", precision="fp32", device="cpu") as cpu:
        assert np.abs(trt.infer(x) - cpu.infer(x)).mean() < 0.05


@needs_trt
def test_fold_engine_with_two_outputs_and_a_profile_minimum_above_one(engines):
    x = np.random.default_rng(3).integers(0, 256, (2, 4, 48, 48), dtype=np.uint8)  # below min batch 4: padded
    with make_backend(engines, "tensorrt", model="fold0", precision="fp32") as trt, \
            make_backend(engines, "onnxruntime", model="fold0", precision="fp32", device="cpu") as cpu:
        assert trt.profile[0] == 4
        np.testing.assert_allclose(trt.infer(x), cpu.infer(x), atol=1e-4)


@needs_trt
def test_engine_entry_names_the_gpu_it_was_built_on(engines):
    entry = engines.find("ensemble", "fp32", fmt="engine").info
    assert entry["compute_capability"] and entry["gpu"] and entry["tf32"] is False


class FakeEngine:
    """The tensorrt.ICudaEngine calls TensorRTBackend._check makes, for an engine whose input has
    ``dtype`` (TensorRT's DataType) and a profile of batch 1..64."""

    def __init__(self, dtype, classes=28):
        self.dtype, self.classes = dtype, classes
        self.num_io_tensors = 2

    def get_tensor_name(self, i):
        return ["image", "probs"][i]

    def get_tensor_mode(self, name):
        return "in" if name == "image" else "out"

    def get_tensor_dtype(self, name):
        return self.dtype

    def get_tensor_shape(self, name):
        return (-1, self.classes)

    def get_tensor_profile_shape(self, name, index):
        return [(1, 4, 48, 48), (32, 4, 48, 48), (64, 4, 48, 48)]


def test_a_version_3_engine_is_fed_the_uint8_images_and_a_float_one_refused(tiny_deploy, tmp_path, monkeypatch):
    """Engines built from version-3 files take UINT8 (the graph normalises): the backend checks the
    engine's input type against model.json and passes the uint8 batch through unnormalised."""
    import sys
    import types

    from runtime.backends.tensorrt_backend import TensorRTBackend

    import importlib.machinery

    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in")
    trt.DataType = types.SimpleNamespace(UINT8="UINT8", FLOAT="FLOAT")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    spec = load_model_spec(fake_engine(tiny_deploy[0], tmp_path))
    assert spec.input["dtype"] == "uint8"
    backend = make_backend(spec, "tensorrt", precision="fp16")
    assert isinstance(backend, TensorRTBackend) and not backend.host_normalizes
    assert backend._check(FakeEngine("UINT8")) == (1, 32, 64)
    with pytest.raises(BackendUnavailable, match=r"engine input 'image' is FLOAT, model.json says uint8"):
        backend._check(FakeEngine("FLOAT"))
    fed = []

    class Runner:
        def infer(self, feed):
            fed.append(feed["image"])
            return {"probs": np.full((len(feed["image"]), 28), 0.5, np.float32)}
    backend.runner, backend.profile, backend._entered = Runner(), (1, 32, 64), True
    x = np.random.default_rng(0).integers(0, 256, (3, 4, 48, 48), dtype=np.uint8)
    assert backend.infer(x).shape == (3, 28)
    assert fed[0].dtype == np.uint8 and np.array_equal(fed[0], x)


def test_triton_gets_uint8_input_for_a_version_3_engine(tiny_deploy, tmp_path):
    from export.triton import check_config, write_repository

    deploy = fake_engine(tiny_deploy[0], tmp_path)
    folder, _ = write_repository(deploy, tmp_path / "repo", precision="fp16")
    cfg = check_config(folder / "config.pbtxt", load_model_spec(deploy), profile_max=64)
    text = (folder / "config.pbtxt").read_text()
    assert cfg.platform == "tensorrt_plan" and text.count("data_type: TYPE_UINT8") == 1  # the input; probs FP32


def test_the_uint8_input_reaches_tensorrt_only_through_a_cast_to_float(tiny_deploy):
    """TensorRT takes UINT8 only as a network input or output, and converts it only to FLOAT or HALF
    (NvInferRuntimeBase.h, DataType::kUINT8; onnx-tensorrt's ModelImporter refuses UINT8
    intermediate tensors and maps Cast to an ICastLayer): in every file an engine is built from,
    each node reading the uint8 ``image`` is a Cast to float32 or float16, and no other tensor is
    UINT8."""
    from onnx import TensorProto, shape_inference

    for name in ("ensemble.onnx", "ensemble.fp16.onnx", "ensemble.int8-trt.onnx", "fold0.onnx"):
        model = onnx.load(str(tiny_deploy[0] / name))
        graph = model.graph
        assert graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
        readers = [n for n in graph.node if "image" in n.input]
        assert readers, name
        for node in readers:
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            assert node.op_type == "Cast" and to in (TensorProto.FLOAT, TensorProto.FLOAT16), (name, node)
        inferred = shape_inference.infer_shapes(model).graph
        uint8 = [v.name for v in [*inferred.value_info, *inferred.output]
                 if v.type.tensor_type.elem_type == TensorProto.UINT8]
        assert uint8 == [], (name, uint8)


def test_build_register_and_run_an_engine_with_tensorrt_faked(tiny_deploy, tmp_path, monkeypatch, capsys,
                                                              fake_tensorrt):
    """`python -m export tensorrt` then the tensorrt backend, with TensorRT's own calls faked (the
    plan bytes, the engine, Polygraphy's runner): the build asks Polygraphy for a strongly typed
    network on TensorRT 10, TF32 off, one profile over the batch; the plan is written and listed in
    model.json with the GPU it was built on; the backend loads those bytes, checks the engine's
    tensors, feeds the uint8 batch, and deactivates the runner when its with block ends."""
    import polygraphy.backend.trt as poly

    from runtime.gpu_info import GpuInfo

    fake_tensorrt.TensorIOMode = type("TensorIOMode", (), {"INPUT": "in"})
    fake_tensorrt.DataType = type("DataType", (), {"UINT8": "UINT8", "FLOAT": "FLOAT"})
    monkeypatch.setattr("export.tensorrt_build.gpu_info", lambda: GpuInfo("NVIDIA H100 80GB HBM3", "9.0", "13.0",
                                                                          "580.65.06", 1))
    built = {}

    def network_from_onnx(path, strongly_typed):
        built.update(path=path, strongly_typed=strongly_typed)
        return "network"

    def engine_bytes(network, config):
        built.update(network=network, config=config)
        return lambda: b"PLAN"

    monkeypatch.setattr(poly, "NetworkFromOnnxPath", network_from_onnx)
    monkeypatch.setattr(poly, "EngineBytesFromNetwork", engine_bytes)
    deploy = tmp_path / "deploy"
    shutil.copytree(tiny_deploy[0], deploy)
    assert export_main(["tensorrt", "--onnx", str(deploy / "ensemble.fp16.onnx"), "--out",
                        str(deploy / "ensemble.fp16.engine"), "--opt-batch", "8", "--max-batch", "16"]) == 0
    assert "for compute capability 9.0 (NVIDIA H100 80GB HBM3)" in capsys.readouterr().out
    assert built["path"] == str(deploy / "ensemble.fp16.onnx") and built["strongly_typed"] is True
    create = built["config"]._config  # PostprocessConfig(CreateConfig(...), TimingCache.attach)
    assert create.tf32 is False and not (create.fp16 or create.int8)  # precision is the file's (strongly typed)
    profile = create.profiles[0]["image"]
    assert (tuple(profile.min), tuple(profile.opt), tuple(profile.max)) == ((1, 4, 48, 48), (8, 4, 48, 48),
                                                                             (16, 4, 48, 48))
    assert (deploy / "ensemble.fp16.engine").read_bytes() == b"PLAN"

    events = []

    class Runner:
        is_active = False

        def __init__(self, engine):
            self.engine = engine

        def activate(self):
            self.is_active = True
            events.append("activate")

        def deactivate(self):
            self.is_active = False
            events.append("deactivate")

        def infer(self, feed):
            events.append(feed["image"].dtype)
            return {"probs": np.full((len(feed["image"]), 28), 0.25, np.float32)}

    def engine_from_bytes(data):
        events.append(bytes(data))
        return lambda: FakeEngine("UINT8")

    monkeypatch.setattr(poly, "EngineFromBytes", engine_from_bytes)
    monkeypatch.setattr(poly, "TrtRunner", Runner)
    spec = load_model_spec(deploy)
    entry = spec.find("ensemble", "fp16", fmt="engine").info
    assert (entry["compute_capability"], entry["tensorrt"], entry["profile"]["max_batch"]) == ("9.0", "10.16.1.11", 16)
    x = np.random.default_rng(0).integers(0, 256, (3, 4, 48, 48), dtype=np.uint8)
    with make_backend(spec, "tensorrt", precision="fp16") as backend:
        assert backend.profile == (1, 32, 64) and backend.runner.is_active
        probs = backend.infer(x)
    assert probs.shape == (3, 28) and np.all(probs == 0.25)
    assert events == [b"PLAN", "activate", np.uint8, "deactivate"] and backend.runner is None
