"""The inference journal: a resumed run and a merge never mix results of different settings, and a
kill -9 at any moment resumes to the files of an uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("submission.csv", "probabilities.csv", "errors.csv")


def same_outputs(a, b):
    return all((Path(a) / n).read_bytes() == (Path(b) / n).read_bytes() for n in OUTPUTS)


@pytest.fixture
def infer(tiny_data, tiny_deploy):
    def run(out, *extra):
        return main(["infer", "--model", str(tiny_deploy[0]), "--images", str(tiny_data / "test"), "--out", str(out),
                     "--batch-size", "2", *extra])

    return run


def test_resume_with_other_settings_is_refused_naming_the_difference(infer, tmp_path, capsys):
    # The case: an INT8 single-view run, interrupted, resumed as FP32 with 4 views.
    first = ["--precision", "int8", "--tta", "1"]
    assert infer(tmp_path / "clean", *first) == 0
    assert infer(tmp_path / "run", *first) == 0
    chunks = sorted((tmp_path / "run" / ".chunks").glob("chunk-*.csv"))
    chunks[-1].unlink()  # as if killed before the last chunk
    capsys.readouterr()
    assert infer(tmp_path / "run", "--precision", "fp32", "--tta", "4", "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {tmp_path / 'run' / '.chunks' / 'settings.json'}: --resume with other settings")
    assert "precision int8 -> fp32" in err and "views 1 -> 4" in err
    assert sorted((tmp_path / "run" / ".chunks").glob("chunk-*.csv")) == chunks[:-1]  # nothing touched
    assert infer(tmp_path / "run", *first, "--resume") == 0
    assert same_outputs(tmp_path / "run", tmp_path / "clean")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["settings"]["precision"] == "int8" and summary["settings"]["views"] == 1


def test_merge_refuses_shards_of_other_runs_and_empty_files(infer, tiny_data, tmp_path, capsys):
    ids = ["--ids", str(tiny_data / "sample_submission.csv")]
    assert infer(tmp_path / "s0", "--shard", "0/2", "--tta", "1", *ids) == 0
    assert infer(tmp_path / "s1", "--shard", "1/2", "--tta", "2", *ids) == 0
    capsys.readouterr()
    merge = ["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m"), *ids]
    assert main(merge) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 's1' / 'summary.json'}: made with other settings" in err
    assert "views 1 -> 2" in err and not (tmp_path / "m").exists()
    assert infer(tmp_path / "s1", "--shard", "1/2", "--tta", "1", *ids) == 0
    (tmp_path / "s1" / "errors.csv").write_bytes(b"")
    capsys.readouterr()
    assert main(merge) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 's1' / 'errors.csv'}: empty file\n"


def test_run_inference_refuses_a_batch_size_below_1(tiny_data, tiny_deploy, tmp_path):
    from runtime.backends import make_backend
    from runtime.infer import run_inference
    from runtime.model_spec import load_model_spec
    from runtime.reader import ImageFolder

    with make_backend(load_model_spec(tiny_deploy[0]), "onnxruntime") as backend:
        with pytest.raises(ValueError, match="batch size must be at least 1, got 0"):
            run_inference(backend, ImageFolder(tiny_data / "test"), ["a"], tmp_path / "out", batch_size=0)
    assert not (tmp_path / "out").exists()


def test_kill_9_during_inference_then_resume_gives_the_same_files(tiny_data, tiny_deploy, tmp_path):
    # 600 Ids (links to the 12 test samples, inside the folder) at batch size 1: the run is
    # killed after its second chunk, long before its 150th.
    folder = tmp_path / "images"
    folder.mkdir()
    samples = sorted({p.name.rsplit("_", 1)[0] for p in (tiny_data / "test").glob("*.png")})
    for ch in ("red", "green", "blue", "yellow"):
        for s in samples:
            shutil.copy(tiny_data / "test" / f"{s}_{ch}.png", folder / f"{s}_{ch}.png")
        for n in range(600 - len(samples)):
            (folder / f"copy{n:04d}_{ch}.png").symlink_to(f"{samples[n % len(samples)]}_{ch}.png")
    args = ["infer", "--model", str(tiny_deploy[0]), "--images", str(folder), "--batch-size", "1", "--tta", "1",
            "--workers", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "runtime", *args, "--out", str(tmp_path / "killed")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunk = tmp_path / "killed" / ".chunks" / "chunk-000001.csv"
    deadline = time.monotonic() + 120
    while not chunk.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert chunk.exists() and not (tmp_path / "killed" / "summary.json").exists()  # killed mid-run
    assert not list((tmp_path / "killed").glob("*.csv"))  # no final file, and nothing half-written
    assert main([*args, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    assert main([*args, "--out", str(tmp_path / "clean")]) == 0
    assert same_outputs(tmp_path / "killed", tmp_path / "clean")
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["done"] == 600 and 8 <= summary["resumed_from"] < 600
