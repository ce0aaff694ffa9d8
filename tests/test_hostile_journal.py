"""The files runs leave behind, against a hostile user: an inference journal, a shard's outputs and
summary, a run's JSON files and an output folder's lock, each damaged, huge, deeply nested or a
FIFO; and the folder and numbers a user mistypes. Each is one line naming the file (exit 2) and
leaves the last good outputs as they were, or, for a journal, is refused before anything is mixed."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.__main__ import main
from tests.test_hostile_outputs import OUTPUTS, error_line, files, infer_args, outputs

ROOT = Path(__file__).resolve().parents[1]
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def done(tiny_data, tiny_deploy, tmp_path):
    """A finished run's --out folder, and the arguments that made it."""
    out = tmp_path / "out"
    assert main(infer_args(tiny_deploy[0], tiny_data / "test", out)) == 0
    return out


@pytest.fixture
def shards(tiny_data, tiny_deploy, tmp_path):
    """The two shard folders of one run, and merge's arguments (into tmp_path/m)."""
    folders = [tmp_path / f"s{k}" for k in range(2)]
    for k, folder in enumerate(folders):
        assert main(infer_args(tiny_deploy[0], tiny_data / "test", folder, "--shard", f"{k}/2")) == 0
    return folders, ["merge", *map(str, folders), "--out", str(tmp_path / "m"), "--images", str(tiny_data / "test")]


def refused(argv, capsys, says, names):
    capsys.readouterr()
    assert main(argv) == 2
    line = error_line(capsys)
    assert says in line and str(names) in line, line
    return line


# ------------------------------------------------------------ an image folder with no samples

@pytest.mark.parametrize("where", ["data root", "empty folder"])
def test_a_folder_without_samples_is_refused_and_keeps_the_last_outputs(where, done, tiny_data, tiny_deploy,
                                                                        tmp_path, capsys):
    images = tiny_data if where == "data root" else tmp_path / "empty"
    images.mkdir(exist_ok=True)
    before = files(done)
    refused(infer_args(tiny_deploy[0], images, done), capsys, "no samples here", images)
    assert files(done) == before


# ------------------------------------------------------------ the journal

def interrupted(done):
    """``done`` as if killed before its last chunk: a --resume has work left."""
    chunks = sorted((done / ".chunks").glob("chunk-*.csv"))
    assert len(chunks) > 1
    chunks[-1].unlink()
    return chunks[0]


@pytest.mark.parametrize("value", ["1e400", "nan", "7.5", "-0.25"])
def test_a_journaled_probability_outside_0_1_is_a_damaged_chunk(value, done, tiny_data, tiny_deploy, capsys):
    chunk = interrupted(done)
    lines = chunk.read_text().splitlines()
    fields = lines[0].split(",")
    fields[4] = value
    chunk.write_text("\n".join([",".join(fields), *lines[1:]]) + "\n")
    before = outputs(done)
    refused(infer_args(tiny_deploy[0], tiny_data / "test", done, "--resume"), capsys, "damaged journal chunk", chunk)
    assert outputs(done) == before


@pytest.mark.parametrize("damage", ["fifo", "one huge line"])
def test_a_hostile_journal_chunk_is_refused_without_reading_it(damage, done, tiny_data, tiny_deploy, tmp_path):
    # a FIFO would block the read, a 2 GB line would be read whole: a child with a timeout
    chunk = interrupted(done)
    chunk.unlink()
    if damage == "fifo":
        os.mkfifo(chunk)
    else:
        with open(chunk, "wb") as handle:
            handle.truncate(2 << 30)  # sparse: no disk used
    argv = infer_args(tiny_deploy[0], tiny_data / "test", done, "--resume")
    proc = subprocess.run([sys.executable, "-m", "runtime", *argv], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = [line for line in proc.stderr.splitlines() if "error: " in line]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(chunk) in lines[0] and "damaged journal chunk" in lines[0], lines[0]


def test_a_deeply_nested_journal_settings_is_one_line(done, tiny_data, tiny_deploy, capsys):
    interrupted(done)
    settings = done / ".chunks" / "settings.json"
    settings.write_text(DEEP)
    refused(infer_args(tiny_deploy[0], tiny_data / "test", done, "--resume"), capsys, "nested too deeply", settings)


# ------------------------------------------------------------ a shard's files given to merge

@pytest.mark.parametrize("name,row,says", [
    ("submission.csv", 1, "label '1_0' is not a number"),
    ("submission.csv", 2, "3 fields, expected 2"),
    ("probabilities.csv", 1, "a probability outside 0..1"),
    ("probabilities.csv", 2, "a probability that is not a number"),
    ("errors.csv", 1, "4 fields, expected 3"),
])
def test_merge_refuses_a_shard_row_infer_never_writes(name, row, says, shards, capsys):
    folders, argv = shards
    path = folders[1] / name
    lines = path.read_text().splitlines()
    if name == "errors.csv":
        lines.append("x,a,b,c")
    else:
        head, _, tail = lines[1].partition(",")
        lines[1] = {("submission.csv", 1): f"{head},1_0", ("submission.csv", 2): f"{head},0,1",
                    ("probabilities.csv", 1): f"{head},1e400,{tail.partition(',')[2]}",
                    ("probabilities.csv", 2): f"{head},x,{tail.partition(',')[2]}"}[(name, row)]
    path.write_text("\n".join(lines) + "\n")
    line = refused(argv, capsys, says, path)
    assert "line" in line and not (Path(argv[-3])).exists()


@pytest.mark.parametrize("damage", ["summary fifo", "summary deep", "huge probabilities line"])
def test_merge_refuses_a_hostile_shard_file_without_reading_it(damage, shards, tmp_path):
    folders, argv = shards
    target = folders[1] / ("probabilities.csv" if damage.startswith("huge") else "summary.json")
    target.unlink()
    if damage == "summary fifo":
        os.mkfifo(target)
    elif damage == "summary deep":
        target.write_text(DEEP)
    else:
        with open(target, "wb") as handle:
            handle.truncate(2 << 30)
    proc = subprocess.run([sys.executable, "-m", "runtime", *argv], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = [line for line in proc.stderr.splitlines() if "error: " in line]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(target) in lines[0], lines[0]
    assert not (tmp_path / "m").exists()


def test_merge_into_one_of_its_shards_is_refused(shards, capsys):
    folders, argv = shards
    before = files(folders[0])
    argv[argv.index("--out") + 1] = str(folders[0])
    refused(argv, capsys, "--out is one of the shards", folders[0])
    assert files(folders[0]) == before


# ------------------------------------------------------------ an --ids CSV of one endless line

def test_an_ids_csv_of_one_huge_line_is_refused_unread(done, tiny_data, tiny_deploy, tmp_path):
    ids = tmp_path / "ids.csv"
    with open(ids, "wb") as handle:
        handle.truncate(2 << 30)
    argv = infer_args(tiny_deploy[0], tiny_data / "test", done, "--ids", str(ids))
    before = outputs(done)
    proc = subprocess.run([sys.executable, "-m", "runtime", *argv], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2 and proc.stderr.count("error: ") == 1, proc.stderr
    assert str(ids) in proc.stderr and "a line longer than" in proc.stderr
    assert outputs(done) == before


# ------------------------------------------------------------ a run's JSON files, the lock file

@pytest.mark.parametrize("name", ["config.json", "thresholds.json"])
def test_a_deeply_nested_run_file_is_one_line_to_export(name, tiny_run, tmp_path, capsys):
    from export.__main__ import main as export_main

    run = Path(shutil.copytree(tiny_run[0], tmp_path / "run"))
    (run / name).write_text(DEEP)
    assert export_main(["onnx", "--run", str(run), "--out", str(tmp_path / "deploy"), "--precision", "fp32"]) == 2
    line = error_line(capsys)
    assert f"{run / name}: not valid JSON (nested too deeply)" in line, line


def test_a_fifo_lock_file_is_named(done, tiny_data, tiny_deploy, capsys):
    for name in OUTPUTS:
        (done / name).unlink()
    os.mkfifo(done / ".lock")
    refused(infer_args(tiny_deploy[0], tiny_data / "test", done), capsys, "not a regular file (a FIFO)",
            done / ".lock")


# ------------------------------------------------------------ bench with nothing to read, or too much

def test_bench_on_a_folder_whose_samples_all_fail_is_one_line(tiny_data, tiny_deploy, capsys, monkeypatch):
    monkeypatch.setenv("HPA_MAX_PIXELS", "100")  # every channel over the decoded-size limit
    refused(["bench", "--model", str(tiny_deploy[0]), "--backend", "onnxruntime:fp32", "--batch-sizes", "1",
             "--seconds", "0.05", "--images", str(tiny_data / "test")], capsys, "samples can be read (first: ",
            tiny_data / "test")


def test_bench_refuses_a_batch_too_large_to_allocate(tiny_deploy, capsys):
    refused(["bench", "--model", str(tiny_deploy[0]), "--backend", "onnxruntime:fp32", "--batch-sizes", "100000000",
             "--seconds", "0.05"], capsys, "GiB a bench batch may take", "--batch-sizes")


# ------------------------------------------------------------ numbers in other scripts' digits

@pytest.mark.parametrize("argv_tail,option", [(["--batch-size", "1_0"], "--batch-size"),
                                              (["--workers", "٣"], "--workers"),
                                              (["--max-pixels", "１００"], "--max-pixels")])
def test_numbers_are_ascii_digits(argv_tail, option, tiny_data, tiny_deploy, tmp_path, capsys):
    argv = ["infer", "--model", str(tiny_deploy[0]), "--images", str(tiny_data / "test"),
            "--out", str(tmp_path / "o"), *argv_tail]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and option in err and "is not a whole number" in err, err


def test_an_ids_csv_with_an_unclosed_quote_is_refused(done, tiny_data, tiny_deploy, tmp_path, capsys):
    ids = tmp_path / "ids.csv"
    ids.write_text('Id\n"abc\n')  # csv would otherwise read the Id abc
    before = outputs(done)
    refused(infer_args(tiny_deploy[0], tiny_data / "test", done, "--ids", str(ids)), capsys, "unexpected end of data",
            ids)
    assert outputs(done) == before


def test_hpa_max_pixels_is_ascii_digits(tiny_data, tiny_deploy, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HPA_MAX_PIXELS", "1_000_000")
    refused(infer_args(tiny_deploy[0], tiny_data / "test", tmp_path / "o"), capsys, "must be a whole number",
            "HPA_MAX_PIXELS")


def test_the_journal_and_run_files_keep_their_good_results(done, tiny_data, tiny_deploy):
    # the checks above refuse; a clean --resume of an interrupted run still ends as a clean run
    first = outputs(done)
    interrupted(done)
    assert main(infer_args(tiny_deploy[0], tiny_data / "test", done, "--resume")) == 0
    assert outputs(done)["probabilities.csv"] == first["probabilities.csv"]
    assert json.loads(outputs(done)["summary.json"])["done"] == json.loads(first["summary.json"])["done"]
