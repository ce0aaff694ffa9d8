"""train's CUDA paths, executed on the CPU: training under a fake CUDA (tests.fake_cuda), AMP's
float16 in the global BatchNorm, and the NCCL process group's set-up (faked)."""

import pytest
import torch
import torch.nn.functional as F

import train.distributed as ddp
from tests.conftest import TINY_SETTINGS as SETTINGS
from tests.fake_cuda import fake_cuda
from train.config import FitConfig
from train.fit import fit


def test_a_run_started_on_the_cpu_resumes_on_cuda_with_amp(tiny_data, tmp_path, monkeypatch):
    """A fold interrupted on the CPU (AMP off there: the scaler's state is empty) resumes on CUDA
    with AMP on, and the CUDA step runs: batches copied non_blocking and channels_last, the model
    under CUDA FP16 autocast, its loss through an enabled GradScaler."""
    import train.fit as fit_module

    out = tmp_path / "run"
    settings = dict(SETTINGS, fold=(0,))
    real = fit_module._train_epoch
    calls = {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "_train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(FitConfig(data=str(tiny_data), out=str(out), device="cpu", **settings), progress=False,
            merge_when_done=False)
    monkeypatch.setattr(fit_module, "_train_epoch", real)
    assert (out / "fold0" / "last.pt").exists()

    fake = fake_cuda(monkeypatch)
    scalers = []
    real_step = fit_module.train_step

    def step(parts, x, y, device):
        scalers.append(parts.scaler.is_enabled())
        return real_step(parts, x, y, device)

    monkeypatch.setattr(fit_module, "train_step", step)
    fit(FitConfig(data=str(tiny_data), out=str(out), device="cuda", **settings), progress=False, merge_when_done=False)
    assert (out / "fold0" / "best.pt").exists()
    assert scalers and all(scalers)  # the second epoch ran on "CUDA" with AMP's scaler
    assert ("cuda", torch.float16, True) in fake.autocasts
    batches = [m for m in fake.moves if m[2] == torch.channels_last and m[1]]
    assert batches, "no batch was copied to the device non_blocking, channels_last"


def test_the_global_batchnorm_takes_amp_float16_input(monkeypatch):
    """Under AMP a BatchNorm sees float16: its pixel count per channel (here 8 x 96 x 96 = 73,728 per
    rank) is above float16's largest value, 65504, and so are its sums of squares. The statistics
    are taken in float32, and the output has the input's dtype, as torch's BatchNorm under autocast."""
    import torch.distributed.nn.functional as dist_functional

    monkeypatch.setattr(ddp.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(ddp.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist_functional, "all_reduce", lambda t: t * 2)  # the other rank holds the same batch
    torch.manual_seed(0)
    x = (torch.randn(8, 4, 96, 96) * 3 + 1).half()
    bn = ddp.GlobalBatchNorm2d(4)
    bn.train()
    y = bn(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    twice = torch.cat([x, x]).float()
    want = F.batch_norm(twice, torch.zeros(4), torch.ones(4), bn.weight, bn.bias, training=True, eps=bn.eps)[:8]
    torch.testing.assert_close(y.float(), want, atol=2e-2, rtol=1e-2)
    expected_var = twice.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * expected_var, atol=1e-3, rtol=1e-3)


def test_nccl_runs_cpu_tensors_through_gloo_and_each_rank_picks_its_gpu_first(monkeypatch):
    """Under torchrun on GPUs the group is cpu:gloo,cuda:nccl (the epoch's loss sums and the gathered
    validation results are CPU tensors, which NCCL refuses), made after the rank's GPU is set."""
    calls = []
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(ddp.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(ddp.dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    assert ddp.setup("cuda") == (1, 2, 1)
    assert calls == [("set_device", 1), ("init", "cpu:gloo,cuda:nccl")]
    calls.clear()
    ddp.setup("cpu")
    assert calls == [("init", "gloo")]
    # the backend string is one torch parses into a CPU and a CUDA backend
    from torch.distributed.distributed_c10d import BackendConfig

    backend = BackendConfig(torch.distributed.Backend("cpu:gloo,cuda:nccl")).get_device_backend_map()
    assert backend == {"cpu": "gloo", "cuda": "nccl"}
