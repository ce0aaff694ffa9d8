"""Training throughput and memory for given settings: images/s for a full optimizer step
(forward, focal loss, backward, AdamW) and inference, plus the process's peak memory."""

import argparse
import json
import resource
import time

import torch

from train.losses import FocalLoss
from train.model import build_model


def bench_train(arch="resnet18", width=32, size=128, batch_size=16, steps=20, warmup=3, threads=0, attention="cbam"):
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(arch, attention, width).to(memory_format=torch.channels_last)  # as train.fit does
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    criterion = FocalLoss()
    x = torch.randn(batch_size, 4, size, size).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch_size, 28) > 0.9).float()
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        optimizer.step()
    train_ips = steps * batch_size / (time.perf_counter() - t0)
    model.eval()
    with torch.inference_mode():
        for i in range(warmup + steps):
            if i == warmup:
                t0 = time.perf_counter()
            model(x)
    infer_ips = steps * batch_size / (time.perf_counter() - t0)
    return {
        "arch": arch, "attention": attention, "width": width, "size": size, "batch_size": batch_size,
        "threads": torch.get_num_threads(), "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "train_images_per_s": train_ips, "inference_images_per_s": infer_ips,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description="CPU/GPU training throughput of the CBAM-ResNet")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--compare-plain", action="store_true", help="also time the same ResNet without CBAM")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = [bench_train(args.arch, args.width, args.size, args.batch_size, args.steps, threads=args.threads)]
    if args.compare_plain:
        rows.append(bench_train(args.arch, args.width, args.size, args.batch_size, args.steps, threads=args.threads,
                                attention="none"))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'model':<28}{'size':>6}{'batch':>7}{'threads':>8}{'train img/s':>13}{'infer img/s':>13}{'peak RSS MB':>13}")
    for r in rows:
        name = f"{r['arch']} w{r['width']} {r['attention']} ({r['params_m']:.1f}M)"
        print(f"{name:<28}{r['size']:>6}{r['batch_size']:>7}{r['threads']:>8}{r['train_images_per_s']:>13.1f}"
              f"{r['inference_images_per_s']:>13.1f}{r['peak_rss_mb']:>13.0f}")
