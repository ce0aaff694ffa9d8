"""A tiny end-to-end fit: 48 synthetic 64-pixel fields, 2 folds, 2 epochs."""

import csv
import json
import shutil
from fractions import Fraction

import numpy as np
import pytest
import torch

from runtime.classes import NUM_CLASSES
from train.__main__ import main as train_main
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.config import FitConfig
from train.fit import fit
from train.report import merge

from tests.conftest import TINY_SETTINGS as SETTINGS


def test_run_folder_contents(tiny_run):
    run, metrics = tiny_run
    for name in ("config.json", "folds.csv", "errors.csv", "oof.csv", "thresholds.json", "metrics.json", "curves.png"):
        assert (run / name).is_file(), name
    for k in range(2):
        assert (run / f"fold{k}" / "best.pt").is_file()
        assert not (run / f"fold{k}" / "last.pt").exists()
        history = json.loads((run / f"fold{k}" / "history.json").read_text())
        assert history["done"] and len(history["epochs"]) == 2
    assert set(metrics["macro_f1"]) == {"at_0.5", "tuned", "tuned_crossfit"}
    assert len(metrics["per_class"]) == NUM_CLASSES
    assert 0 <= metrics["macro_f1"]["at_0.5"] <= metrics["macro_f1"]["tuned"] <= 1
    with open(run / "oof.csv") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 49 and len(rows[0]) == 2 + NUM_CLASSES
    tuned = json.loads((run / "thresholds.json").read_text())
    for key in ("thresholds", "single_view_thresholds"):
        assert len(tuned[key]) == NUM_CLASSES and all(0 <= t <= 1 for t in tuned[key])
    assert tuned["tta"] == metrics["tta"] == 4
    assert set(metrics["single_view_macro_f1"]) == {"at_0.5", "tuned", "tuned_crossfit"}


def test_checkpoint_is_plain_and_reloads_to_the_same_predictions(tiny_run, tiny_data):
    run, _ = tiny_run
    ckpt = torch.load(run / "fold0" / "best.pt", weights_only=True)
    assert set(ckpt) >= {"model", "config", "preprocess", "epoch", "fold"}
    model, cfg, pp, _ = model_from_checkpoint(run / "fold0" / "best.pt")
    assert pp.size == 48 and cfg.width == 8
    from runtime.preprocess import preprocess
    from runtime.reader import ImageFolder

    folds = {r["Id"]: int(r["fold"]) for r in csv.DictReader(open(run / "folds.csv"))}
    oof = {r["Id"]: [float(v) for v in list(r.values())[2:]] for r in csv.DictReader(open(run / "oof.csv"))}
    sample_id = next(i for i, f in folds.items() if f == 0)
    x = torch.from_numpy(preprocess(ImageFolder(tiny_data / "train").read(sample_id), pp))[None]
    with torch.no_grad():
        plain = torch.sigmoid(model(x))[0].numpy()
        # cfg.tta == 4: the out-of-fold probabilities average the four quarter turns
        turns = torch.stack([torch.sigmoid(model(torch.rot90(x, k, (2, 3))))[0] for k in range(4)]).mean(0).numpy()
    assert cfg.tta == 4
    # On a GPU host the run trained and predicted in float16 autocast; here the reload is float32
    # on the CPU (measured on an H200: 7e-4 apart).
    atol = 5e-3 if torch.cuda.is_available() else 1e-5
    np.testing.assert_allclose(turns, oof[sample_id], atol=atol)
    np.testing.assert_allclose(plain, np.load(run / "fold0" / "oof_single.npy")[0], atol=atol)
    assert np.abs(plain - turns).max() > 1e-3  # the two files really differ


def test_without_tta_the_single_view_is_the_only_view(tiny_run, tiny_data, tmp_path):
    run, metrics = tiny_run
    plain = fit(FitConfig(data=str(tiny_data), out=str(tmp_path / "plain"), tta=1, **SETTINGS), progress=False)
    assert not list((tmp_path / "plain").glob("fold*/oof_single.npy"))
    tuned = json.loads((tmp_path / "plain" / "thresholds.json").read_text())
    assert tuned["tta"] == 1 and tuned["single_view_thresholds"] == tuned["thresholds"]
    assert plain["single_view_macro_f1"] == plain["macro_f1"]
    # the same training, so the same single-view predictions as the 4-view run's
    assert plain["macro_f1"] == metrics["single_view_macro_f1"]


def test_same_seed_same_run(tiny_run, tiny_data, tmp_path):
    run, metrics = tiny_run
    again = fit(FitConfig(data=str(tiny_data), out=str(tmp_path / "again"), **SETTINGS), progress=False)
    assert again["macro_f1"] == metrics["macro_f1"]


def test_folds_in_parallel_processes_give_the_sequential_run(tiny_run, tiny_data, tmp_path):
    # --jobs trains each fold in its own process; with the same thread count per fold the
    # numbers must be those of the sequential run, to the bit.
    run, metrics = tiny_run
    out = tmp_path / "parallel"
    again = fit(FitConfig(data=str(tiny_data), out=str(out), jobs=2, **SETTINGS), progress=False)
    assert (out / "oof.csv").read_text() == (run / "oof.csv").read_text()
    assert again["macro_f1"] == metrics["macro_f1"]


@pytest.mark.parametrize("crash_at", [2, 3])  # 2: inside fold 0 (resumes from last.pt); 3: before fold 1
def test_resume_after_interruption_matches(tiny_run, tiny_data, tmp_path, monkeypatch, crash_at):
    run, metrics = tiny_run
    out = tmp_path / "resumed"
    import train.fit as fit_module

    real = fit_module._train_epoch
    calls = {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "_train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(FitConfig(data=str(tiny_data), out=str(out), **SETTINGS), progress=False)
    monkeypatch.setattr(fit_module, "_train_epoch", real)
    assert not (out / "metrics.json").exists()
    assert (out / "fold0" / "last.pt").exists() == (crash_at == 2)
    resumed = fit(FitConfig(data=str(tiny_data), out=str(out), **SETTINGS), progress=False)
    assert resumed["macro_f1"] == metrics["macro_f1"]
    for k in range(2):
        np.testing.assert_array_equal(np.load(out / f"fold{k}" / "oof.npy"), np.load(run / f"fold{k}" / "oof.npy"))


@pytest.mark.parametrize("point", ["staged", "last", "commit", "history", "oof", "single", "done"])
def test_a_kill_at_any_journal_write_resumes_to_the_uninterrupted_run(tiny_run, tiny_data, tmp_path, monkeypatch,
                                                                       point):
    # Each point is reached at least twice (every fold's first epoch is a new best); the kill
    # comes the second time an epoch point is reached, the first time a fold-end point is.
    run, metrics = tiny_run
    out = tmp_path / "killed"
    import train.fit as fit_module

    seen = []

    def kill(name):
        seen.append(name)
        if name == point and seen.count(name) == (2 if point in ("staged", "last", "commit", "history") else 1):
            raise KeyboardInterrupt

    def without_timing(history):
        return {**history, "epochs": [{k: v for k, v in e.items() if k != "train_images_per_s"} for e in history["epochs"]]}

    monkeypatch.setattr(fit_module, "journal_point", kill)
    with pytest.raises(KeyboardInterrupt):
        fit(FitConfig(data=str(tiny_data), out=str(out), **SETTINGS), progress=False)
    monkeypatch.undo()
    resumed = fit(FitConfig(data=str(tiny_data), out=str(out), **SETTINGS), progress=False)
    assert resumed == metrics
    assert (out / "oof.csv").read_text() == (run / "oof.csv").read_text()
    for k in range(2):
        history = json.loads((out / f"fold{k}" / "history.json").read_text())
        assert without_timing(history) == without_timing(json.loads((run / f"fold{k}" / "history.json").read_text()))
        assert not list((out / f"fold{k}").glob("best.e*"))
        assert torch.load(out / f"fold{k}" / "best.pt", weights_only=True)["epoch"] == history["best"]["epoch"]


def test_a_finished_fold_is_skipped(tiny_run, tiny_data):
    run, _ = tiny_run
    before = (run / "fold0" / "best.pt").read_bytes()
    fit(FitConfig(data=str(tiny_data), out=str(run), fold=(0,), **SETTINGS), progress=False)
    assert (run / "fold0" / "best.pt").read_bytes() == before


def test_other_settings_in_the_same_run_folder_are_refused(tiny_run, tiny_data):
    from runtime.errors import DataError

    run, _ = tiny_run
    with pytest.raises(DataError, match="other settings.*width"):
        fit(FitConfig(data=str(tiny_data), out=str(run), **dict(SETTINGS, width=16)), progress=False)


def test_bad_samples_are_listed_and_left_out(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("masks", "test"))
    ids = list(csv.DictReader(open(data / "train.csv")))
    (data / "train" / f"{ids[0]['Id']}_green.png").write_bytes(b"")
    (data / "train" / f"{ids[1]['Id']}_blue.png").unlink()
    metrics = fit(FitConfig(data=str(data), out=str(tmp_path / "run"), **dict(SETTINGS, epochs=1)), progress=False)
    assert metrics["images"] == 46
    errors = list(csv.DictReader(open(tmp_path / "run" / "errors.csv")))
    assert [e["Id"] for e in errors] == [ids[0]["Id"], ids[1]["Id"]]
    assert "empty file" in errors[0]["reason"] and "missing file" in errors[1]["reason"]


def test_cli_errors_are_one_line(tiny_data, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.csv").write_text("Id,Target\na,99\n")
    assert train_main(["fit", "--data", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "label 99 outside 0..27" in err and "\n" not in err


def test_broken_checkpoint_gives_a_clear_error(tmp_path):
    from runtime.errors import DataError

    path = tmp_path / "best.pt"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=r"not a readable checkpoint \(not a PyTorch checkpoint file\)$"):
        load_checkpoint(path)
    torch.save({"model": Fraction(1, 3)}, path)  # a pickled class weights_only never loads
    with pytest.raises(DataError, match=r"not a readable checkpoint \(it holds Python objects other than tensors"):
        load_checkpoint(path)
    path.write_bytes(open(path, "rb").read()[:200])  # a truncated zip
    with pytest.raises(DataError, match="not a readable checkpoint: damaged, or not a PyTorch file"):
        load_checkpoint(path)
    with pytest.raises(DataError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_merge_rebuilds_the_same_metrics(tiny_run):
    run, metrics = tiny_run
    assert merge(run)["macro_f1"] == metrics["macro_f1"]
