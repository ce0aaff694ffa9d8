"""ONNX Runtime's GPU providers as explicit backends: chosen for the right file, refused in one line
when the provider cannot run (never silently served by the CPU), and checked on a GPU when present."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.__main__ import main as runtime_main
from runtime.backends import BackendUnavailable, make_backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeTensorRTBackend, tensorrt_provider_options
from runtime.backends.select import Environment, choose
from runtime.onnx_session import CUDA, TENSORRT, available_providers, gpu_present

CPU = Environment()
GPU = Environment(gpu=True, tensorrt=True, ort_providers=(TENSORRT, CUDA, "CPUExecutionProvider"))


@pytest.fixture
def spec(tiny_deploy):
    return tiny_deploy[1]


def test_gpu_providers_are_chosen_with_the_file_they_can_run(spec):
    cuda = choose(spec, "onnxruntime-cuda", env=CPU)
    assert (cuda.backend, cuda.device, cuda.file.path.name) == ("onnxruntime-cuda", "cuda", "ensemble.onnx")
    assert choose(spec, "onnxruntime-cuda", "fp16", env=GPU).file.path.name == "ensemble.fp16.onnx"
    trt = choose(spec, "onnxruntime-tensorrt", "int8", model="fold1", env=GPU)
    assert (trt.backend, trt.file.path.name) == ("onnxruntime-tensorrt", "fold1.int8-trt.onnx")
    assert "TensorRT provider" in trt.reason
    with pytest.raises(ValueError, match="onnxruntime-cuda has no INT8 convolutions"):
        choose(spec, "onnxruntime-cuda", "int8", env=GPU)
    assert GPU.ort_tensorrt and not Environment(gpu=True, ort_providers=GPU.ort_providers).ort_tensorrt


def test_tensorrt_provider_options_follow_the_file(tmp_path):
    fp16 = tensorrt_provider_options("fp16", 512, 64, tmp_path)
    assert (fp16["trt_fp16_enable"], fp16["trt_int8_enable"]) == ("1", "0")
    assert fp16["trt_profile_min_shapes"] == "image:1x4x512x512"
    assert fp16["trt_profile_opt_shapes"] == "image:32x4x512x512"
    assert fp16["trt_profile_max_shapes"] == "image:64x4x512x512"
    assert fp16["trt_engine_cache_path"] == str(tmp_path) and fp16["trt_engine_cache_enable"] == "1"
    int8 = tensorrt_provider_options("int8", 96, 8, tmp_path)
    assert (int8["trt_fp16_enable"], int8["trt_int8_enable"], int8["trt_profile_opt_shapes"]) == ("1", "1", "image:8x4x96x96")
    assert tensorrt_provider_options("fp32", 96, 8, tmp_path)["trt_fp16_enable"] == "0"


def test_engine_cache_option_reaches_only_the_tensorrt_provider(spec, tmp_path):
    backend = make_backend(spec, "onnxruntime-tensorrt", engine_cache=tmp_path / "c", max_batch=128)
    assert isinstance(backend, OnnxRuntimeTensorRTBackend) and backend.engine_cache == tmp_path / "c"
    assert backend.max_batch == 128
    default = make_backend(spec, "onnxruntime-tensorrt")
    assert default.engine_cache.name == default.file.sha256[:16]
    with pytest.raises(ValueError, match="backend onnxruntime takes no option 'engine_cache'"):
        make_backend(spec, "onnxruntime", engine_cache=tmp_path)


@pytest.mark.skipif(gpu_present(), reason="a GPU is present: the provider runs instead")
@pytest.mark.parametrize("name", ["onnxruntime-cuda", "onnxruntime-tensorrt"])
def test_gpu_provider_without_a_gpu_is_refused_in_one_line(spec, name):
    backend = make_backend(spec, name)
    with pytest.raises(BackendUnavailable) as err:
        backend.__enter__()
    message = str(err.value)
    assert message.startswith(f"{name}: ") and "\n" not in message
    assert "no NVIDIA GPU" in message or "has no" in message
    assert backend.session is None


@pytest.mark.skipif(gpu_present(), reason="a GPU is present: the provider runs instead")
@pytest.mark.skipif(CUDA not in available_providers(), reason="this onnxruntime has no CUDA provider")
def test_a_provider_that_falls_back_to_the_cpu_is_caught_and_explained(spec, monkeypatch):
    """Past the device check (as on a GPU host whose CUDA libraries are missing), ONNX Runtime
    quietly puts the session on the CPU; the backend must notice and name the missing library."""
    monkeypatch.setattr("runtime.onnx_session.gpu_present", lambda: True)
    with pytest.raises(BackendUnavailable) as err:
        with make_backend(spec, "onnxruntime-cuda"):
            pass
    message = str(err.value)
    assert "CUDAExecutionProvider is not active (the session runs on CPUExecutionProvider)" in message
    assert "libonnxruntime_providers_cuda.so cannot load: lib" in message and "\n" not in message


@pytest.mark.skipif(gpu_present(), reason="a GPU is present")
def test_cli_refuses_the_cuda_provider_here_in_one_line(tiny_deploy, tiny_data, tmp_path, capsys):
    code = runtime_main(["infer", "--model", str(tiny_deploy[0]), "--images", str(tiny_data / "test"),
                         "--out", str(tmp_path / "out"), "--backend", "onnxruntime-cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: onnxruntime-cuda: ") and "no NVIDIA GPU" in err[-1]
    assert not (tmp_path / "out" / "submission.csv").exists()


def test_backends_import_and_choose_as_a_library():
    """A fresh interpreter using runtime as a library (no CLI, no test imports first)."""
    code = ("from runtime.backends.base import available_backends, backend_class\n"
            "from runtime.backends.select import detect_environment\n"
            "detect_environment()\n"
            "print([backend_class(n).name for n in available_backends()[1:]])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == ("['onnxruntime', 'onnxruntime-cuda', 'onnxruntime-tensorrt', 'onnxruntime-tensorrt-rtx', "
                           "'tensorrt', 'torch']")


@pytest.mark.skipif(not gpu_present() or CUDA not in available_providers(), reason="needs a GPU and the CUDA provider")
def test_cuda_provider_matches_the_cpu_in_fp32(spec):
    x = np.random.default_rng(0).integers(0, 256, (9, 4, 48, 48), dtype=np.uint8)
    with make_backend(spec, "onnxruntime-cuda") as gpu, make_backend(spec, "onnxruntime", device="cpu") as cpu:
        assert gpu.session.get_providers()[0] == CUDA
        np.testing.assert_allclose(gpu.infer(x), cpu.infer(x), atol=1e-4)  # use_tf32=0: full FP32
