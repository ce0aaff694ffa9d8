"""Training throughput and memory for given settings: images/s for a full optimizer step
(forward, focal loss, backward, AdamW) and inference, plus the process's peak memory."""

import json
import resource
import time

import torch

from runtime.classes import NUM_CLASSES
from runtime.cli import ArgumentParser, non_negative_int, positive_int
from train.losses import FocalLoss
from train.model import build_model


def bench_train(arch="resnet18", width=32, size=128, batch_size=16, steps=20, warmup=3, threads=0, attention="cbam",
                device="cpu"):
    """One configuration's figures. On CUDA it trains as ``train fit`` does there: float16 autocast
    with a gradient scaler, channels-last; timings wait for the GPU."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(arch, attention, width).to(device, memory_format=torch.channels_last)  # as train.fit does
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    criterion = FocalLoss()
    x = torch.randn(batch_size, 4, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch_size, NUM_CLASSES, device=device) > 0.9).float()

    def timed(step):
        for i in range(warmup + steps):
            if i == warmup:
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
                step()
        if cuda:
            torch.cuda.synchronize()
        return steps * batch_size / (time.perf_counter() - t0)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(criterion(model(x).float(), y)).backward()
        scaler.step(optimizer)
        scaler.update()

    model.train()
    train_ips = timed(train_step)
    model.eval()
    with torch.inference_mode():
        infer_ips = timed(lambda: model(x))
    return {
        "arch": arch, "attention": attention, "width": width, "size": size, "batch_size": batch_size,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "threads": torch.get_num_threads(), "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "train_images_per_s": train_ips, "inference_images_per_s": infer_ips,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20 if cuda else None,
    }


def main(argv=None):
    p = ArgumentParser(prog="scripts/bench_train.py", description="CPU/GPU training throughput of the CBAM-ResNet")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=positive_int, default=32)
    p.add_argument("--size", type=positive_int, default=128)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--threads", type=non_negative_int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (float16 autocast, as train fit uses there)")
    p.add_argument("--compare-plain", action="store_true", help="also time the same ResNet without CBAM")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = [bench_train(args.arch, args.width, args.size, args.batch_size, args.steps, threads=args.threads,
                        device=args.device)]
    if args.compare_plain:
        rows.append(bench_train(args.arch, args.width, args.size, args.batch_size, args.steps, threads=args.threads,
                                attention="none", device=args.device))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'model':<28}{'size':>6}{'batch':>7}{'threads':>8}{'train img/s':>13}{'infer img/s':>13}{'peak RSS MB':>13}"
          f"{'peak GPU MB':>13}  device")
    for r in rows:
        name = f"{r['arch']} w{r['width']} {r['attention']} ({r['params_m']:.1f}M)"
        gpu = f"{r['peak_gpu_mb']:>13.0f}" if r["peak_gpu_mb"] is not None else f"{'-':>13}"
        print(f"{name:<28}{r['size']:>6}{r['batch_size']:>7}{r['threads']:>8}{r['train_images_per_s']:>13.1f}"
              f"{r['inference_images_per_s']:>13.1f}{r['peak_rss_mb']:>13.0f}{gpu}  {r['device']}")
