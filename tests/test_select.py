"""Backend and file choice: a pure function of the request, model.json and the machine."""

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
                                      "precision": "fp16", "target": "tensorrt", "format": "engine", "sha256": "0"}]
    return ModelSpec(spec.path, data)


def test_auto_on_a_cpu_takes_the_int8_cpu_flavour(spec):
    choice = choose(spec, "auto", env=CPU)
    assert (choice.backend, choice.device, choice.file.path.name) == ("onnxruntime", "cpu", "ensemble.int8-cpu.onnx")
    assert "no GPU" in choice.reason


def test_auto_with_cuda_takes_fp16_and_with_tensorrt_the_engine(spec):
    choice = choose(spec, "auto", env=CUDA)
    assert (choice.backend, choice.device, choice.file.path.name) == ("onnxruntime", "cuda", "ensemble.fp16.onnx")
    engine = with_engine(spec)
    assert choose(engine, "auto", env=TRT).file.path.name == "ensemble.fp16.engine"
    assert choose(engine, "auto", env=CUDA).backend == "onnxruntime"  # no TensorRT: the engine is useless


def test_explicit_requests(spec):
    assert choose(spec, "onnxruntime", env=CPU).file.path.name == "ensemble.onnx"
    assert choose(spec, "onnxruntime", "int8", env=CPU).file.target == "cpu"
    fold = choose(spec, "onnxruntime", model="fold1", env=CPU)
    assert (fold.file.kind, fold.file.fold) == ("fold", 1)
    torch = choose(spec, "torch", model="fold0", env=CPU)
    assert torch.backend == "torch" and torch.file is None


def test_impossible_requests_say_why(spec):
    with pytest.raises(DataError, match="no .*TensorRT engine"):
        choose(spec, "tensorrt", env=TRT)
    with pytest.raises(ValueError, match="folds 0..1"):
        choose(spec, "onnxruntime", model="fold7", env=CPU)
    with pytest.raises(ValueError, match="'ensemble' or 'fold<k>'"):
        choose(spec, "onnxruntime", model="best", env=CPU)
    with pytest.raises(ValueError, match="unknown backend"):
        choose(spec, "openvino", env=CPU)
