"""The shared command-line handler: user-caused failures are one line, bugs keep their traceback."""

import csv
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.cli import ArgumentParser, dispatch, guarded, positive_int
from runtime.errors import DataError, about

ROOT = Path(__file__).resolve().parents[1]


def raises(err):
    def run(*_):
        raise err

    return run


def cv2_error():
    try:
        cv2.resize(np.zeros((4, 4), np.uint8), (-5, -5))
    except cv2.error as err:
        return err


def ort_error():
    import onnxruntime

    try:
        onnxruntime.InferenceSession(b"not a model")
    except Exception as err:  # onnxruntime's own exception type
        return err


def torch_errors():
    torch = pytest.importorskip("torch")
    return [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nadvice..."),
            RuntimeError("CUDA error: device-side assert triggered\nCUDA kernel errors might be...")]


@pytest.mark.parametrize("make, expected", [
    (lambda: DataError("a.csv line 3", "label 28 outside 0..27"), "a.csv line 3: label 28 outside 0..27"),
    (lambda: FileNotFoundError(2, "No such file or directory", "x/y.csv"), "x/y.csv: No such file or directory"),
    (lambda: IsADirectoryError(21, "Is a directory", "out"), "out: Is a directory"),
    (lambda: OSError(28, "No space left on device", "out/submission.csv"), "out/submission.csv: No space left on device"),
    (lambda: csv.Error("field larger than field limit (131072)"), "malformed CSV (field larger than field limit"),
    (lambda: pickle.UnpicklingError("Weights only load failed.\nlong advice"), "not a loadable checkpoint"),
    (cv2_error, "OpenCV cannot process it (inv_scale_x > 0)"),
    (ort_error, "ONNX Runtime refused it"),
    (lambda: ValueError("--fold 5 outside 0..2"), "--fold 5 outside 0..2"),
    (lambda: DataError("x\n_red.png", "unsafe"), "x\\n_red.png: unsafe"),
])
def test_user_errors_are_one_line_and_exit_2(make, expected, capsys):
    assert guarded(raises(make()), debug=False) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + expected) and err.count("\n") == 1


def test_cuda_errors_are_one_line(capsys):
    for error in torch_errors():
        assert guarded(raises(error), debug=False) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: cuda: ") and "CUDA" in err and err.count("\n") == 1


def test_bugs_keep_their_traceback_and_debug_shows_every_one(monkeypatch):
    with pytest.raises(KeyError):
        guarded(raises(KeyError("bug")), debug=False)
    with pytest.raises(FileNotFoundError):
        guarded(raises(FileNotFoundError(2, "No such file", "x")), debug=True)
    monkeypatch.setenv("HPA_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        guarded(raises(FileNotFoundError(2, "No such file", "x")))


def test_debug_flag_anywhere_on_the_line(capsys):
    p = ArgumentParser(prog="tool")
    p.add_subparsers(dest="command", required=True).add_parser("go")
    commands = {"go": raises(FileNotFoundError(2, "No such file", "x"))}
    assert dispatch(p, commands, ["go"]) == 2
    p = ArgumentParser(prog="tool")
    p.add_subparsers(dest="command", required=True).add_parser("go")
    with pytest.raises(FileNotFoundError):
        dispatch(p, commands, ["go", "--debug"])


def test_data_error_survives_a_process_boundary():
    err = pickle.loads(pickle.dumps(DataError("w.pt", "not a readable weights file")))
    assert (err.path, err.reason, str(err)) == ("w.pt", "not a readable weights file", "w.pt: not a readable weights file")


def test_interrupt_is_one_line_exit_130(capsys):
    assert guarded(raises(KeyboardInterrupt()), debug=False) == 130
    assert capsys.readouterr().err.count("\n") == 1


def test_about_names_the_file_for_errors_that_name_none():
    with pytest.raises(DataError, match=r"^model\.onnx: ONNX Runtime refused it"):
        with about("model.onnx"):
            raise ort_error()
    with pytest.raises(KeyError):  # a bug stays a bug
        with about("model.onnx"):
            raise KeyError("x")


@pytest.mark.parametrize("value, message", [("0", "must be at least 1, got 0"), ("-3", "must be at least 1, got -3"),
                                            ("x", "'x' is not a whole number"), ("1.5", "'1.5' is not a whole number")])
def test_argument_errors_are_one_line(value, message, capsys):
    p = ArgumentParser(prog="tool")
    p.add_argument("--batch-size", type=positive_int)
    with pytest.raises(SystemExit) as exit_:
        p.parse_args(["--batch-size", value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err == f"error: argument --batch-size: {message} (see tool --help)\n"


def test_scripts_use_the_handler():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "split_dataset.py"), "a", "b", "--per-dir", "0"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--per-dir: must be at least 1" in run.stderr
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_train.py"), "--arch", "resnet99", "--steps", "1"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and run.stderr.count("\n") == 1


@pytest.mark.parametrize("program, args, missing, extra", [
    ("train", ["fit", "--data", "DATA", "--out", "OUT", "--epochs", "1"], "torch", "train"),
    ("export", ["onnx", "--run", "RUN", "--out", "OUT"], "onnx", "export"),
])
def test_a_runtime_only_install_is_told_what_to_install(program, args, missing, extra, tiny_data, tiny_run, tmp_path):
    # `pip install .` installs the runtime's dependencies only; the module is hidden as it would be there
    args = [str({"DATA": tiny_data, "RUN": tiny_run[0], "OUT": tmp_path / "out"}.get(a, a)) for a in args]
    code = (f"import sys; sys.modules[{missing!r}] = None; from {program}.__main__ import main; "
            f"sys.exit(main({args!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip() == (f"error: {missing} is not installed; this command needs "
                                   f"pip install 'hpa-toolkit[{extra}]' (make installs everything)")


def test_a_missing_module_of_the_toolkit_itself_is_a_bug_with_its_traceback():
    assert guarded(lambda: 0) == 0
    with pytest.raises(ModuleNotFoundError):
        guarded(raises(ModuleNotFoundError("No module named 'train.nothing'", name="train.nothing")))


def test_a_long_library_message_is_cut_between_words():
    from runtime.errors import first_line

    err = RuntimeError("Weights only load failed. In PyTorch 2.6, we changed the default value\nmore advice")
    assert first_line(err, 40) == "RuntimeError: Weights only load failed. In PyTorch ..."
    assert first_line(err) == "RuntimeError: Weights only load failed. In PyTorch 2.6, we changed the default value"
