import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from export.__main__ import main as export_main
from export.onnx_export import FP32_TOLERANCE, OPSET, load_models
from train.run import Run
from runtime.errors import DataError
from runtime.model_spec import INPUT_NAME, PROBS, load_model_spec
from runtime.onnx_session import make_session


def random_batch(n, size=48, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 4, size, size), dtype=np.float32)


def run_onnx(path, x):
    return make_session(path).run([PROBS], {INPUT_NAME: x})[0]


def test_every_file_is_listed_with_its_precision_and_verified(tiny_deploy):
    deploy, spec = tiny_deploy
    names = sorted(f.path.name for f in spec.files)
    for stem in ("fold0", "fold1", "ensemble"):
        for suffix in ("onnx", "fp16.onnx", "int8-cpu.onnx", "int8-trt.onnx"):
            assert f"{stem}.{suffix}" in names
    for f in spec.files:
        assert f.verified() == f.path
        model = onnx.load(str(f.path))
        assert model.opset_import[0].version >= OPSET
        assert model.graph.input[0].name == INPUT_NAME
    fp32 = [f for f in spec.files if f.precision == "fp32"]
    assert all(f.info["parity_vs_torch"]["max_abs_diff"] < FP32_TOLERANCE for f in fp32)


def test_fp32_matches_torch_at_several_batch_sizes(tiny_run, tiny_deploy):
    deploy, spec = tiny_deploy
    models = load_models(Run(tiny_run[0]))
    for batch in (1, 5):
        x = random_batch(batch, seed=batch)
        with torch.no_grad():
            ref = torch.sigmoid(models[1](torch.from_numpy(x))).numpy()
        np.testing.assert_allclose(run_onnx(deploy / "fold1.onnx", x), ref, atol=FP32_TOLERANCE)


def test_ensemble_is_the_mean_of_the_folds(tiny_deploy):
    deploy, _ = tiny_deploy
    x = random_batch(4)
    folds = np.mean([run_onnx(deploy / f"fold{k}.onnx", x) for k in range(2)], axis=0)
    np.testing.assert_allclose(run_onnx(deploy / "ensemble.onnx", x), folds, atol=1e-5)


def test_reduced_precision_stays_within_stated_tolerance(tiny_deploy):
    deploy, spec = tiny_deploy
    x = random_batch(8, seed=3)
    ref = run_onnx(deploy / "ensemble.onnx", x)
    assert np.abs(run_onnx(deploy / "ensemble.fp16.onnx", x) - ref).max() < 1e-2
    for flavour in ("int8-cpu", "int8-trt"):
        assert np.abs(run_onnx(deploy / f"ensemble.{flavour}.onnx", x) - ref).mean() < 0.05
    fp32_f1 = spec.find("fold", "fp32", fold=0).info["oof_macro_f1"]["tuned"]
    for precision, target in (("fp16", "any"), ("int8", "cpu"), ("int8", "tensorrt")):
        f1 = spec.find("fold", precision, target, fold=0).info["oof_macro_f1"]["tuned"]
        assert abs(f1 - fp32_f1) < 0.1, (precision, target, f1, fp32_f1)


def test_model_json_round_trips(tiny_deploy, tiny_run):
    deploy, spec = tiny_deploy
    again = load_model_spec(deploy)
    assert again.preprocess == spec.preprocess and again.thresholds == spec.thresholds
    assert again.input_shape == ("batch", 4, 48, 48)
    thresholds = json.loads((tiny_run[0] / "thresholds.json").read_text())["thresholds"]
    np.testing.assert_allclose(again.thresholds, thresholds)
    assert again.find("ensemble", "int8", "cpu").path.name == "ensemble.int8-cpu.onnx"
    data = json.loads((deploy / "model.json").read_text())
    assert data["versions"]["torch"] == torch.__version__ and len(data["checkpoints"]) == 2


def test_a_tampered_file_is_refused(tiny_deploy, tmp_path):
    deploy, _ = tiny_deploy
    copy = tmp_path / "deploy"
    shutil.copytree(deploy, copy)
    with open(copy / "fold0.onnx", "ab") as handle:
        handle.write(b"\0")
    spec = load_model_spec(copy)
    with pytest.raises(DataError, match=r"fold0\.onnx: sha256 .* does not match model\.json"):
        spec.find("fold", "fp32", fold=0).verified()
    spec.find("fold", "fp32", fold=1).verified()  # the others are fine


def test_broken_checkpoint_gives_a_clear_error(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    (run / "fold1" / "best.pt").write_bytes(b"garbage")
    assert export_main(["onnx", "--run", str(run), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "fold1/best.pt: not a readable checkpoint" in err and "\n" not in err


def test_int8_targets_choose_the_flavours_written(tiny_run, tmp_path, capsys):
    out = tmp_path / "cpu-only"
    assert export_main(["onnx", "--run", str(tiny_run[0]), "--out", str(out), "--precision", "int8",
                        "--int8-targets", "cpu", "--calib-images", "8", "--eval-images", "16"]) == 0
    spec = load_model_spec(out)
    assert {(f.precision, f.target) for f in spec.files} == {("fp32", "any"), ("int8", "cpu")}
    assert "INT8-CPU" in capsys.readouterr().out
    code = export_main(["onnx", "--run", str(tiny_run[0]), "--out", str(tmp_path / "x"), "--precision", "int8",
                        "--int8-targets", "gpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown INT8 target 'gpu'" in err and "\n" not in err


def test_int8_ceiling_times_a_real_convolution_in_both_precisions(tmp_path, capsys):
    from export.int8_ceiling import ceiling, conv_model

    # The benchmark's FP32 graph is Conv + Relu, checked against a direct computation.
    model = conv_model(4, 5)
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 5)).astype(np.float32)
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((2, 4, 5, 5), np.float32)
    for i in range(3):
        for j in range(3):
            expected += np.einsum("oc,bchw->bohw", w[:, :, i, j], padded[:, :, i:i + 5, j:j + 5])
    got = make_session(path).run(None, {INPUT_NAME: x})[0]
    assert np.allclose(got, np.maximum(expected, 0), atol=1e-5)

    rows = ceiling(shapes=((8, 4),), batch_size=2, seconds=0.05)
    assert len(rows) == 1 and rows[0]["fp32_per_s"] > 0 and rows[0]["int8_per_s"] > 0
    assert rows[0]["ratio"] == pytest.approx(rows[0]["int8_per_s"] / rows[0]["fp32_per_s"])

    assert export_main(["int8-ceiling", "--batch-size", "2", "--seconds", "0.05", "--json",
                        str(tmp_path / "c.json")]) == 0
    assert "INT8/FP32" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "c.json").read_text())["rows"]) >= 4
