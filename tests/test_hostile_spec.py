"""model.json, checkpoints and labels are validated for what they mean, not only their shape.

Every case runs the real command line (``runtime infer``, ``runtime score``, ``train fit``,
``train folds``) on a copy of the tiny deployment or dataset with one hostile value, and asserts
exit status 2, exactly one ``error:`` line naming the file and the key (or line) at fault, no
traceback, and the previous outputs untouched. The cases are generated: several bad values per
field."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from runtime.__main__ import main as runtime_main
from runtime.model_spec import sha256_of
from tests.conftest import ROOT
from train.__main__ import main as train_main

MARK = "@@HOSTILE@@"


# ---------------------------------------------------------------- helpers

def refused(capsys, main, argv, *names):
    """Run a command line; assert exit 2 and one error line containing every one of ``names``."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def deploy(tiny_deploy, tmp_path):
    """A private copy of the tiny deployment folder, to spoil."""
    copy = tmp_path / "deploy"
    shutil.copytree(tiny_deploy[0], copy)
    return copy


@pytest.fixture
def infer(tiny_data, tmp_path):
    """``runtime infer`` argv on the test images, into an output folder that holds a previous
    result; ``infer.untouched()`` says whether it is still there as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "submission.csv").write_text("Id,Predicted\nprevious,0\n")

    def argv(model, *extra):
        return ["infer", "--model", str(model), "--images", str(tiny_data / "test"), "--tta", "1",
                "--out", str(out), *extra]

    argv.untouched = lambda: sorted(p.name for p in out.iterdir()) == ["submission.csv"] and (
        (out / "submission.csv").read_text() == "Id,Predicted\nprevious,0\n")
    return argv


def at(data, keys):
    for key in keys[:-1]:
        data = data[key]
    return data, keys[-1]


def write_with(folder, keys, raw):
    """model.json with the value at ``keys`` replaced by the JSON text ``raw`` (1e400, 48.0, ...:
    numbers json.dumps cannot write)."""
    path = folder / "model.json"
    data = json.loads(path.read_text())
    data.setdefault("source", {})
    parent, last = at(data, keys)
    parent[last] = MARK
    path.write_text(json.dumps(data).replace(json.dumps(MARK), raw))


def where(keys):
    return "/".join(map(str, keys))


# ---------------------------------------------------------------- model.json: numbers

MEAN, STD, THRESHOLD = ["preprocess", "mean", 1], ["preprocess", "std", 2], ["variants", "fp32", "thresholds", "1",
                                                                             "values", 5]
NUMBER_CASES = (
    [(MEAN, v) for v in ["1e400", "-1e400", "1e39", "-1e39", "1e38", "1.5", "-0.5", "true", '"0.1"', "null"]]
    + [(STD, v) for v in ["1e-46", "1e-39", "1e-30", "0", "-0.0", "-1", "0.0001", "1e400", "1e39", "5000",
                          "false", '"0.2"']]
    + [(THRESHOLD, v) for v in ["1e400", "-1e400", "1e39", "1.0000001", "-1e-46", '"0.5"', "[]"]]
    + [(["source", "hostile"], v) for v in ["1e400", "-1e400", "1e39", "1" + "0" * 40]]  # any number anywhere
)


@pytest.mark.parametrize("keys, raw", NUMBER_CASES, ids=[f"{where(k)}={v}" for k, v in NUMBER_CASES])
def test_a_number_outside_what_the_runtime_computes_with_is_refused(deploy, infer, capsys, keys, raw):
    write_with(deploy, keys, raw)
    refused(capsys, runtime_main, infer(deploy, "--precision", "fp32"), "model.json", where(keys))
    assert infer.untouched()


# ---------------------------------------------------------------- model.json: whole numbers

INTEGER_KEYS = [["preprocess", "size"], ["folds"], ["files", 0, "fold"], ["tta", "default"],
                ["variants", "fp32", "thresholds", "1", "tuned_on_views"], ["version"], ["checkpoints", 0, "fold"],
                ["input", "shape", 1], ["input", "shape", 2], ["outputs", "probs", "shape", 1]]
INTEGER_CASES = [(k, form) for k in INTEGER_KEYS for form in ("{:.1f}", "{:.2e}")] + [
    (["preprocess", "size"], "true"), (["folds"], "true"), (["preprocess", "size"], "1e400")]


@pytest.mark.parametrize("keys, form", INTEGER_CASES, ids=[f"{where(k)}={f}" for k, f in INTEGER_CASES])
def test_a_whole_number_written_as_a_fraction_is_refused(deploy, infer, capsys, keys, form):
    data = json.loads((deploy / "model.json").read_text())
    parent, last = at(data, keys)
    write_with(deploy, keys, form.format(parent[last]) if "{" in form else form)
    line = refused(capsys, runtime_main, infer(deploy, "--precision", "fp32"), "model.json", where(keys))
    assert "integer" in line or "float32" in line or "finite" in line


@pytest.mark.parametrize("count", [0, 27, 29, 56])
def test_thresholds_are_one_per_class(deploy, infer, capsys, count):
    data = json.loads((deploy / "model.json").read_text())
    data["variants"]["fp32"]["thresholds"]["1"]["values"] = [0.5] * count
    (deploy / "model.json").write_text(json.dumps(data))
    refused(capsys, runtime_main, infer(deploy, "--precision", "fp32"), "model.json",
            "variants/fp32/thresholds/1/values")


# ---------------------------------------------------------------- model.json: depth, size, file type

def nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [33, 40, 500])
def test_nesting_deeper_than_32_levels_is_refused(deploy, infer, capsys, depth):
    data = json.loads((deploy / "model.json").read_text())
    data.setdefault("source", {})["deep"] = nested(depth - 2)  # the top level and "source" are two levels
    (deploy / "model.json").write_text(json.dumps(data))
    refused(capsys, runtime_main, infer(deploy, "--precision", "fp32"), "model.json", "source/deep/0/0",
            "nested deeper than 32 levels")
    assert infer.untouched()


@pytest.mark.parametrize("text", [lambda n: "[" * n + "]" * n, lambda n: '{"a":' * n + "1" + "}" * n,
                                  lambda n: '{"format": "hpa-toolkit-model", "version": 2, "x": ' + "[" * n + "]" * n
                                  + "}"], ids=["arrays", "objects", "inside-a-model-json"])
def test_a_100k_deep_model_json_is_one_line_not_a_recursion_error(deploy, infer, capsys, text):
    (deploy / "model.json").write_text(text(100_000))
    refused(capsys, runtime_main, infer(deploy, "--precision", "fp32"), "model.json", "nested deeper than 32 levels")
    assert infer.untouched()


def test_the_viewer_refuses_a_deep_model_json_in_one_line(deploy, tiny_data, capsys):
    from viewer.__main__ import main as viewer_main

    (deploy / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(capsys, viewer_main, ["--data", str(tiny_data / "test"), "--model", str(deploy)], "model.json",
            "nested deeper than 32 levels")


def test_a_model_json_over_16_mib_is_refused_before_it_is_read(deploy, infer, capsys, monkeypatch):
    data = json.loads((deploy / "model.json").read_text())
    data.setdefault("source", {})["padding"] = "x" * (16 << 20)
    (deploy / "model.json").write_text(json.dumps(data))
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    refused(capsys, runtime_main, infer(deploy, "--precision", "fp32"), "model.json", "over the 16 MiB")
    assert str(deploy / "model.json") not in opened and infer.untouched()


def test_a_fifo_model_json_is_refused_without_blocking(deploy, tiny_data, tmp_path):
    (deploy / "model.json").unlink()
    os.mkfifo(deploy / "model.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "runtime", "infer", "--model", str(deploy), "--images",
                          str(tiny_data / "test"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "model.json: not a plain file" in lines[0]


# ---------------------------------------------------------------- ONNX external data

def externalize(deploy, name="ensemble.onnx"):
    """``name`` re-saved with its weights in an external data file beside it; model.json's sha256
    updated for the .onnx (the only file it lists). Returns the data file."""
    onnx = pytest.importorskip("onnx")
    path = deploy / name
    model = onnx.load(str(path))
    path.unlink()
    onnx.save_model(model, str(path), save_as_external_data=True, location=name + ".data", size_threshold=0)
    data = json.loads((deploy / "model.json").read_text())
    next(f for f in data["files"] if f["path"] == name)["sha256"] = sha256_of(path)
    (deploy / "model.json").write_text(json.dumps(data))
    return deploy / (name + ".data")


@pytest.mark.parametrize("edit", ["as-written", "weights-edited"])
def test_an_onnx_file_with_external_data_is_refused(deploy, infer, capsys, edit):
    weights = externalize(deploy)
    if edit == "weights-edited":
        raw = bytearray(weights.read_bytes())
        raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
        weights.write_bytes(bytes(raw))
    refused(capsys, runtime_main, infer(deploy, "--precision", "fp32"), "ensemble.onnx: tensor",
            "external data file")
    assert infer.untouched()


def test_external_data_cannot_be_read_even_unrecognised(deploy, infer, capsys, monkeypatch):
    """The session is made from the hashed bytes, so ONNX Runtime has no folder to read an
    external file from: even if the check did not recognise one, nothing unhashed would run."""
    externalize(deploy)
    monkeypatch.setattr("runtime.model_spec.external_tensor", lambda data: None)
    refused(capsys, runtime_main, infer(deploy, "--precision", "fp32"), "ensemble.onnx: ONNX Runtime cannot load")


def test_external_tensor_reads_the_protobuf(deploy):
    from runtime.onnx_external import external_tensor

    plain = (deploy / "ensemble.onnx").read_bytes()
    assert external_tensor(plain) is None
    for junk in (b"", b"not a model", plain[:1000], bytes(range(256)) * 4):
        assert external_tensor(junk) is None
    externalize(deploy)
    assert external_tensor((deploy / "ensemble.onnx").read_bytes())


@pytest.mark.parametrize("backend, module, name", [
    ("onnxruntime", "runtime.model_spec", "ensemble.onnx"),
    ("torch", "train.checkpoint", "fold0.pt"),
])
def test_what_runs_is_the_bytes_that_were_hashed(deploy, tiny_data, tmp_path, capsys, monkeypatch, backend, module,
                                                 name):
    """A file replaced on disk right after its sha256 was checked changes nothing: the session
    (or the checkpoint) is made from the checked bytes, and the results equal a clean run's."""
    def run(out):
        argv = ["infer", "--model", str(deploy), "--images", str(tiny_data / "test"), "--tta", "1",
                "--backend", backend, "--out", str(out)]
        assert runtime_main(argv + (["--precision", "fp32"] if backend == "onnxruntime" else [])) == 0
        capsys.readouterr()
        return (out / "probabilities.csv").read_text()

    clean = run(tmp_path / "clean")
    import runtime.model_spec

    real = runtime.model_spec.read_verified

    def swap_after_check(path, sha256):
        data = real(path, sha256)
        if path.name == name:
            path.write_bytes(b"replaced after the check")
        return data

    monkeypatch.setattr(f"{module}.read_verified", swap_after_check)
    assert run(tmp_path / "swapped") == clean
    assert (next(deploy.rglob(name))).read_bytes() == b"replaced after the check"  # the swap did happen


def test_a_listed_file_that_is_a_fifo_is_refused_without_blocking(deploy, infer, capsys):
    (deploy / "ensemble.onnx").unlink()
    os.mkfifo(deploy / "ensemble.onnx")
    refused(capsys, runtime_main, infer(deploy, "--precision", "fp32"), "ensemble.onnx: listed in model.json but "
            "not a plain file")


def test_a_fifo_swapped_in_after_the_check_is_not_read(tmp_path):
    from runtime.errors import DataError
    from runtime.model_spec import read_plain

    os.mkfifo(tmp_path / "model.json")
    with pytest.raises(DataError, match="model.json: not a plain file"):
        read_plain(tmp_path / "model.json", 100)


# ---------------------------------------------------------------- checkpoints

def spoil_checkpoint(deploy, change):
    """Fold 0's checkpoint re-saved after ``change(payload)`` (which may return a replacement),
    with model.json's sha256 in step: only its meaning is wrong. Returns its path."""
    torch = pytest.importorskip("torch")
    data = json.loads((deploy / "model.json").read_text())
    entry = next(c for c in data["checkpoints"] if c["fold"] == 0)
    path = deploy / entry["path"]
    payload = torch.load(path, map_location="cpu", weights_only=True)
    result = change(payload)
    torch.save(payload if result is None else result, path)
    entry["sha256"] = sha256_of(path)
    (deploy / "model.json").write_text(json.dumps(data))
    return path


def setter(section, key, value):
    def change(payload):
        payload[section][key] = value
    return change


def replace(section, value):
    def change(payload):
        payload[section] = value
    return change


def tensor(key, make):
    def change(payload):
        payload["model"][key] = make(payload["model"][key])
    return change


def _torch():
    import torch

    return torch


CHECKPOINT_CASES = {
    **{f"config-is-{type(v).__name__}": (replace("config", v), "config is") for v in ([], "fit", None, 5)},
    **{f"width-{v!r}": (setter("config", "width", v), "config.width") for v in (10**9, 0, -1, "64", 64.0, True)},
    **{f"size-{v!r}": (setter("config", "size", v), "config.size") for v in (-5, 0, 10**9, "48", 48.5)},
    "arch-unknown": (setter("config", "arch", "resnet9000"), "config.arch"),
    "attention-a-number": (setter("config", "attention", 3), "config.attention"),
    **{f"dropout-{v!r}": (setter("config", "dropout", v), "config.dropout") for v in (float("nan"), 1.5, -0.1, "0")},
    "fold-text": (setter("config", "fold", "x"), "config.fold"),
    "alpha-inf": (setter("config", "alpha", [float("inf")]), "config.alpha"),
    **{f"preprocess-is-{type(v).__name__}": (replace("preprocess", v), "preprocess:") for v in ("x", [], None)},
    **{f"preprocess-{k}-{v!r}": (setter("preprocess", k, v), f"preprocess: {k}") for k, v in [
        ("size", -5), ("size", 48.0), ("size", 10**9), ("mean", [1e39] * 4), ("mean", [float("inf")] * 4),
        ("std", [1e-46] * 4), ("std", [0.0, 1.0, 1.0, 1.0]), ("std", [float("nan")] * 4), ("std", "1111"),
        ("mean", [0.5] * 3)]},
    "preprocess-unknown-key": (setter("preprocess", "scale", 2), "preprocess: unknown key 'scale'"),
    "class-names-reversed": (lambda p: p["class_names"].reverse(), "class_names differ"),
    **{f"model-is-{type(v).__name__}": (replace("model", v), "model is") for v in ("weights", [], 5)},
    "model-empty": (replace("model", {}), "lacks 'conv1.weight'"),
    "model-lacks-a-key": (lambda p: {**p, "model": {k: v for k, v in p["model"].items() if k != "fc.weight"}},
                          "lacks 'fc.weight'"),
    "model-extra-key": (lambda p: p["model"].__setitem__("extra", _torch().zeros(1)), "has 'extra'"),
    "model-wrong-shape": (tensor("conv1.weight", lambda t: _torch().zeros(t.shape[0], 4, 3, 3)), "has shape"),
    "model-too-wide": (tensor("fc.weight", lambda t: _torch().zeros(t.shape[0], t.shape[1] * 2)), "has shape"),
    "model-string-for-tensor": (tensor("fc.bias", lambda t: "bias"), "is str, expected a dense tensor"),
    "model-int-weights": (tensor("conv1.weight", lambda t: t.long()), "holds torch.int64"),
    "model-nan-weights": (tensor("fc.bias", lambda t: t * float("nan")), "NaN or infinite"),
    "payload-a-list": (lambda p: [p], "not a toolkit checkpoint"),
}


@pytest.mark.parametrize("change, reason", CHECKPOINT_CASES.values(), ids=CHECKPOINT_CASES.keys())
def test_a_checkpoint_that_means_nonsense_is_refused_by_the_torch_backend(deploy, infer, capsys, change, reason):
    path = spoil_checkpoint(deploy, change)
    refused(capsys, runtime_main, infer(deploy, "--backend", "torch"), f"{path}: ", reason)
    assert infer.untouched()


VIEWER_CASES = ["config-is-list", "width-1000000000", "size--5", "preprocess-std-[1e-46, 1e-46, 1e-46, 1e-46]",
                "model-is-str", "model-wrong-shape", "model-nan-weights"]


@pytest.mark.parametrize("name", VIEWER_CASES)
def test_the_viewers_grad_cam_loader_refuses_the_same(deploy, name):
    from runtime.errors import DataError
    from viewer.cam import CamModels

    change, reason = CHECKPOINT_CASES[name]
    path = spoil_checkpoint(deploy, change)
    for sha in (None, sha256_of(path)):
        with pytest.raises(DataError) as err:
            CamModels([(path, sha)]).__enter__()
        assert err.value.path == str(path) and reason in err.value.reason and "\n" not in str(err.value)


# ---------------------------------------------------------------- labels

BAD_LABELS = ["1_0", "\u0663", "+3", "\uff13", "\u00b2", "1\u00a03", "3.0", "0x3", "1e1", "_3"]


def labels_with(tiny_data, tmp_path, token, name="labels.csv"):
    """tiny_data's train.csv with the first row's Target replaced by ``token``."""
    lines = (tiny_data / "train.csv").read_text().splitlines()
    first_id = lines[1].split(",")[0]
    lines[1] = f"{first_id},{token}"
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("token", BAD_LABELS)
def test_score_refuses_a_label_that_is_not_ascii_digits(tiny_data, tmp_path, capsys, token):
    labels = labels_with(tiny_data, tmp_path, token)
    good = labels_with(tiny_data, tmp_path, "0", "good.csv")
    sub = tmp_path / "sub.csv"
    sub.write_text(good.read_text().replace("Id,Target", "Id,Predicted"))
    refused(capsys, runtime_main, ["score", "--submission", str(sub), "--labels", str(labels)],
            f"{labels} line 2: label {token!r} is not a number")
    bad_sub = tmp_path / "bad_sub.csv"
    bad_sub.write_text(labels.read_text(encoding="utf-8").replace("Id,Target", "Id,Predicted"), encoding="utf-8")
    refused(capsys, runtime_main, ["score", "--submission", str(bad_sub), "--labels", str(good)],
            f"{bad_sub} line 2: label {token!r} is not a number")


@pytest.mark.parametrize("token", BAD_LABELS)
def test_training_refuses_a_label_that_is_not_ascii_digits(tiny_data, tmp_path, capsys, token):
    labels = labels_with(tiny_data, tmp_path, token)
    refused(capsys, train_main, ["folds", "--labels", str(labels), "--out", str(tmp_path / "folds.csv")],
            f"{labels} line 2: label {token!r} is not a number")
    assert not (tmp_path / "folds.csv").exists()
    refused(capsys, train_main, ["fit", "--data", str(tiny_data), "--labels", str(labels), "--out",
                                 str(tmp_path / "run"), "--folds", "2", "--width", "8", "--size", "32", "--epochs",
                                 "1", "--threads", "1"], f"{labels} line 2: label {token!r} is not a number")


def test_labels_in_ascii_digits_with_spaces_still_score(tmp_path, capsys):
    """Spaces and tabs around and between labels, and leading zeros, read as before."""
    labels, sub, same = tmp_path / "labels.csv", tmp_path / "sub.csv", tmp_path / "same.csv"
    labels.write_text("Id,Target\na,3\nb,16 0\nc,27\n")
    sub.write_text("Id,Predicted\na, 3 \nb,0  16\nc,\t027\n")
    same.write_text("Id,Predicted\na,3\nb,0 16\nc,27\n")
    assert runtime_main(["score", "--submission", str(sub), "--labels", str(labels)]) == 0
    spaced = capsys.readouterr().out
    assert runtime_main(["score", "--submission", str(same), "--labels", str(labels)]) == 0
    assert spaced == capsys.readouterr().out and "over 3 images" in spaced
