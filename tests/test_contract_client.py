"""model.json is a complete contract: a client that reads only model.json and uses only json,
numpy, OpenCV, ONNX Runtime and jsonschema reproduces ``python -m runtime infer``.

Nothing in this file imports the project. The client below decodes, preprocesses, applies the
test-time views from the index formulas model.json gives, averages in the space it names and
applies its decision rule; the runtime's command line runs in a child process (one process,
one ``main(argv)`` call per file and view count, to keep the test quick)."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "docs" / "model.schema.json"
INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


# ----------------------------------------------------------------------------- the client
def load_model(deploy):
    model = json.loads((deploy / "model.json").read_text())
    jsonschema.validate(model, json.loads(SCHEMA.read_text()))
    return model


def read_sample(images, sample_id, model):
    planes = [cv2.imread(str(images / f"{sample_id}_{c}.png"), cv2.IMREAD_UNCHANGED)
              for c in model["preprocess"]["channels"]]
    return np.stack(planes, axis=-1)  # the test images are 8-bit grayscale of one size


def preprocess(sample, model):
    """The graph's input: the resized uint8 image, channels first; the graph normalises it."""
    assert (model["version"], model["input"]["dtype"]) == (3, "uint8")
    pp = model["preprocess"]
    s = pp["size"]
    if sample.shape[:2] != (s, s):
        sample = cv2.resize(sample, (s, s), interpolation=INTERPOLATION[pp["interpolation"]])
    return np.ascontiguousarray(sample.transpose(2, 0, 1))


def transform(rule, batch):
    """A view from its formula in model.json, e.g. 'out[i, j] = in[j, S-1-i]'."""
    rows, cols = re.search(r"out\[i, j\] = in\[([^,\]]+), ([^\]]+)\]", rule).groups()
    size = batch.shape[-1]
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    env = {"i": i, "j": j, "S": size}
    return batch[..., eval(rows, {}, env), eval(cols, {}, env)]


def predict(model, deploy, entry, batch, views):
    session = ort.InferenceSession(str(deploy / entry["path"]), providers=["CPUExecutionProvider"])
    names = model["tta"]["views"][str(views)]
    assert model["tta"]["average"].startswith("arithmetic mean of each view's 'probs'")
    out = [session.run(["probs"], {model["input"]["name"]: np.ascontiguousarray(
        transform(model["tta"]["transforms"][n], batch))})[0] for n in names]
    return np.mean(np.asarray(out, np.float64), axis=0)


def decide(model, entry, probs, views):
    assert (model["decision"]["comparison"], model["decision"]["when_none_passes"]) == (">", "top-class")
    thresholds = np.asarray(model["variants"][entry["variant"]]["thresholds"][str(views)]["values"])
    return [[c for c in range(len(p)) if p[c] > thresholds[c]] or [int(np.argmax(p))] for p in probs]


# ----------------------------------------------------------------------------- the runtime, in a child process
def run_runtime(deploy, images, jobs, cache):
    """``python -m runtime infer`` for each (model file, views, out folder); returns stderr."""
    argvs = [["infer", "--model", str(deploy), "--images", str(images), "--out", str(out), "--batch-size", "5",
              *(["--model-file", name] if name else []), *(["--tta", str(views)] if views else [])]
             for name, views, out in jobs]
    code = ("import json, sys\nfrom runtime.__main__ import main\n"
            "sys.exit(max(main(a) for a in json.loads(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(argvs)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HPA_TOOLKIT_CACHE": str(cache)}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def compare(model, deploy, entry, ids, batch, views, out):
    probs = predict(model, deploy, entry, batch, views)
    rows = read_csv(out / "probabilities.csv")
    assert [r["Id"] for r in rows] == ids
    got = np.array([[float(v) for v in list(r.values())[1:]] for r in rows])
    np.testing.assert_allclose(got, probs, atol=1e-5, err_msg=f"{entry['path']} x {views} views")
    thresholds = np.asarray(model["variants"][entry["variant"]]["thresholds"][str(views)]["values"])
    clear = np.abs(probs - thresholds).min(axis=1) > 1e-5  # rows with no probability at its threshold
    mine = [" ".join(map(str, p)) for p in decide(model, entry, probs, views)]
    theirs = [r["Predicted"] for r in read_csv(out / "submission.csv")]
    assert [m for m, c in zip(mine, clear) if c] == [t for t, c in zip(theirs, clear) if c]
    assert clear.sum() >= len(ids) // 2


def test_a_client_reproduces_every_file_at_every_view_count(tiny_deploy, tiny_data, tmp_path):
    deploy = tiny_deploy[0]
    model = load_model(deploy)
    images = tiny_data / "test"
    ids = sorted({p.name.rsplit("_", 1)[0] for p in images.glob("*_red.png")})
    batch = np.stack([preprocess(read_sample(images, i, model), model) for i in ids])
    files = [f for f in model["files"] if f["format"] == "onnx"]
    assert {f["variant"] for f in files} == set(model["variants"]) and len(files) >= 12
    jobs = [(f["path"], int(v), tmp_path / f"{f['path']}-{v}") for f in files for v in model["tta"]["views"]]
    stderr = run_runtime(deploy, images, jobs + [(None, None, tmp_path / "default")], tmp_path / "cache")
    for name, views, out in jobs:
        compare(model, deploy, next(f for f in files if f["path"] == name), ids, batch, views, out)

    # The default: one of model.json's candidates for ONNX Runtime on a CPU, at tta.default views.
    used = re.findall(r"^backend: onnxruntime-cpu \(([^,]+),", stderr, re.M)[-1]  # the last run's choice
    cpu_choices = [c for c in model["defaults"]["choices"] if c["device"] == "cpu"]
    assert any(used in c["candidates"] for c in cpu_choices)
    compare(model, deploy, next(f for f in files if f["path"] == used), ids, batch, model["tta"]["default"],
            tmp_path / "default")


def test_a_client_reads_what_the_model_was_trained_on(tiny_deploy):
    # source.training_data is optional (absent from files exported before it was recorded); where
    # present, a client tells synthetic training data from model.json alone, as the viewer does
    model = load_model(tiny_deploy[0])
    record = model["source"].get("training_data")
    assert record["kind"] == "synthetic" and Path(record["path"]).is_dir()
    schema = json.loads(SCHEMA.read_text())
    del model["source"]["training_data"]
    jsonschema.validate(model, schema)  # old files keep validating
    model["source"]["training_data"] = "synthetic"
    try:
        jsonschema.validate(model, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("a training_data that is no object validated")


def test_the_client_imports_nothing_from_the_project():
    source = Path(__file__).read_text()
    imported = set(re.findall(r"^(?:from|import) (\w+)", source, re.M))
    assert imported <= {"csv", "json", "os", "re", "subprocess", "sys", "pathlib", "cv2", "jsonschema", "numpy",
                        "onnxruntime"}, imported
