"""Backend and file choice: a pure function of the request, model.json and the machine."""

import json

import pytest

from runtime.backends.select import Environment, choose
from runtime.errors import DataError
from runtime.model_spec import ModelSpec

CPU = Environment()
CUDA = Environment(gpu=True, ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
TRT = Environment(gpu=True, tensorrt=True, ort_providers=CUDA.ort_providers)


@pytest.fixture
def spec(tiny_deploy):
    return tiny_deploy[1]


def with_engine(spec):
    data = dict(spec.data)
    data["files"] = data["files"] + [{"path": "ensemble.fp16.engine", "kind": "ensemble", "fold": -1,
                                      "precision": "fp16", "target": "tensorrt", "format": "engine",
                                      "variant": "fp16", "outputs": ["probs"], "sha256": "0" * 64}]
    return ModelSpec(spec.path, data)


def cpu(cpu_class, ratio, asked=None):
    """A CPU machine whose INT8 probe measures ``ratio``; ``asked`` records which files it timed."""
    def probe(fp32, int8):
        if asked is not None:
            asked.append((fp32.path.name, int8.path.name))
        return ratio
    return Environment(cpu_class=cpu_class, int8_speedup=probe)


def test_auto_on_a_cpu_takes_int8_only_where_the_probe_finds_it_faster(spec):
    asked = []
    choice = choose(spec, "auto", env=cpu("vnni", 2.4, asked))
    assert (choice.backend, choice.device, choice.file.path.name) == ("onnxruntime", "cpu", "ensemble.int8-cpu-vnni.onnx")
    assert asked == [("ensemble.onnx", "ensemble.int8-cpu-vnni.onnx")]
    assert "2.40x FP32's speed on this CPU (vnni class, probe)" in choice.reason
    slower = choose(spec, "auto", env=cpu("vnni", 0.86))
    assert slower.file.path.name == "ensemble.onnx" and "measured 0.86x FP32's speed" in slower.reason
    assert choose(spec, "auto", env=cpu("vnni", 1.05)).file.precision == "fp32"  # below INT8_MIN_SPEEDUP
    # without VNNI only the flavour with 7-bit weights may run (the other can saturate)
    asked = []
    avx2 = choose(spec, "auto", model="fold1", env=cpu("avx2", 2.0, asked))
    assert avx2.file.path.name == "fold1.int8-cpu-avx2.onnx" and asked == [("fold1.onnx", "fold1.int8-cpu-avx2.onnx")]
    unprobed = choose(spec, "auto", env=Environment())
    assert unprobed.file.path.name == "ensemble.onnx" and "none was run" in unprobed.reason


def test_auto_with_cuda_takes_fp16_and_with_tensorrt_the_engine(spec):
    choice = choose(spec, "auto", env=CUDA)
    assert (choice.backend, choice.device, choice.file.path.name) == ("onnxruntime", "cuda", "ensemble.fp16.onnx")
    engine = with_engine(spec)
    assert choose(engine, "auto", env=TRT).file.path.name == "ensemble.fp16.engine"
    assert choose(engine, "auto", env=CUDA).backend == "onnxruntime"  # no TensorRT: the engine is useless


def test_model_json_lists_the_defaults_auto_follows(spec):
    choices = {(c["device"], c.get("cpu")): c["candidates"] for c in spec.defaults["choices"]}
    assert choices == {("cuda", None): ["ensemble.fp16.onnx", "ensemble.onnx"],
                       ("cpu", "vnni"): ["ensemble.int8-cpu-vnni.onnx", "ensemble.int8-cpu-avx2.onnx", "ensemble.onnx"],
                       ("cpu", "avx2"): ["ensemble.int8-cpu-avx2.onnx", "ensemble.onnx"]}
    for (device, cls), files in choices.items():
        env = CUDA if device == "cuda" else cpu(cls, 9.0)
        assert choose(spec, "auto", env=env).file.path.name == files[0]
        if device == "cpu":
            assert choose(spec, "auto", env=cpu(cls, 0.5)).file.path.name == files[-1]


def test_explicit_requests(spec):
    assert choose(spec, "onnxruntime", env=CPU).file.path.name == "ensemble.onnx"
    assert choose(spec, "onnxruntime", "int8", env=CPU).file.target == "cpu"
    assert choose(spec, "auto", "int8", env=cpu("avx2", 0.5)).file.path.name == "ensemble.int8-cpu-avx2.onnx"
    fold = choose(spec, "onnxruntime", model="fold1", env=CPU)
    assert (fold.file.kind, fold.file.fold) == ("fold", 1)
    torch = choose(spec, "torch", model="fold0", env=CPU)
    assert torch.backend == "torch" and torch.file is None


def test_any_listed_file_by_its_name(spec):
    named = choose(spec, "auto", model="fold0.int8-trt.onnx", env=CPU)
    assert (named.backend, named.device, named.file.variant) == ("onnxruntime", "cpu", "int8-trt")
    assert choose(spec, "onnxruntime", "fp16", model="ensemble.fp16.onnx", env=CUDA).device == "cuda"
    with pytest.raises(ValueError, match="is a int8 onnx file: run it with --backend onnxruntime or auto, and --precision int8"):
        choose(spec, "tensorrt", model="fold0.int8-trt.onnx", env=CPU)


def test_impossible_requests_say_why(spec):
    with pytest.raises(DataError, match="no .*TensorRT engine"):
        choose(spec, "tensorrt", env=TRT)
    with pytest.raises(ValueError, match="folds 0..1"):
        choose(spec, "onnxruntime", model="fold7", env=CPU)
    with pytest.raises(ValueError, match="'ensemble', 'fold<k>' or a file model.json lists"):
        choose(spec, "onnxruntime", model="best", env=CPU)
    with pytest.raises(ValueError, match="unknown backend"):
        choose(spec, "openvino", env=CPU)


def test_the_probe_times_both_files_once_per_machine(spec, monkeypatch, tmp_path):
    from runtime import probe

    monkeypatch.setenv("HPA_TOOLKIT_CACHE", str(tmp_path))
    fp32, int8 = spec.find("ensemble"), spec.find("ensemble", "int8", "cpu", cpu="vnni")
    ratio = probe.speedup(fp32, int8)
    assert ratio > 0 and len(json.loads((tmp_path / probe.CACHE_FILE).read_text())) == 1
    monkeypatch.setattr(probe, "measure", lambda *a: pytest.fail("measured twice"))
    assert probe.speedup(fp32, int8) == ratio  # from the cache
    assert probe.cpu_class(["avx2", "avx512_vnni"]) == "vnni" and probe.cpu_class(["avx2", "fma"]) == "avx2"


def test_a_probe_cache_is_read_once_rebuilt_when_damaged_and_warns_when_unwritable(monkeypatch, tmp_path, caplog):
    """runtime.probe.cached_probe: the one cache read/write of the INT8 and the TensorRT-RTX probes."""
    from runtime.probe import cached_probe

    monkeypatch.setenv("HPA_TOOLKIT_CACHE", str(tmp_path))
    runs = []

    def measure():
        runs.append(1)
        return 1.5

    def ratio(v):
        return isinstance(v, float)

    assert cached_probe("p.json", "k", measure, ratio, "test probe") == 1.5
    assert cached_probe("p.json", "k", measure, ratio, "test probe") == 1.5 and len(runs) == 1
    (tmp_path / "p.json").write_text('{"k": "not a ratio", "other": 2.0}')
    assert cached_probe("p.json", "k", measure, ratio, "test probe") == 1.5 and len(runs) == 2
    assert json.loads((tmp_path / "p.json").read_text()) == {"k": 1.5, "other": 2.0}  # other entries kept
    (tmp_path / "p.json").write_text("{trunc")
    assert cached_probe("p.json", "k", measure, ratio, "test probe") == 1.5 and len(runs) == 3
    monkeypatch.setenv("HPA_TOOLKIT_CACHE", str(tmp_path / "p.json" / "below-a-file"))
    assert cached_probe("p.json", "k", measure, ratio, "test probe") == 1.5 and len(runs) == 4
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["could not cache the test probe"]


def test_turns_time_every_call_and_give_each_its_share():
    from runtime.probe import interleaved

    order = []
    times = interleaved([lambda: order.append("a"), lambda: order.append("b")], 0, block=0)
    assert [len(t) for t in times] == [6, 6] and order[:2] == ["a", "b"]  # one warm-up each, then turns of 2
    assert order[2:6] == ["a", "a", "b", "b"]


def rtx_env(cc="8.9", ratio=None, cuda=True, asked=None):
    """A GPU machine with the TensorRT for RTX plugin whose probe measures ``ratio`` (an exception
    instance: raised; None: no probe)."""
    def probe(spec, f):
        if asked is not None:
            asked.append(f.path.name)
        if isinstance(ratio, Exception):
            raise ratio
        return ratio
    return Environment(gpu=True, rtx=True, compute_capability=cc,
                       ort_providers=CUDA.ort_providers if cuda else ("CPUExecutionProvider",),
                       rtx_speedup=None if ratio is None else probe)


def test_auto_takes_tensorrt_rtx_where_measured_faster_than_the_cuda_provider(spec):
    from runtime.backends import BackendUnavailable

    asked = []
    fast = choose(spec, env=rtx_env(ratio=1.4, asked=asked))
    assert (fast.backend, fast.file.path.name, fast.device) == \
        ("onnxruntime-tensorrt-rtx", "ensemble.fp16.onnx", "cuda")
    assert "1.40x the CUDA provider's speed" in fast.reason and asked == ["ensemble.fp16.onnx"]
    slow = choose(spec, env=rtx_env(ratio=1.05))
    assert (slow.backend, slow.file.path.name) == ("onnxruntime", "ensemble.fp16.onnx")
    assert "TensorRT for RTX measured 1.05x the CUDA provider's speed (below 1.1x)" in slow.reason
    broken = choose(spec, env=rtx_env(ratio=BackendUnavailable("onnxruntime-tensorrt-rtx: boom")))
    assert broken.backend == "onnxruntime" and "TensorRT for RTX could not run (onnxruntime-tensorrt-rtx: boom)" in \
        broken.reason
    assert "none was run" in choose(spec, env=rtx_env(ratio=None)).reason
    only = choose(spec, env=rtx_env(cuda=False))  # the plugin with a CPU onnxruntime: the one GPU provider
    assert only.backend == "onnxruntime-tensorrt-rtx" and "no CUDA provider" in only.reason
    assert choose(spec, "auto", "fp32", env=rtx_env(ratio=2.0)).file.path.name == "ensemble.onnx"


def test_auto_never_probes_tensorrt_rtx_where_it_cannot_run(spec):
    asked = []
    for env in (rtx_env(cc="9.0", ratio=3.0, asked=asked), rtx_env(cc=None, ratio=3.0, asked=asked),
                Environment(gpu=False, rtx=True, compute_capability="8.9", rtx_speedup=lambda *a: 3.0)):
        assert choose(spec, env=env).backend == "onnxruntime"
    assert choose(spec, "auto", "int8", env=rtx_env(ratio=3.0, asked=asked)).backend != "onnxruntime-tensorrt-rtx"
    assert asked == []
    h200 = choose(spec, env=rtx_env(cc="9.0", cuda=False))
    assert (h200.backend, h200.device) == ("onnxruntime", "cpu")


def test_tensorrt_rtx_asked_for_by_name(spec):
    explicit = choose(spec, "onnxruntime-tensorrt-rtx", env=CPU)
    assert (explicit.backend, explicit.file.path.name) == ("onnxruntime-tensorrt-rtx", "ensemble.onnx")
    assert "TensorRT for RTX provider" in explicit.reason
    assert choose(spec, "onnxruntime-tensorrt-rtx", "fp16", model="fold0", env=CPU).file.path.name == "fold0.fp16.onnx"
