"""train fit refuses every setting that cannot train in one line, before it reads the images or
touches the run folder, and the next fit in a run folder removes the temporaries a killed one
left behind."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.__main__ import main as train_main
from train.config import FitConfig
from train.fit import fit

from tests.conftest import TINY_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
FIT = ["--folds", "2", "--width", "8", "--size", "48", "--epochs", "1", "--batch-size", "8", "--threads", "1"]
NO_GPU = not torch.cuda.is_available()

# (arguments added to FIT, what the one error line must say); every one is refused
REFUSED = [
    (["--device", "tpu"], "--device tpu: not a training device; valid: auto, cpu, cuda, cuda:N (torch sees: cpu"),
    (["--device", "cuda:99"], "--device cuda:99"),
    (["--device", "cpu:0"], "--device cpu:0: not a training device"),
    (["--device", ""], "--device"),
    (["--size", "1"], "--size 1: must be at least 32 (the network downsamples by 32)"),
    (["--size", "7"], "--size 7: must be at least 32"),
    (["--size", "31"], "--size 31: must be at least 32"),
    (["--size", "10000"], "--size 10000: must be at most 8192 (its square is over the decoded-size limit"),
    (["--size", "100000"], "--size 100000: must be at most 8192"),
    (["--width", "0"], "--width"),
    (["--width", "100000"], "--width 100000: must be at most 512"),
    (["--width", "600"], "--width 600: must be at most 512"),
    (["--folds", "49"], "train.csv: 48 labelled Ids cannot make 49 folds (--folds)"),
    (["--folds", "1000000"], "48 labelled Ids cannot make 1000000 folds"),
    (["--batch-size", "48"], "train.csv: 48 labelled Ids leave fewer training images than one batch of 48"),
    (["--batch-size", "25"], "--batch-size 25: fold 0 has 24 training images, fewer than one batch"),
    (["--size", "32", "--batch-size", "1"], "--batch-size 1 at --size 32: BatchNorm needs more than one value"),
    (["--tta", "3"], "--tta"),
    (["--tta", "2.5"], "--tta"),
    (["--tta", "-4"], "--tta"),
    (["--tta", "0"], "--tta"),
    (["--cache-gb", "-1"], "--cache-gb"),
    (["--cache-gb", "nan"], "--cache-gb"),
    (["--lr", "inf"], "argument --lr: must be a finite number, got inf"),
    (["--lr", "1e300"], "--lr 1e+300: must be at most 1.0"),
    (["--lr", "0.5", "--weight-decay", "2"], "--lr 0.5 x --weight-decay 2.0 must be below 1"),
    (["--gamma", "1e300"], "--gamma 1e+300: must be at most 10.0"),
    (["--sampler-power", "1e300"], "--sampler-power 1e+300: must be at most 4.0"),
    (["--weight-decay", "inf"], "argument --weight-decay: must be a finite number"),
    (["--gamma", "inf"], "argument --gamma: must be a finite number"),
    (["--sampler-power", "inf"], "argument --sampler-power: must be a finite number"),
    (["--dropout", "1"], "--dropout must be below 1"),
    (["--dropout", "5"], "--dropout must be below 1"),
    (["--alpha", "0.1,0.2"], "--alpha needs 1 or 28 values, got 2"),
    (["--alpha", "2"], "--alpha 2.0: must be at most 1.0"),
    (["--alpha", "nan"], "argument --alpha: must be a finite number"),
    (["--seed", "-1"], "--seed -1: must be at least 0"),
    (["--seed", str(2 ** 64)], "--seed 18446744073709551616: must be at most 4294967295"),
    (["--fold", "0,0"], "--fold 0,0: a fold is listed twice"),
    (["--fold", "2"], "--fold 2 outside 0..1"),
    (["--fold", "-1"], "--fold -1: must be at least 0"),
    (["--threads", "100000"], "--threads 100000: must be at most"),
]
if NO_GPU:
    REFUSED += [(["--device", "cuda"], "--device cuda: no CUDA GPU found (torch sees: cpu); use --device cpu or auto"),
                (["--device", "cuda:0"], "--device cuda:0: no CUDA GPU found")]


def train(argv):
    """python -m train's exit status (argparse's refusals exit through SystemExit)."""
    try:
        return train_main(argv)
    except SystemExit as exit_:
        return exit_.code


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("extra,says", REFUSED, ids=[" ".join(e) for e, _ in REFUSED])
def test_refused_in_one_line_before_the_run_folder_is_made(extra, says, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    code = train(["fit", "--data", str(tiny_data), "--out", str(out), *FIT, *extra])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert says in lines[0], lines[0]
    assert not out.exists()  # nothing was made: not even an empty run folder


def copy_run(run, out):
    """A copy of a finished run that train fit accepts as its own (config.json names its folder)."""
    shutil.copytree(run, out)
    config = json.loads((out / "config.json").read_text())
    config["fit"]["out"] = str(out)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return config["fit"]


RUN_ARGS = [a for k, v in TINY_SETTINGS.items() for a in (f"--{k.replace('_', '-')}", str(v))]


@pytest.mark.parametrize("extra,says", [
    (["--size", "7"], "--size 7: must be at least 32"),
    (["--lr", "inf"], "argument --lr: must be a finite number"),
    (["--device", "tpu"], "--device tpu"),
], ids=["size", "lr", "device"])
def test_a_refused_resume_leaves_the_run_folder_as_it_was(extra, says, tiny_run, tmp_path, capsys):
    out = tmp_path / "run"
    settings = copy_run(tiny_run[0], out)
    (out / "fold0" / ".last.pt.a1b2c3d4.tmp").write_bytes(b"half a file")  # not removed by a refused fit
    before = snapshot(out)
    code = train(["fit", "--data", settings["data"], "--out", str(out), "--resume", *RUN_ARGS, *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and says in err and "Traceback" not in err, err
    assert snapshot(out) == before


def test_refused_through_the_real_command_line(tiny_data, tmp_path):
    # python -m train as a user runs it: exit status 2, one line on stderr, nothing made
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "train", "fit", "--data", str(tiny_data), "--out", str(out),
                           *FIT, "--device", "tpu"], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: --device tpu: not a training device") and not out.exists()


@pytest.mark.parametrize("where,says", [("file", "--out is a file, not a"),
                                        ("file/run", "Not a directory")])
def test_an_out_that_cannot_be_a_folder_is_refused_before_decoding(where, says, tiny_data, tmp_path, capsys,
                                                                   monkeypatch):
    from train import data

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(data.Samples, "__init__", lambda *a, **k: pytest.fail("decoded the images"))
    code = train(["fit", "--data", str(tiny_data), "--out", str(tmp_path / where), *FIT])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    assert f"error: {tmp_path / 'file'}: {says}" in err
    assert (tmp_path / "file").read_text() == "not a folder"


def test_pretrained_weights_of_another_width_are_refused_before_decoding(tiny_data, tmp_path, capsys,
                                                                                 monkeypatch):
    from train import data
    from train.model import build_model

    weights = tmp_path / "r18.pt"
    torch.save(build_model("resnet18", "none", 16).state_dict(), weights)  # FIT trains width 8
    monkeypatch.setattr(data.Samples, "__init__", lambda *a, **k: pytest.fail("decoded the images"))
    out = tmp_path / "run"
    code = train(["fit", "--data", str(tiny_data), "--out", str(out), *FIT, "--pretrained", str(weights)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    assert f"error: {weights}: weights do not match this architecture" in err and not out.exists()


def test_fewer_readable_samples_than_folds_is_refused_after_decoding(tiny_data, tmp_path, capsys):
    # 48 labelled Ids but only 2 readable: the labels pass, the decoded set does not, and the
    # run folder is still not made
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("masks", "test"))
    ids = sorted({p.name.rsplit("_", 1)[0] for p in (data / "train").glob("*.png")})
    for sample_id in ids[2:]:
        (data / "train" / f"{sample_id}_green.png").unlink()
    out = tmp_path / "run"
    code = train(["fit", "--data", str(data), "--out", str(out), *FIT, "--folds", "3", "--batch-size", "1"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "train.csv: 2 readable samples cannot make 3 folds (--folds)" in lines[0]
    assert not out.exists()


def test_the_config_refuses_bad_values_through_the_api(tiny_data, tmp_path):
    # fit() is also called directly (tests, scripts): the same checks hold there
    base = dict(TINY_SETTINGS, data=str(tiny_data), out=str(tmp_path / "run"))
    for change, says in [({"arch": "vgg"}, "--arch vgg"), ({"loss": "mse"}, "--loss mse"),
                         ({"size": 32.0}, "--size must be a whole number"), ({"folds": 1}, "--folds 1"),
                         ({"jobs": 0}, "--jobs 0"), ({"workers": -1}, "--workers -1"),
                         ({"lr": float("nan")}, "--lr must be a finite number")]:
        with pytest.raises(ValueError, match=says.replace("-", r"\-")):
            fit(FitConfig(**{**base, **change}), progress=False)
    assert not (tmp_path / "run").exists()


def test_stale_temporaries_are_removed_by_the_next_fit(tiny_run, tmp_path):
    # what a kill -9 in the middle of atomic writes leaves: .NAME.XXXXXXXX.tmp files
    run, metrics = tiny_run
    out = tmp_path / "run"
    settings = copy_run(run, out)
    good = snapshot(out)
    stale = [out / ".config.json.a1b2c3d4.tmp", out / ".folds.csv.x_9y8z7w.tmp", out / "fold0" / ".last.pt.k3j2h1g0.tmp",
             out / "fold1" / ".history.json.abcdefgh.tmp", out / "fold1" / ".best.e1.pt.zz_zz_zz.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    kept = [out / "notes.tmp", out / ".hidden", out / "fold0" / "my.tmp"]  # not names atomic writes make
    for path in kept:
        path.write_text("the user's")
    again = fit(FitConfig(data=settings["data"], out=str(out), **TINY_SETTINGS), progress=False)
    assert not [p for p in stale if p.exists()]
    assert all(p.read_text() == "the user's" for p in kept)
    assert again == metrics
    now = snapshot(out)
    for name, data in good.items():  # the real files are intact (the merge rewrites its own outputs alike)
        if name.suffix in (".pt", ".npy", ".csv") or name.name in ("config.json", "history.json"):
            assert now[name] == data, name


def test_a_fold_beside_a_running_fit_removes_only_its_own_folds_temporaries(tiny_run, tmp_path):
    # another fit holding the run folder (its shared lock) may be writing any other temporary
    from train.run import Run

    out = tmp_path / "run"
    copy_run(tiny_run[0], out)
    mine, theirs = out / "fold1" / ".last.pt.aaaaaaaa.tmp", out / "fold0" / ".last.pt.bbbbbbbb.tmp"
    top = out / ".errors.csv.cccccccc.tmp"
    for path in (mine, theirs, top):
        path.write_bytes(b"")
    with Run(out).claim((0,)) as removed_by_first:
        with Run(out).claim((1,)) as removed_by_second:
            assert removed_by_second == []  # the first fit got the folder alone and cleaned it
    assert set(removed_by_first) == {mine, theirs, top}
    for path in (mine, theirs, top):
        path.write_bytes(b"")
    import fcntl

    held = os.open(out, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_SH)  # a fit of fold 0 still running
    try:
        with Run(out).claim((1,)) as removed:
            assert removed == [mine]
    finally:
        os.close(held)
    assert theirs.exists() and top.exists()



@pytest.mark.parametrize("damage,says", [("shape", "has shape"), ("history", "no training history"),
                                         ("fifo", "not a regular file (a FIFO)")])
def test_a_damaged_last_checkpoint_is_refused_on_resume(damage, says, tiny_run, tmp_path, capsys):
    # fold 1 left unfinished, with a last.pt that does not fit the run: one line naming it, no traceback
    import torch

    out = tmp_path / "run"
    settings = copy_run(tiny_run[0], out)
    history = json.loads((out / "fold1" / "history.json").read_text())
    (out / "fold1" / "history.json").write_text(json.dumps({**history, "done": False}))
    last = out / "fold1" / "last.pt"
    if damage == "fifo":
        os.mkfifo(last)
    else:
        ckpt = torch.load(out / "fold1" / "best.pt", weights_only=True)
        ckpt["history"] = [1, 2] if damage == "history" else {"epochs": [], "best": {"epoch": -1, "macro_f1": -1.0}}
        if damage == "shape":
            key = next(k for k, v in ckpt["model"].items() if v.ndim == 4)
            ckpt["model"][key] = ckpt["model"][key][:1]
        torch.save(ckpt, last)
    code = train(["fit", "--data", settings["data"], "--out", str(out), "--resume", *RUN_ARGS])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {last}: ") and says in lines[0], lines[0]
