"""A CUDA that runs on the CPU, so the CUDA branches of torch code execute in tests on a machine
without a GPU.

``fake_cuda(monkeypatch)`` makes ``torch.cuda.is_available()`` say yes, turns every move of a
tensor or a module to a ``cuda`` device into a move to the CPU (recorded, with its
``non_blocking`` flag), makes ``pin_memory()`` return a copy it remembers as pinned, and records
every ``torch.autocast``. CUDA autocast does not touch CPU operations, so the numbers are the FP32
ones: what this checks is that the CUDA code path runs end to end and makes the calls it should
(the arguments, the buffers, the layouts), not FP16 numerics.
"""

from dataclasses import dataclass, field

import torch


@dataclass
class FakeCuda:
    moves: list = field(default_factory=list)      # (dtype, non_blocking, memory_format) per tensor moved to cuda
    pinned: list = field(default_factory=list)     # the tensors pin_memory() returned
    autocasts: list = field(default_factory=list)  # (device_type, dtype, enabled) per torch.autocast
    synced: int = 0                                # torch.cuda.synchronize() calls
    peak_resets: int = 0                           # torch.cuda.reset_peak_memory_stats() calls

    def is_pinned(self, t):
        return any(t.untyped_storage().data_ptr() == p.untyped_storage().data_ptr() for p in self.pinned)


def _is_cuda(arg):
    return (isinstance(arg, str) and arg.split(":")[0] == "cuda") or (
        isinstance(arg, torch.device) and arg.type == "cuda")


def fake_cuda(monkeypatch):
    fake = FakeCuda()
    real_to, real_autocast = torch.Tensor.to, torch.autocast

    def to(self, *args, **kwargs):
        if any(_is_cuda(a) for a in args) or _is_cuda(kwargs.get("device")):
            fake.moves.append((self.dtype, kwargs.get("non_blocking", len(args) > 2 and args[2]),
                               kwargs.get("memory_format")))
            args = tuple("cpu" if _is_cuda(a) else a for a in args)
            if "device" in kwargs:
                kwargs["device"] = "cpu"
        return real_to(self, *args, **kwargs)

    def pin_memory(self, *args):
        pinned = self.clone()
        fake.pinned.append(pinned)
        return pinned

    def autocast(device_type, *args, **kwargs):
        fake.autocasts.append((device_type, kwargs.get("dtype"), kwargs.get("enabled", True)))
        return real_autocast(device_type, *args, **kwargs)

    def synchronize(device=None):
        fake.synced += 1

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # torch's own device-generic checks (the optimizer's CUDA-graph capture check) ask
    # torch.accelerator, which would start the real CUDA: there the tensors are on the CPU, as they are
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    def reset_peak_memory_stats(device=None):
        fake.peak_resets += 1

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset_peak_memory_stats)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2 ** 20)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch, "autocast", autocast)
    return fake
