"""Hostile paths: FIFOs, sockets, folders and device links where a file is expected, a sparse
multi-gigabyte channel file, an Id too long for a file name, upper-case extensions, infinite
numbers as arguments. Every command runs in a child process under a hard timeout (a hang is a
failure), and each case asserts the exit status, the one ``error:`` line (or errors.csv row)
naming the file and the reason, and that every good sample's result equals a clean run's."""

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.reader import ImageFolder

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("red", "green", "blue", "yellow")
OUTPUTS = ("submission.csv", "probabilities.csv", "errors.csv")
TIMEOUT = 60          # seconds: any command here finishes in a few; one that waits on a FIFO never does
FIT_TIMEOUT = 240     # the one real training run (2 folds x 1 epoch on 48 tiny fields), on a shared CPU
SPARSE_BYTES = 2 * 2 ** 30


@dataclass
class Result:
    code: int
    out: str
    err: str
    peak_rss: int  # bytes: the command's own peak resident memory (os.wait4)


# Runs the command as its own child and reports that child's peak RSS: measured from the test
# process itself, a child's peak would include the copy of pytest's memory it held between fork
# and exec (Linux keeps the larger figure across exec).
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss * 1024))
sys.exit(proc.returncode if proc.returncode >= 0 else 128 - proc.returncode)
"""


def run_cli(args, timeout=TIMEOUT):
    """``python ARGS`` in a child process; one still running after ``timeout`` is killed (with its
    process group) and the test fails as a hang."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
    with tempfile.TemporaryDirectory() as tmp:
        out, err, rss = (Path(tmp) / name for name in ("out", "err", "rss"))
        with open(out, "wb") as out_f, open(err, "wb") as err_f:
            proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, rss, sys.executable, *map(str, args)],
                                    stdout=out_f, stderr=err_f, env=env, cwd=ROOT, start_new_session=True)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
                pytest.fail(f"hung: {' '.join(map(str, args))} still running after {timeout} s")
        return Result(code, out.read_text("utf-8", "replace"), err.read_text("utf-8", "replace"),
                      int(rss.read_text()))


def assert_refused(result, *names):
    """Exit 2, exactly one ``error:`` line on stderr containing every one of ``names``, no traceback."""
    lines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert result.code == 2, result.err[-2000:]
    assert "Traceback" not in result.err, result.err[-2000:]
    assert len(lines) == 1, result.err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])


def rows(path):
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))[1:]


# ---------------------------------------------------------------- paths that are not regular files

def _make_socket(path):
    # AF_UNIX paths are limited to ~108 bytes and pytest's are longer: bind in a short folder, move.
    short = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(short / "s"))
        os.rename(short / "s", path)
    finally:
        sock.close()
        shutil.rmtree(short)


def _make_fifo_link(path):
    os.mkfifo(path.parent / f"{path.name}.fifo")
    path.symlink_to(f"{path.name}.fifo")  # a relative link inside the folder: followed, then refused


def _make_char_device(path):
    """A character device with /dev/zero's numbers (reads never end), made where the test runs."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.stat("/dev/zero").st_rdev)
    except PermissionError:
        pytest.skip("making a device file needs CAP_MKNOD")


SPECIAL = {  # kind: (maker, what the one line says when it stands where a CSV file is expected)
    "fifo": (os.mkfifo, "not a regular file (a FIFO)"),
    "socket": (_make_socket, "not a regular file (a socket)"),
    "folder": (os.mkdir, "is a folder"),
    "char-device": (_make_char_device, "not a regular file (a character device)"),
    "link-to-dev-zero": (lambda p: p.symlink_to("/dev/zero"), "not a regular file (a character device)"),
}
# The same kinds as a channel file: that sample's errors.csv row. A link to /dev/zero leads out of
# the image folder, so the symlink policy refuses it before anything else.
CHANNEL_REASONS = {"fifo": "not a regular file (a FIFO)", "socket": "not a regular file (a socket)",
                   "folder": "not a regular file (a folder)", "char-device": "not a regular file (a character device)",
                   "link-to-dev-zero": "outside the image folder",
                   "link-to-fifo-inside": "not a regular file (a FIFO)"}
CHANNEL_MAKERS = {**{k: v[0] for k, v in SPECIAL.items()}, "link-to-fifo-inside": _make_fifo_link}


def special(kind, path):
    path = Path(path)
    if path.exists() or path.is_symlink():
        path.unlink()
    CHANNEL_MAKERS[kind](path)
    return path


def clone(folder, src, new, suffixes=(".png",) * 4):
    for ch, suffix in zip(CHANNELS, suffixes):
        shutil.copy(folder / f"{src}_{ch}.png", folder / f"{new}_{ch}{suffix}")


# ---------------------------------------------------------------- one infer run over every hostile channel file

NON_UTF8_SHOWN = "bad\\xff"  # how errors.csv lists the Id of files named b"bad\xff_red.png"...
LONG_ID = "a" * 300  # a safe Id whose file names the OS refuses (ENAMETOOLONG)
CASE_SAMPLES = {  # Id: the upper/mixed-case spellings of its four files
    "upper-all": (".PNG",) * 4,
    "upper-mixed": (".Png", ".pNG", ".PNG", ".png"),
}


@pytest.fixture(scope="module")
def mixed(tiny_data, tiny_deploy, tmp_path_factory):
    """The held-out images, plus a clone of one sample per hostile channel file, an upper-case
    clone and a sparse 2 GB channel file; inferred once (folder scan) and once with an --ids CSV
    that also lists LONG_ID. The clean run: the untouched images."""
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "images"
    shutil.copytree(tiny_data / "test", folder)
    good = ImageFolder(folder).ids()
    src = good[0]
    expect = {}
    skipped = set()
    for kind, reason in CHANNEL_REASONS.items():
        sample_id = f"hostile-{kind}"
        clone(folder, src, sample_id)
        try:
            special(kind, folder / f"{sample_id}_red.png")
        except pytest.skip.Exception:
            shutil.copy(folder / f"{src}_red.png", folder / f"{sample_id}_red.png")  # a good clone then
            skipped.add(sample_id)
            continue
        expect[sample_id] = (f"{sample_id}_red.png", reason)
    clone(folder, src, "sparse")
    os.truncate(folder / "sparse_green.png", SPARSE_BYTES)  # a PNG header, then 2 GB never written
    expect["sparse"] = ("sparse_green.png", f"{SPARSE_BYTES} bytes is more than a 64x64 image can hold")
    for sample_id, suffixes in CASE_SAMPLES.items():
        clone(folder, src, sample_id, suffixes)
    for ch in CHANNELS:  # a file name that is not UTF-8: listed (its bytes escaped), never a crash
        shutil.copy(folder / f"{src}_{ch}.png", os.path.join(os.fsencode(folder), b"bad\xff_%s.png" % ch.encode()))
    clone(folder, src, "both-cases")  # x_red.png and x_red.PNG: the lower-case file is read
    (folder / "both-cases_red.PNG").write_bytes(b"not an image")
    base = ["-m", "runtime", "infer", "--model", tiny_deploy[0], "--tta", "1", "--batch-size", "4",
            "--precision", "fp32", "--workers", "2"]
    ids = root / "ids.csv"
    ids.write_text("Id\n" + "".join(f"{i}\n" for i in [*good, LONG_ID, *expect, *CASE_SAMPLES, "both-cases"]))
    return {"root": root, "good": good, "src": src, "expect": expect, "skipped": skipped,
            "clean": run_cli([*base, "--images", tiny_data / "test", "--out", root / "clean"]),
            "scan": run_cli([*base, "--images", folder, "--out", root / "scan"]),
            "ids": run_cli([*base, "--images", folder, "--ids", ids, "--out", root / "ids"])}


@pytest.mark.parametrize("mode", ["scan", "ids"])
@pytest.mark.parametrize("sample_id", [*[f"hostile-{k}" for k in CHANNEL_REASONS], "sparse"])
def test_hostile_channel_file_is_its_samples_one_line_row(mixed, mode, sample_id):
    if sample_id in mixed["skipped"]:
        pytest.skip("making a device file needs CAP_MKNOD")
    result = mixed[mode]
    assert result.code == 0 and "Traceback" not in result.err, result.err[-2000:]
    errors = {r[0]: r for r in rows(mixed["root"] / mode / "errors.csv")}
    file, reason = mixed["expect"][sample_id]
    _, path, got = errors[sample_id]
    assert path.endswith(file) and reason in got and "\n" not in got, (path, got)


@pytest.mark.parametrize("mode", ["scan", "ids"])
def test_good_samples_equal_the_clean_run(mixed, mode):
    assert mixed["clean"].code == 0, mixed["clean"].err[-2000:]
    for name in ("submission.csv", "probabilities.csv"):
        clean = rows(mixed["root"] / "clean" / name)
        got = {r[0]: r for r in rows(mixed["root"] / mode / name)}
        assert [got[r[0]] for r in clean] == clean and len(clean) == len(mixed["good"])
    bad = {r[0] for r in rows(mixed["root"] / mode / "errors.csv")}
    assert bad == set(mixed["expect"]) | ({LONG_ID} if mode == "ids" else {NON_UTF8_SHOWN})


def test_non_utf8_file_name_is_listed_not_fatal(mixed):
    result = mixed["scan"]
    assert result.code == 0, result.err[-2000:]
    _, path, reason = {r[0]: r for r in rows(mixed["root"] / "scan" / "errors.csv")}[NON_UTF8_SHOWN]
    assert "unsafe" in reason and path.endswith("images")
    assert sum("not UTF-8" in line for line in result.err.splitlines()) == 1


def test_sparse_file_is_refused_without_reading_it(mixed):
    # The whole run (onnxruntime, OpenCV, the model, 20 samples) stays far below the 2 GB file it
    # would hold if the file were read before its size is checked.
    assert mixed["scan"].peak_rss < SPARSE_BYTES / 4, mixed["scan"].peak_rss


def test_name_too_long_is_that_samples_row(mixed):
    result = mixed["ids"]
    assert result.code == 0, result.err[-2000:]
    _, path, reason = {r[0]: r for r in rows(mixed["root"] / "ids" / "errors.csv")}[LONG_ID]
    assert path.endswith(f"{LONG_ID}_red.png") and "File name too long" in reason
    assert [LONG_ID, ""] in rows(mixed["root"] / "ids" / "submission.csv")  # Kaggle still gets its row


@pytest.mark.parametrize("mode", ["scan", "ids"])
@pytest.mark.parametrize("sample_id", [*CASE_SAMPLES, "both-cases"])
def test_upper_case_extensions_are_read(mixed, mode, sample_id):
    # A clone of src's pixels under other spellings: the same probabilities as src.
    probs = {r[0]: r[1:] for r in rows(mixed["root"] / mode / "probabilities.csv")}
    assert probs[sample_id] == probs[mixed["src"]]


def test_lookup_takes_lower_case_first_and_agrees_with_the_scan(tmp_path):
    from runtime.reader import SUFFIXES, find_channel_file

    assert SUFFIXES[:2] == (".png", ".PNG") and len(set(SUFFIXES)) == len(SUFFIXES) == 56
    for name in ("x_red.TIFF", "x_red.Jpg", "x_red.tif"):
        (tmp_path / name).write_bytes(b"")
    assert find_channel_file(tmp_path, "x", "red").name == "x_red.Jpg"  # jpg comes before tif
    (tmp_path / "x_red.PnG").write_bytes(b"")
    assert find_channel_file(tmp_path, "x", "red").name == "x_red.PnG"
    assert ImageFolder(tmp_path).listing() == ([], {"x": "missing green, blue, yellow"})


def test_tiff_header_that_would_read_a_gigabyte_is_refused_unread(tmp_path):
    """A TIFF whose directory claims a 1 GB tag, in a sparse file: the header parser gets at most
    HEADER_BUDGET bytes, so the tag is never read."""
    import struct
    import tracemalloc

    from runtime.errors import DataError
    from runtime.reader import HEADER_BUDGET, decode_channel

    entries = [(256, 4, 1, 64), (257, 4, 1, 64), (270, 2, 2 ** 30, 64)]  # width, height, a 1 GB description
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
    path = tmp_path / "x_red.tif"
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd)
    os.truncate(path, 2 ** 30 + 128)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=f"needs more than {HEADER_BUDGET} bytes; not read"):
            decode_channel(path)
        assert tracemalloc.get_traced_memory()[1] < 4 * HEADER_BUDGET
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------- CSV inputs that are not regular files

@pytest.fixture(scope="module")
def clean_out(tiny_data, tiny_deploy, tmp_path_factory):
    """A finished run's outputs: a refused command must leave them as they were."""
    out = tmp_path_factory.mktemp("clean-out") / "out"
    result = run_cli(["-m", "runtime", "infer", "--model", tiny_deploy[0], "--images", tiny_data / "test",
                      "--tta", "1", "--precision", "fp32", "--out", out])
    assert result.code == 0, result.err[-2000:]
    return out


def _refused_infer_keeps_outputs(clean_out, tmp_path, args, *names):
    out = tmp_path / "out"
    shutil.copytree(clean_out, out)
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    assert_refused(run_cli(["-m", "runtime", "infer", "--tta", "1", "--precision", "fp32", "--out", out, *args]),
                   *names)
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before


@pytest.mark.parametrize("kind", SPECIAL)
def test_ids_csv_that_is_not_a_file(kind, tiny_data, tiny_deploy, clean_out, tmp_path):
    ids = special(kind, tmp_path / "ids.csv")
    _refused_infer_keeps_outputs(clean_out, tmp_path, ["--model", tiny_deploy[0], "--images", tiny_data / "test",
                                                       "--ids", ids], ids, SPECIAL[kind][1])


@pytest.mark.parametrize("kind", SPECIAL)
def test_manifest_that_is_not_a_file(kind, tiny_data, tiny_deploy, clean_out, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(tiny_data / "test", folder)
    manifest = special(kind, folder / "manifest.csv")
    _refused_infer_keeps_outputs(clean_out, tmp_path, ["--model", tiny_deploy[0], "--images", folder],
                                 manifest, SPECIAL[kind][1])


FIT = ["--folds", "2", "--width", "8", "--size", "32", "--epochs", "1", "--batch-size", "8", "--tta", "1",
       "--threads", "1", "--device", "cpu"]


@pytest.mark.parametrize("kind", SPECIAL)
def test_train_csv_that_is_not_a_file(kind, tiny_data, tmp_path):
    labels = special(kind, tmp_path / "train.csv")
    result = run_cli(["-m", "train", "fit", "--data", tiny_data, "--labels", labels, "--out", tmp_path / "run", *FIT])
    assert_refused(result, labels, SPECIAL[kind][1])


def test_fit_leaves_out_hostile_channel_files_with_their_reason(tiny_data, tmp_path):
    """``train fit`` decodes every labelled sample: each hostile one is left out and listed in
    RUN/errors.csv with its reason, and the run finishes."""
    folder = tmp_path / "train"
    shutil.copytree(tiny_data / "train", folder)
    table = (tiny_data / "train.csv").read_text().splitlines()
    src, target = table[1].split(",")
    expect = {}
    for kind, reason in CHANNEL_REASONS.items():
        clone(folder, src, f"hostile-{kind}")
        try:
            special(kind, folder / f"hostile-{kind}_blue.png")
        except pytest.skip.Exception:  # no device file here: leave that sample out
            for ch in CHANNELS:
                (folder / f"hostile-{kind}_{ch}.png").unlink(missing_ok=True)
            continue
        expect[f"hostile-{kind}"] = (f"hostile-{kind}_blue.png", reason)
    clone(folder, src, "sparse")
    os.truncate(folder / "sparse_yellow.png", SPARSE_BYTES)
    expect["sparse"] = ("sparse_yellow.png", "bytes is more than a 64x64 image can hold")
    expect[LONG_ID] = (f"{LONG_ID}_red.png", "File name too long")
    labels = tmp_path / "train.csv"
    labels.write_text("\n".join([*table, *(f"{i},{target}" for i in expect)]) + "\n")
    result = run_cli(["-m", "train", "fit", "--data", tiny_data, "--labels", labels, "--images", folder,
                      "--out", tmp_path / "run", *FIT], timeout=FIT_TIMEOUT)
    assert result.code == 0 and "Traceback" not in result.err, result.err[-3000:]
    listed = {r[0]: r for r in rows(tmp_path / "run" / "errors.csv")}
    assert set(listed) == set(expect)
    for sample_id, (file, reason) in expect.items():
        assert listed[sample_id][1].endswith(file) and reason in listed[sample_id][2], listed[sample_id]


# ---------------------------------------------------------------- numbers no option means

ARGS = {  # name: (argv after python, the option the one line names, what it says)
    "bench-seconds-inf": (["-m", "runtime", "bench", "--model", "M", "--seconds", "inf"], "--seconds", "finite"),
    "bench-seconds-nan": (["-m", "runtime", "bench", "--model", "M", "--seconds", "nan"], "--seconds", "finite"),
    "bench-seconds-1e400": (["-m", "runtime", "bench", "--model", "M", "--seconds", "1e400"], "--seconds", "finite"),
    "bench-seconds-1e9": (["-m", "runtime", "bench", "--model", "M", "--seconds", "1e9"], "--seconds", "at most 600"),
    "bench-plan-over-an-hour": (["-m", "runtime", "bench", "--model", "M", "--backend", "onnxruntime:fp32",
                                 "--batch-sizes", "1,2,4,8,16,32,64", "--seconds", "600"], "--seconds",
                                "limited to 3600 s"),
    "int8-ceiling-seconds-1e9": (["-m", "export", "int8-ceiling", "--seconds", "1e9"], "--seconds", "at most 600"),
    "gpu-check-seconds-inf": (["-m", "runtime", "gpu-check", "--out", "OUT", "--seconds", "inf"], "--seconds",
                              "finite"),
    "export-max-f1-drop-nan": (["-m", "export", "onnx", "--run", "RUN", "--out", "OUT", "--max-f1-drop", "nan"],
                               "--max-f1-drop", "finite"),
    "export-max-f1-drop-inf": (["-m", "export", "onnx", "--run", "RUN", "--out", "OUT", "--max-f1-drop", "inf"],
                               "--max-f1-drop", "finite"),
    "export-max-f1-drop--inf": (["-m", "export", "onnx", "--run", "RUN", "--out", "OUT", "--max-f1-drop=-inf"],
                                "--max-f1-drop", "finite"),
    "export-int8-levers-seconds-inf": (["-m", "export", "int8-levers", "--onnx", "X", "--run", "RUN",
                                        "--seconds", "inf"], "--seconds", "finite"),
    "fit-lr-inf": (["-m", "train", "fit", "--data", "D", "--out", "R", "--lr", "inf"], "--lr", "finite"),
    "fit-alpha-inf": (["-m", "train", "fit", "--data", "D", "--out", "R", "--alpha", "0.25,inf"], "--alpha", "finite"),
    "fit-alpha-nan": (["-m", "train", "fit", "--data", "D", "--out", "R", "--alpha", "nan"], "--alpha", "finite"),
}


@pytest.mark.parametrize("name", ARGS)
def test_infinite_numbers_are_refused_in_one_line(name, tiny_deploy, tmp_path):
    argv, option, says = ARGS[name]
    argv = [str(tiny_deploy[0]) if a == "M" else str(tmp_path / a) if a in ("OUT", "RUN", "D", "R", "X") else a
            for a in argv]
    result = run_cli(argv)
    assert_refused(result, option, says)
    assert not (tmp_path / "OUT").exists() and not (tmp_path / "R").exists()


@pytest.mark.parametrize("script", ["bench_reader_checks.py", "bench_train.py", "split_dataset.py",
                                    "merge_dataset.py"])
def test_scripts_help(script):
    result = run_cli([ROOT / "scripts" / script, "--help"])
    assert result.code == 0 and result.out.startswith("usage:") and not result.err, result.err


def test_bench_reader_checks_skips_a_fifo_and_refuses_a_bad_count(tiny_data, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(tiny_data / "test", folder)
    os.mkfifo(folder / "a-fifo_red.png")
    result = run_cli([ROOT / "scripts" / "bench_reader_checks.py", "--repeats", "1", folder])
    files = len([n for n in os.listdir(tiny_data / "test") if n.endswith(".png")])
    assert result.code == 0 and f"{folder}: {files} files;" in result.out, result.err
    assert_refused(run_cli([ROOT / "scripts" / "bench_reader_checks.py", "--limit", "0", folder]), "--limit")
