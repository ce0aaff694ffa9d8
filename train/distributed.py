"""Data-parallel training under ``torchrun`` (DistributedDataParallel; NCCL on GPUs, gloo on CPUs).

On GPUs the process group is ``cpu:gloo,cuda:nccl``: NCCL carries the CUDA tensors (gradients,
BatchNorm sums) and gloo the CPU ones (the epoch's loss sums, the gathered validation results,
barriers). NCCL alone refuses a CPU tensor ("No backend type associated with device type cpu",
torch.distributed's backend table: NCCL has no CPU collectives). Each rank selects its GPU before
the group exists, so NCCL's communicator is made on that GPU, not guessed from the rank.

A run on N processes reaches the result of one process up to floating-point noise because:
- every rank draws the same global sample order (same seeded generator, class-balanced or not)
  and takes its own contiguous slice of each global batch, so the global batch is unchanged;
- BatchNorm statistics are computed over the global batch (``GlobalBatchNorm2d``: an all-reduce
  of sums with autograd; torch's SyncBatchNorm refuses CPU tensors), and DDP averages gradients
  of per-rank mean losses, which equals the gradient of the global mean;
- validation is sharded over ranks and gathered; losses and metrics are reduced across ranks;
- only rank 0 writes files; the others wait at a barrier.
"""

import os

import torch
import torch.distributed as dist
from torch import nn


def world():
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def is_main():
    return world()[0] == 0


def setup(device_type):
    rank, size, local = world()
    if size > 1 and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group("cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo")
    return rank, size, local


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_sum(values):
    """Sum a list of floats over ranks."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj):
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of every rank (same parameters and
    state-dict keys as BatchNorm2d, so checkpoints are interchangeable)."""

    def forward(self, x):
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        # The statistics in float32 whatever the input: under AMP x is float16, whose largest value
        # (65504) is below the count of a batch's pixels per channel and below sums of squares.
        out_dtype, x = x.dtype, x.float()
        channels = x.shape[1]
        count = torch.tensor([x.numel() / channels], dtype=torch.float32, device=x.device)
        stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        total = stats[-1]
        mean = stats[:channels] / total
        var = stats[channels:2 * channels] / total - mean * mean
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean.detach())
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var.detach() * total / (total - 1))
            self.num_batches_tracked += 1
        shape = (1, channels, 1, 1)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps) * self.weight.view(shape) \
            + self.bias.view(shape)
        return y.to(out_dtype)


def global_batchnorm(module):
    """Replace every BatchNorm2d in place by a GlobalBatchNorm2d carrying the same state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            global_batchnorm(child)
    return module


class RankSlice(torch.utils.data.Sampler):
    """This rank's share of a global order: its contiguous slice of each global batch."""

    def __init__(self, order, global_batch, rank, size):
        if global_batch % size:
            raise ValueError(f"--batch-size {global_batch} must be divisible by the {size} processes")
        self.order, self.global_batch, self.rank, self.size = list(order), global_batch, rank, size

    def __iter__(self):
        per = self.global_batch // self.size
        for start in range(0, len(self.order) - self.global_batch + 1, self.global_batch):
            yield from self.order[start + self.rank * per: start + (self.rank + 1) * per]

    def __len__(self):
        return (len(self.order) // self.global_batch) * (self.global_batch // self.size)
