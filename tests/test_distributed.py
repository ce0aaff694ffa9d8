"""Data-parallel training: 2 gloo processes on the CPU reach what 1 process reaches."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from train.distributed import RankSlice

ROOT = Path(__file__).resolve().parents[1]


def test_rank_slices_rebuild_the_global_batches():
    order = list(range(23))
    slices = [list(RankSlice(order, 8, r, 2)) for r in range(2)]
    assert len(slices[0]) == len(slices[1]) == 8  # 2 full global batches of 8, 4 per rank each
    rebuilt = [slices[0][0:4] + slices[1][0:4], slices[0][4:8] + slices[1][4:8]]
    assert rebuilt == [order[0:8], order[8:16]]


def test_two_gloo_processes_match_one(tiny_data, tmp_path):
    args = ["fit", "--data", str(tiny_data), "--folds", "2", "--fold", "0", "--width", "8", "--size", "48",
            "--epochs", "2", "--batch-size", "8", "--lr", "3e-3", "--seed", "1", "--threads", "1"]
    one = subprocess.run([sys.executable, "-m", "train", *args, "--out", str(tmp_path / "one")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "train", *args, "--out", str(tmp_path / "two")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a = np.load(tmp_path / "one" / "fold0" / "oof.npy")
    b = np.load(tmp_path / "two" / "fold0" / "oof.npy")
    np.testing.assert_allclose(a, b, atol=2e-4)
    ha = json.loads((tmp_path / "one" / "fold0" / "history.json").read_text())["epochs"]
    hb = json.loads((tmp_path / "two" / "fold0" / "history.json").read_text())["epochs"]
    for ea, eb in zip(ha, hb):
        assert abs(ea["train_loss"] - eb["train_loss"]) < 1e-3 * max(1, ea["train_loss"])
        assert abs(ea["val_loss"] - eb["val_loss"]) < 1e-3 * max(1, ea["val_loss"])
    sa = torch.load(tmp_path / "one" / "fold0" / "best.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "two" / "fold0" / "best.pt", weights_only=True)["model"]
    assert sa.keys() == sb.keys()  # same checkpoint format, written once by rank 0
    for key in sa:
        torch.testing.assert_close(sa[key].float(), sb[key].float(), atol=2e-3, rtol=1e-3)
