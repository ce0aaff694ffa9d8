"""Output folders against a hostile user: one writer per folder, the last good outputs kept through a
failed rerun, every setting that changes a result compared on --resume and merge, a killed run's
temporary files cleaned, and a file name that is not UTF-8 kept to its own errors.csv row."""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.__main__ import main
from runtime.model_spec import sha256_of

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("submission.csv", "probabilities.csv", "errors.csv", "summary.json")
CHANNELS = ("red", "green", "blue", "yellow")


def infer_args(model, images, out, *extra):
    # fp32 on ONNX Runtime: no speed probe, the same file on every machine
    return ["infer", "--model", str(model), "--images", str(images), "--out", str(out), "--backend", "onnxruntime",
            "--precision", "fp32", "--tta", "1", "--batch-size", "2", *extra]


@pytest.fixture
def infer(tiny_data, tiny_deploy):
    def run(out, *extra, images=None, model=None):
        return main(infer_args(model or tiny_deploy[0], images or tiny_data / "test", out, *extra))

    return run


def files(folder):
    """Every file below ``folder`` with its bytes (the journal and hidden files included)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def outputs(folder):
    return {name: (Path(folder) / name).read_bytes() for name in OUTPUTS}


def error_line(capsys):
    """The one ``error:`` line of a refused command (and no traceback); a progress bar may stand
    before it on its terminal line."""
    err = capsys.readouterr().err
    lines = [line[line.index("error: "):] for line in err.splitlines() if "error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def samples(folder):
    return sorted({p.name.rsplit("_", 1)[0] for p in Path(folder).glob("*.png")})


def many(src, folder, n):
    """``folder`` with ``n`` samples: the samples of ``src`` and links to them (inside the folder)."""
    folder.mkdir()
    names = samples(src)
    for ch in CHANNELS:
        for s in names:
            shutil.copy(src / f"{s}_{ch}.png", folder / f"{s}_{ch}.png")
        for k in range(n - len(names)):
            (folder / f"copy{k:05d}_{ch}.png").symlink_to(f"{names[k % len(names)]}_{ch}.png")
    return folder


def spawn_holder(folder):
    """A real process holding ``folder``'s writer lock until it is killed; returns it once it holds."""
    code = ("import sys, time\nfrom runtime.outlock import writer_lock\n"
            f"with writer_lock({str(folder)!r}):\n    print('held', flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def kill_9(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


# --- one writer per output folder -------------------------------------------------------------

def test_a_second_infer_is_refused_while_the_first_runs_and_the_first_completes(tiny_data, tiny_deploy, tmp_path,
                                                                               capsys):
    # The hostile trial: two runs on one --out, the second started while the first writes. The
    # second (fresh, --resume, or a merge into that folder) is refused in one line naming the folder
    # and the first's pid, removes none of its journal, and the first finishes every row.
    folder = many(tiny_data / "test", tmp_path / "images", 1200)
    out = tmp_path / "out"
    args = infer_args(tiny_deploy[0], folder, out, "--batch-size", "1", "--workers", "1")
    with open(tmp_path / "first.log", "w") as log:  # (a pipe would fill up with its progress bar)
        first = subprocess.Popen([sys.executable, "-m", "runtime", *args], cwd=ROOT, stdout=log, stderr=log)
    try:
        chunk = out / ".chunks" / "chunk-000000.csv"
        deadline = time.monotonic() + 120
        while not chunk.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert chunk.exists() and first.poll() is None, "the first run should be writing by now"
        def finished_chunks():  # an atomic write's hidden .tmp file comes and goes while the first runs
            return {f for f in (out / ".chunks").iterdir() if not f.name.startswith(".")}

        journal = finished_chunks()
        refusal = f"error: {out}: another process (pid {first.pid}) is writing to this folder"
        for argv in (args, [*args, "--resume"],
                     ["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(out), "--images", str(folder)]):
            assert main(argv) == 2
            assert error_line(capsys).startswith(refusal)
            assert journal <= finished_chunks()  # nothing of the first's work removed
        assert first.poll() is None, "the refusals must have been tried while the first run was writing"
        assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-2000:]
    finally:
        if first.poll() is None:
            kill_9(first)
    with open(out / "submission.csv", newline="", encoding="utf-8") as handle:
        assert len(list(csv.reader(handle))) == 1 + 1200
    assert json.loads((out / "summary.json").read_text())["done"] == 1200
    assert not (out / ".lock").exists()  # a finished run leaves the folder as it found it


@pytest.mark.parametrize("command", ["infer", "infer --resume", "merge", "train fit", "train fit --fold 0",
                                     "export onnx"])
def test_every_writer_is_refused_on_a_held_folder_and_the_lock_dies_with_its_holder(
        command, infer, tiny_data, tiny_deploy, tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert infer(out) == 0
    before = files(out)
    holder = spawn_holder(out)
    try:
        argv = {"infer": infer_args(tiny_deploy[0], tiny_data / "test", out),
                "infer --resume": infer_args(tiny_deploy[0], tiny_data / "test", out, "--resume"),
                "merge": ["merge", str(out), "--out", str(out), "--images", str(tiny_data / "test")],
                "train fit": ["fit", "--data", str(tiny_data), "--out", str(out), "--folds", "2", "--epochs", "1"],
                "train fit --fold 0": ["fit", "--data", str(tiny_data), "--out", str(out), "--folds", "2",
                                       "--fold", "0", "--epochs", "1"],
                "export onnx": ["onnx", "--run", str(tiny_run[0]), "--out", str(out)]}[command]
        if command.startswith("train"):
            from train.__main__ import main as entry
        elif command.startswith("export"):
            from export.__main__ import main as entry
        else:
            entry = main
        assert entry(argv) == 2
        assert error_line(capsys) == (f"error: {out}: another process (pid {holder.pid}) is writing to this folder; "
                                      "wait for it to finish or choose another --out")
        assert files(out) == before | {Path(".lock"): f"{holder.pid}\n".encode()}  # nothing changed
    finally:
        kill_9(holder)
    # kill -9 released the lock: the next run goes on, and the stale lock file is reused
    assert (out / ".lock").exists()
    assert infer(out) == 0
    assert not (out / ".lock").exists()


def test_fold_jobs_share_a_run_folder_but_not_a_fold(tmp_path):
    # train fit --fold k jobs write one run folder side by side; the same fold twice, or a whole
    # run beside them, is refused.
    from runtime.errors import DataError
    from runtime.outlock import run_folder_lock

    run = tmp_path / "run"
    code = ("import sys, time\nfrom runtime.outlock import run_folder_lock\n"
            f"with run_folder_lock({str(run)!r}, (1,)):\n    print('held', flush=True)\n    time.sleep(600)\n")
    job = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "held"
        with run_folder_lock(run, (0, 2)):  # other folds: side by side
            pass
        with pytest.raises(DataError, match=rf"another process \(pid {job.pid}\) is writing fold 1 of this run"):
            with run_folder_lock(run, (1,)):
                pass
        with pytest.raises(DataError, match=r"is writing to this folder"):
            with run_folder_lock(run):
                pass
    finally:
        kill_9(job)
    with run_folder_lock(run):
        pass


# --- a failed rerun keeps the last good outputs -----------------------------------------------

def onnx_with_classes(path, size, classes):
    """A valid ONNX graph with model.json's input (the uint8 image) that returns (N, ``classes``) 'probs'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((4 * size * size, classes), 1e-3, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
         helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["probs"])], "wrong_classes",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", 4, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def deploy_copy(tiny_deploy, folder, edit=None):
    """A copy of the deployment folder; ``edit(data)`` changes its model.json."""
    shutil.copytree(tiny_deploy[0], folder)
    if edit:
        data = json.loads((folder / "model.json").read_text())
        edit(folder, data)
        (folder / "model.json").write_text(json.dumps(data, indent=2))
    return folder


def wrong_classes(folder, data):
    onnx_with_classes(folder / "ensemble.onnx", data["preprocess"]["size"], 27)
    next(f for f in data["files"] if f["path"] == "ensemble.onnx")["sha256"] = sha256_of(folder / "ensemble.onnx")


def fail_on_call(n, error):
    """An ONNX Runtime _infer that raises ``error`` on its n-th call (mid-run, after chunks)."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    real, calls = OnnxRuntimeBackend._infer, []

    def _infer(self, batch):
        calls.append(1)
        if len(calls) == n:
            raise error
        return real(self, batch)

    return _infer


@pytest.mark.parametrize("failure", ["bad --ids", "model returns 27 classes", "exception mid-run", "Ctrl-C mid-run"])
def test_a_failed_rerun_keeps_the_last_good_outputs_byte_identical(failure, infer, tiny_data, tiny_deploy, tmp_path,
                                                                   capsys, monkeypatch):
    out = tmp_path / "out"
    assert infer(out, "--batch-size", "1") == 0
    good = outputs(out)
    capsys.readouterr()
    if failure == "bad --ids":
        (tmp_path / "ids.csv").write_text("Id\n../etc/passwd\n")
        assert infer(out, "--ids", str(tmp_path / "ids.csv")) == 2
        assert error_line(capsys).startswith(f"error: {tmp_path / 'ids.csv'} line 2: unsafe")
    elif failure == "model returns 27 classes":
        model = deploy_copy(tiny_deploy, tmp_path / "deploy", wrong_classes)
        assert infer(out, model=model) == 2
        assert error_line(capsys) == (f"error: {model / 'ensemble.onnx'}: the model returned (2, 27) for a batch of "
                                      "2, expected (2, 28): one probability per class")
    else:
        from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        error = RuntimeError("injected") if failure == "exception mid-run" else KeyboardInterrupt()
        monkeypatch.setattr(OnnxRuntimeBackend, "_infer", fail_on_call(5, error))
        if failure == "exception mid-run":  # a bug, not a user's error: it keeps its traceback
            with pytest.raises(RuntimeError, match="injected"):
                infer(out, "--batch-size", "1")
        else:
            assert infer(out, "--batch-size", "1") == 130
            assert error_line(capsys).startswith("error: interrupted")
        assert (out / ".chunks" / "chunk-000000.csv").exists()  # it failed mid-run, after journaling
    assert outputs(out) == good
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()


def test_a_model_output_that_is_not_n_by_28_is_refused_naming_the_model_file(tiny_deploy, tmp_path):
    from runtime.backends import make_backend
    from runtime.errors import DataError
    from runtime.model_spec import load_model_spec

    model = deploy_copy(tiny_deploy, tmp_path / "deploy", wrong_classes)
    with make_backend(load_model_spec(model), "onnxruntime", precision="fp32") as backend:
        x = np.zeros((3, 4, backend.spec.preprocess.size, backend.spec.preprocess.size), np.uint8)
        for call in (backend.infer, lambda b: backend.predict(b, 2)):
            with pytest.raises(DataError, match=r"returned \(3, 27\) for a batch of 3") as err:
                call(x)
            assert err.value.path == str(model / "ensemble.onnx")


# --- every setting that changes a result is compared ------------------------------------------

def other_folder(tiny_data, tmp_path):
    """A copy of the test folder: the same Ids, another folder, one of whose images is another
    (re-written: its modification time differs)."""
    copy = shutil.copytree(tiny_data / "test", tmp_path / "copy")
    touch_one(copy)
    return copy


def touch_one(folder):
    """Give one channel file of ``folder`` another modification time, as re-writing it would."""
    first = sorted(folder.glob("*_green.png"))[0]
    st = first.stat()
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))


def edit_preprocess(folder, data):
    data["preprocess"]["mean"] = [m + 0.05 for m in data["preprocess"]["mean"]]


# (first run's extra arguments, resumed run's, environment of the first run, setting named)
RESUMES = {
    "images folder": ((), ("--images", "COPY"), {}, "images "),
    "images replaced": ((), ("--images", "COPY"), {}, "images_content "),  # first run on COPY too
    "max-pixels flag": (("--max-pixels", "100"), (), {}, "max_pixels 100 -> 67108864"),
    "HPA_MAX_PIXELS": ((), (), {"HPA_MAX_PIXELS": "100"}, "max_pixels 100 -> 67108864"),
    "model.json preprocess": ((), ("--model", "EDITED"), {}, "model.json "),
    "views": ((), ("--tta", "2"), {}, "views 1 -> 2"),
    "thresholds": ((), ("--threshold-mode", "0.5"), {}, "thresholds (28 values) -> (28 values)"),
}


@pytest.mark.parametrize("case", RESUMES)
def test_resume_with_another_setting_is_refused_naming_it(case, tiny_data, tiny_deploy, tmp_path, capsys,
                                                          monkeypatch):
    first, resumed, env, named = RESUMES[case]
    model = deploy_copy(tiny_deploy, tmp_path / "deploy")
    copy = other_folder(tiny_data, tmp_path)
    out = tmp_path / "out"
    images = copy if case == "images replaced" else tiny_data / "test"
    with monkeypatch.context() as m:
        for key, value in env.items():
            m.setenv(key, value)
        assert main(infer_args(model, images, out, *first)) == 0
    if case == "images replaced":  # the same folder, an image re-written since the first run
        touch_one(copy)
    if case == "model.json preprocess":  # the same file and checkpoints, another preprocessing
        data = json.loads((model / "model.json").read_text())
        edit_preprocess(model, data)
        (model / "model.json").write_text(json.dumps(data, indent=2))
    chunks = sorted((out / ".chunks").glob("chunk-*.csv"))
    if len(chunks) > 1:  # (every sample an error under a tiny limit: one chunk)
        chunks[-1].unlink()  # as if killed before the last chunk
    before = files(out)
    capsys.readouterr()
    argv = infer_args(model, images, out, "--resume", *resumed)
    assert main([str(copy) if a == "COPY" else str(model) if a == "EDITED" else a for a in argv]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {out / '.chunks' / 'settings.json'}: --resume with other settings than the "
                           "interrupted run (")
    assert named in line
    if case == "images folder":
        assert f"images {os.path.realpath(tiny_data / 'test')} -> {os.path.realpath(copy)}" in line
    if case == "images replaced":
        assert "images " + os.path.realpath(copy) not in line  # the same path; only the content differs
    assert files(out) == before  # the journal and the outputs as they were


def test_merge_refuses_shards_made_from_different_image_folders(infer, tiny_data, tmp_path, capsys):
    copy = other_folder(tiny_data, tmp_path)
    assert infer(tmp_path / "s0", "--shard", "0/2") == 0
    assert infer(tmp_path / "s1", "--shard", "1/2", images=copy) == 0
    assert infer(tmp_path / "s1-same", "--shard", "1/2") == 0
    capsys.readouterr()
    merge = ["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m"),
             "--images", str(tiny_data / "test")]
    assert main(merge) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {tmp_path / 's1' / 'summary.json'}: made with other settings than "
                           f"{tmp_path / 's0'} (")
    assert f"images {os.path.realpath(tiny_data / 'test')} -> {os.path.realpath(copy)}" in line
    assert "images_content" in line and not (tmp_path / "m").exists()
    merge[2] = str(tmp_path / "s1-same")  # the shards of one run merge into the unsharded files
    assert main(merge) == 0
    assert infer(tmp_path / "whole") == 0
    for name in OUTPUTS[:3]:
        assert (tmp_path / "m" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


# --- a killed run's temporary files -----------------------------------------------------------

def test_stale_temporaries_of_a_killed_run_are_removed_by_the_next_holder(infer, tmp_path):
    out = tmp_path / "out"
    assert infer(out) == 0
    ours = [out / ".submission.csv.k2m_9x0a.tmp", out / ".summary.json.abcdefgh.tmp",
            out / ".chunks" / ".chunk-000003.csv.zz_00aa1.tmp"]
    theirs = [out / "notes.tmp", out / ".notes.tmp", out / "x.abcdefgh.tmp", out / ".keep.ABCDEFGH.tmp"]
    for path in ours + theirs:
        path.write_text("half-written")
    assert infer(out, "--resume") == 0
    assert not any(p.exists() for p in ours) and all(p.exists() for p in theirs)
    for path in ours:
        path.write_text("half-written")
    assert infer(out) == 0
    assert not any(p.exists() for p in ours) and all(p.exists() for p in theirs)


def test_kill_9_mid_run_leaves_no_temporary_file_once_the_next_run_holds_the_folder(tiny_data, tiny_deploy, tmp_path):
    # A real kill: the temporaries it leaves (if the kill hit a write) are gone after the next run,
    # and the last good outputs stayed in place throughout.
    folder = many(tiny_data / "test", tmp_path / "images", 400)
    out = tmp_path / "out"
    args = infer_args(tiny_deploy[0], folder, out, "--batch-size", "1", "--workers", "1")
    assert main([*args, "--shard", "0/40"]) == 0  # a small good run first: its outputs must survive
    good = outputs(out)
    proc = subprocess.Popen([sys.executable, "-m", "runtime", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    chunk = out / ".chunks" / "chunk-000002.csv"
    deadline = time.monotonic() + 120
    while not chunk.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    kill_9(proc)
    assert outputs(out) == good
    (out / ".chunks" / ".chunk-000009.csv.a1b2c3d4.tmp").write_text("as a kill mid-write leaves it")
    assert main([*args, "--resume"]) == 0
    assert not list(out.rglob("*.tmp"))
    assert json.loads((out / "summary.json").read_text())["done"] == 400


# --- a file name that is not UTF-8 ------------------------------------------------------------

def test_a_file_name_that_is_not_utf8_is_its_own_errors_row(infer, tiny_data, tmp_path, capsys):
    folder = shutil.copytree(tiny_data / "test", tmp_path / "images")
    src = samples(folder)[0]
    for ch in CHANNELS:  # a complete sample named by the single byte 0xff, and one with it inside
        for stem in (b"\xff", b"ok\xffname"):
            name = os.fsdecode(bytes(folder) + b"/" + stem + f"_{ch}.png".encode())
            try:
                shutil.copy(folder / f"{src}_{ch}.png", name)
            except OSError:
                pytest.skip("this file system refuses file names that are not UTF-8")
    assert infer(tmp_path / "clean") == 0
    assert infer(tmp_path / "out", images=folder) == 0
    out, clean = tmp_path / "out", tmp_path / "clean"
    for name in ("submission.csv", "probabilities.csv"):  # the unsafe Ids are in errors.csv only
        assert (out / name).read_bytes() == (clean / name).read_bytes()
    text = (out / "errors.csv").read_bytes().decode("utf-8")  # valid UTF-8 all through
    rows = list(csv.reader(io.StringIO(text)))
    clean_rows = list(csv.reader(io.StringIO((clean / "errors.csv").read_text(encoding="utf-8"))))
    assert rows[:len(clean_rows)] == clean_rows
    extra = rows[len(clean_rows):]
    assert sorted(r[0] for r in extra) == ["\\xff", "ok\\xffname"]
    assert all(len(r) == 3 and "unsafe" in r[2] for r in extra), extra
    # the journal keeps the name as it is: a resume finds every Id done and writes the same files
    first = outputs(out)
    assert infer(tmp_path / "out", "--resume", images=folder) == 0
    assert "nothing left to do" in capsys.readouterr().out
    assert {n: b for n, b in outputs(out).items() if n != "summary.json"} == \
           {n: b for n, b in first.items() if n != "summary.json"}
    # and the shards of such a folder merge
    for k in range(2):
        assert infer(tmp_path / f"s{k}", "--shard", f"{k}/2", images=folder) == 0
    assert main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m"),
                 "--images", str(folder)]) == 0
    for name in OUTPUTS[:3]:
        assert (tmp_path / "m" / name).read_bytes() == (out / name).read_bytes()
