"""The training benchmark behind `make bench-train` (figures are printed, never asserted on)."""

import pytest
import torch

from train.bench import bench_train, main


def test_bench_train_reports_throughput_and_memory(capsys):
    row = bench_train(width=8, size=32, batch_size=4, steps=2, warmup=1)
    assert row["device"] == "cpu" and row["peak_gpu_mb"] is None
    assert row["train_images_per_s"] > 0 and row["inference_images_per_s"] > 0 and row["peak_rss_mb"] > 0
    main(["--width", "8", "--size", "32", "--batch-size", "4", "--steps", "2", "--compare-plain"])
    lines = capsys.readouterr().out.splitlines()
    assert "train img/s" in lines[0] and len(lines) == 3
    assert "cbam" in lines[1] and "none" in lines[2] and lines[1].rstrip().endswith("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_bench_train_on_cuda_uses_the_gpu():
    row = bench_train(width=8, size=32, batch_size=4, steps=2, warmup=1, device="cuda")
    assert row["peak_gpu_mb"] > 0 and row["device"] != "cpu"
