"""model.json is validated as a whole when it is loaded: every fault is one DataError naming the
file and the reason, before the runtime deletes or writes anything."""

import json
import shutil

import pytest

from runtime.__main__ import main as runtime_main
from runtime.errors import DataError
from runtime.model_schema import SCHEMA
from runtime.model_spec import load_model_spec
from tests.conftest import ROOT


@pytest.fixture
def deploy(tiny_deploy, tmp_path):
    """A private copy of the tiny deployment (its model.json gets edited)."""
    copy = tmp_path / "deploy"
    shutil.copytree(tiny_deploy[0], copy)
    return copy


def edit(deploy, change):
    path = deploy / "model.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def test_the_documented_schema_is_the_one_the_runtime_checks(tiny_deploy):
    assert json.loads((ROOT / "docs" / "model.schema.json").read_text()) == SCHEMA
    load_model_spec(tiny_deploy[0])  # an exported model.json passes


def _set(keys, value):
    def change(data):
        target = data
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return change


FP32_4 = ["variants", "fp32", "thresholds", "4", "values"]
BAD = {
    "an old version": (_set(["version"], 1), "version 1 is not one this runtime reads (2, 3): re-export"),
    "a threshold 'nan'": (lambda d: d["variants"]["fp32"]["thresholds"]["4"]["values"].__setitem__(0, "nan"),
                          "variants/fp32/thresholds/4/values/0: 'nan' is not of type 'number'"),
    "a threshold above 1": (lambda d: d["variants"]["int8-cpu-vnni"]["thresholds"]["1"]["values"].__setitem__(3, 1.5),
                            "variants/int8-cpu-vnni/thresholds/1/values/3: 1.5 is greater than the maximum of 1"),
    "27 thresholds": (lambda d: d["variants"]["fp32"]["thresholds"]["4"]["values"].pop(), "values: [0."),
    "no thresholds for 8 views": (lambda d: d["variants"]["fp16"]["thresholds"].pop("8"), "'8' is a required property"),
    "preprocess.size 64": (_set(["preprocess", "size"], 64), "input.shape ['batch', 4, 48, 48] does not match preprocess.size 64"),
    "preprocess.size -5": (_set(["preprocess", "size"], -5), "preprocess/size: -5 is less than the minimum of 8"),
    "preprocess.size '96'": (_set(["preprocess", "size"], "96"), "preprocess/size: '96' is not of type 'integer'"),
    "a zero std": (_set(["preprocess", "std"], [0, 1, 1, 1]), "preprocess/std/0: 0 is less than or equal to the minimum"),
    "a path up and out": (lambda d: d["files"][0].__setitem__("path", "../../outside/ensemble.onnx"),
                          "file '../../outside/ensemble.onnx' is outside the deployment folder"),
    "an absolute path": (lambda d: d["files"][2].__setitem__("path", "/etc/hostname"),
                         "file '/etc/hostname' is outside the deployment folder"),
    "../../../etc/hostname": (lambda d: d["files"][1].__setitem__("path", "../../../etc/hostname"),
                              "file '../../../etc/hostname' is outside the deployment folder"),
    "a checkpoint outside": (lambda d: d["checkpoints"][0].__setitem__("path", "/tmp/best.pt"),
                             "checkpoint '/tmp/best.pt' is outside the deployment folder"),
    "an unknown variant": (lambda d: d["files"][0].__setitem__("variant", "int4"), "variant 'int4' is not in variants"),
    "a fold out of range": (lambda d: d["files"][0].__setitem__("fold", 5), "fold with fold 5 (folds: 2)"),
    "flips for turns": (_set(["tta", "views", "4"], ["identity", "flip", "rot180", "flip_rot180"]), "tta/views/4: "),
    "a >= decision": (_set(["decision", "comparison"], ">="), "decision/comparison: '>' was expected"),
    "no outputs": (lambda d: d["files"][0].pop("outputs"), "'outputs' is a required property"),
    "logits only": (lambda d: d["files"][0].__setitem__("outputs", ["logits"]), "files/0/outputs: ['logits'] does not contain"),
    "a bad sha256": (lambda d: d["files"][0].__setitem__("sha256", "abc"), "files/0/sha256: 'abc' does not match"),
    "renamed classes": (lambda d: d["class_names"].reverse(), "class_names differ from the 28 HPA classes"),
    "an unlisted default": (lambda d: d["defaults"]["choices"][0]["candidates"].append("x.onnx"),
                            "defaults: 'x.onnx' is not a listed file"),
    "an unknown key": (_set(["threshold"], 0.5), "Additional properties are not allowed ('threshold' was unexpected)"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_model_json_is_one_line_naming_file_and_reason(deploy, case):
    change, reason = BAD[case]
    path = edit(deploy, change)
    with pytest.raises(DataError) as err:
        load_model_spec(deploy)
    assert err.value.path == str(path) and reason in err.value.reason and "\n" not in str(err.value)


@pytest.mark.parametrize("text,reason", [("", "not valid JSON"), ('{"version": NaN}', "NaN is not a number JSON allows"),
                                         ("\xff", "not valid JSON"), ('"model"', "the JSON is a string, not an object"),
                                         ("[]", "the JSON is an array, not an object"),
                                         ("null", "the JSON is null, not an object"), ("7", "the JSON is a number")])
def test_unreadable_json_is_one_line(deploy, text, reason):
    (deploy / "model.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=reason):
        load_model_spec(deploy)


def test_a_symlink_out_of_the_folder_is_refused(deploy, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(deploy / "ensemble.onnx", outside)
    (deploy / "ensemble.onnx").unlink()
    (deploy / "ensemble.onnx").symlink_to(outside)
    with pytest.raises(DataError, match="file 'ensemble.onnx' is outside the deployment folder"):
        load_model_spec(deploy)


def test_a_graph_that_disagrees_with_model_json_is_refused_when_loaded(deploy):
    def resize(d):  # consistent JSON, but the graphs take 48 px
        d["preprocess"]["size"] = d["input"]["shape"][2] = d["input"]["shape"][3] = 64
    edit(deploy, resize)
    spec = load_model_spec(deploy)
    with pytest.raises(DataError, match=r"ensemble\.onnx: graph input \[\('image', \['batch', 4, 48, 48\]\)\] does not "
                                        r"match model\.json \('image' of \(batch, 4, 64, 64\)\)"):
        spec.find("ensemble").verified()


@pytest.mark.parametrize("case", ["preprocess.size 64", "a threshold 'nan'", "a path up and out", "graph"])
def test_infer_refuses_before_touching_the_previous_outputs(deploy, tiny_data, tmp_path, capsys, case):
    out = tmp_path / "out"
    out.mkdir()
    (out / "submission.csv").write_text("Id,Predicted\nold,0\n")
    if case == "graph":
        edit(deploy, lambda d: d["preprocess"].update(size=64) or d["input"]["shape"].__setitem__(slice(2, 4), [64, 64]))
    else:
        edit(deploy, BAD[case][0])
    code = runtime_main(["infer", "--model", str(deploy), "--images", str(tiny_data / "test"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: {deploy}") and "model.json" in err[-1] + err[0]
    assert (out / "submission.csv").read_text() == "Id,Predicted\nold,0\n"
    assert sorted(p.name for p in out.iterdir()) == ["submission.csv"]
