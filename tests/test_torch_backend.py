"""The torch backend: fp32 or fp16 (autocast, CUDA only), channels_last, the uint8 batch normalised on
its device. What needs a GPU skips where PyTorch sees none."""

import numpy as np
import pytest

from runtime.backends import make_backend
from runtime.backends.base import BackendUnavailable
from runtime.backends.select import Environment, choose
from runtime.model_spec import load_model_spec

torch = pytest.importorskip("torch")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA GPU here")


@pytest.fixture(scope="module")
def spec(tiny_deploy):
    return load_model_spec(tiny_deploy[0])


def batch(spec, n=5, seed=0):
    size = spec.preprocess.size
    return np.random.default_rng(seed).integers(0, 256, (n, 4, size, size), dtype=np.uint8)


def all_channels_last(backend):
    """Every 4-D weight (the convolutions) of every fold's model is laid out channels_last."""
    return all(p.is_contiguous(memory_format=torch.channels_last)
               for m in backend.models for p in m.parameters() if p.ndim == 4)


def test_the_torch_backend_takes_fp32_and_fp16_and_refuses_int8(spec):
    assert choose(spec, "torch", env=Environment()).precision == "fp32"
    assert choose(spec, "torch", "fp16", env=Environment()).precision == "fp16"
    with pytest.raises(ValueError, match="fp32, or fp16 autocast on CUDA"):
        choose(spec, "torch", "int8", env=Environment())
    assert make_backend(spec, "torch", precision="fp16", env=Environment()).precision == "fp16"  # nothing loaded yet
    assert make_backend(spec, "torch", env=Environment()).precision == "fp32"


def test_fp16_on_the_cpu_is_refused_in_one_line(spec):
    with pytest.raises(BackendUnavailable) as err:
        with make_backend(spec, "torch", precision="fp16", device="cpu", env=Environment()):
            pass
    assert str(err.value) == ("--precision fp16 runs the torch backend on CUDA only (FP16 autocast); "
                              "on the CPU it runs fp32")


def test_the_cpu_runs_fp32_nchw_and_channels_last_gives_the_same_probabilities(spec):
    x = batch(spec)
    with make_backend(spec, "torch", device="cpu", env=Environment()) as nchw:
        assert not nchw.channels_last and nchw.pinned is None
        want = nchw.infer(x)
        assert "fp32" in nchw.description and "channels_last" not in nchw.description
    with make_backend(spec, "torch", device="cpu", env=Environment(), channels_last=True) as nhwc:
        got = nhwc.infer(x)
        assert "channels_last" in nhwc.description and all_channels_last(nhwc)
    assert got.shape == (5, 28) and np.abs(got - want).max() <= 1e-5


def test_the_settings_of_an_inference_run_name_the_torch_precision(spec, tiny_data):
    from runtime.infer import run_settings
    from runtime.reader import ImageFolder

    backend = make_backend(spec, "torch", precision="fp16", env=Environment())
    assert run_settings(backend, ImageFolder(tiny_data / "test"), 1, np.zeros(28), 4)["precision"] == "fp16"


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_runs_channels_last_through_a_reused_pinned_buffer(spec, precision):
    x = batch(spec, 6)
    with make_backend(spec, "torch", device="cpu", env=Environment()) as cpu:
        want = cpu.infer(x)
    with make_backend(spec, "torch", precision=precision, device="cuda", env=Environment()) as gpu:
        assert gpu.channels_last and all_channels_last(gpu)
        got = gpu.infer(x)
        pinned = gpu.pinned
        assert pinned.is_pinned() and pinned.dtype == torch.uint8
        assert np.array_equal(gpu.infer(x[:3]), gpu.infer(x[:3])) and gpu.pinned is pinned  # reused, smaller batch
    assert np.abs(got - want).max() <= (2e-2 if precision == "fp16" else 1e-3)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_cuda_branch_runs_on_a_fake_cuda(spec, precision, monkeypatch):
    """The CUDA path, executed on the CPU (tests.fake_cuda): the uint8 batch is staged in one pinned
    buffer that is reused for a smaller batch and regrown for a larger one, copied to the device
    non_blocking as uint8 (a quarter of float32's bytes), laid out channels_last, the models run
    under CUDA autocast FP16 exactly when --precision fp16 asks, and the probabilities are the FP32
    CPU ones (CUDA autocast leaves CPU operations alone)."""
    from tests.fake_cuda import fake_cuda

    x = batch(spec, 6)
    with make_backend(spec, "torch", device="cpu", env=Environment()) as cpu:
        want, want_small, want_big = cpu.infer(x), cpu.infer(x[:3]), cpu.infer(batch(spec, 8, seed=1))
    fake = fake_cuda(monkeypatch)
    with make_backend(spec, "torch", precision=precision, device="cuda", env=Environment()) as gpu:
        assert gpu.channels_last and all_channels_last(gpu) and gpu.device == "cuda"
        assert "torch-cuda" in gpu.description and ("fp16 autocast" in gpu.description) == (precision == "fp16")
        fake.moves.clear()
        got = gpu.infer(x)
        pinned = gpu.pinned
        assert fake.is_pinned(pinned) and pinned.dtype == torch.uint8 and pinned.shape[0] == 6
        assert fake.moves == [(torch.uint8, True, None)]  # the uint8 batch, once, non_blocking
        assert fake.autocasts[-1] == ("cuda", torch.float16, precision == "fp16")
        small = gpu.infer(x[:3])
        assert gpu.pinned is pinned  # reused for the smaller batch
        big = gpu.infer(batch(spec, 8, seed=1))
        assert gpu.pinned is not pinned and gpu.pinned.shape[0] == 8 and fake.is_pinned(gpu.pinned)
    assert gpu.pinned is None and gpu.models == []  # freed by the with block
    for g, w in ((got, want), (small, want_small), (big, want_big)):
        assert g.dtype == np.float32 and g.shape == w.shape and np.abs(g - w).max() <= 1e-5


def test_auto_picks_cuda_when_pytorch_sees_a_gpu(spec, monkeypatch):
    from tests.fake_cuda import fake_cuda

    fake_cuda(monkeypatch)
    with make_backend(spec, "torch", device="auto", env=Environment()) as backend:
        assert backend.device == "cuda" and backend.channels_last
        assert backend.infer(batch(spec, 2)).shape == (2, 28)
