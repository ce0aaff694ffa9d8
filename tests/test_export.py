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
from runtime.model_spec import INPUT_NAME, LOGITS, PROBS, load_model_spec
from runtime.onnx_session import make_session
from runtime.preprocess import normalize_chw
from runtime.probe import cpu_class, cpu_info


def random_batch(n, size=48, seed=0):
    """Random uint8 images, the input every exported graph takes."""
    return np.random.default_rng(seed).integers(0, 256, (n, 4, size, size), dtype=np.uint8)


def run_onnx(path, x):
    return make_session(path).run([PROBS], {INPUT_NAME: x})[0]


def test_every_file_is_listed_with_its_variant_outputs_and_verified(tiny_deploy):
    deploy, spec = tiny_deploy
    names = sorted(f.path.name for f in spec.files)
    for stem in ("fold0", "fold1", "ensemble"):
        for suffix in ("onnx", "fp16.onnx", "int8-cpu-vnni.onnx", "int8-cpu-avx2.onnx", "int8-trt.onnx"):
            assert f"{stem}.{suffix}" in names
    for f in spec.files:
        assert f.verified() == f.path
        model = onnx.load(str(f.path))
        assert model.opset_import[0].version >= OPSET
        assert model.graph.input[0].name == INPUT_NAME
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
        assert [o.name for o in model.graph.output] == list(f.outputs)  # what model.json says it outputs
        assert f.outputs == ((LOGITS, PROBS) if (f.kind, f.precision) == ("fold", "fp32") else (PROBS,))
    fp32 = [f for f in spec.files if f.precision == "fp32"]
    assert all(f.info["parity_vs_torch"]["max_abs_diff"] < FP32_TOLERANCE for f in fp32)
    assert {c.path.parent.name for c in spec.checkpoints} == {"checkpoints"}  # copied inside the folder
    assert all(c.verified().is_relative_to(deploy) for c in spec.checkpoints)


def test_fp32_matches_torch_at_several_batch_sizes(tiny_run, tiny_deploy):
    deploy, spec = tiny_deploy
    models = load_models(Run(tiny_run[0]))
    for batch in (1, 5):
        x = random_batch(batch, seed=batch)
        with torch.no_grad():  # the network on the host-normalised image
            ref = torch.sigmoid(models[1](torch.from_numpy(normalize_chw(x, spec.preprocess)))).numpy()
        np.testing.assert_allclose(run_onnx(deploy / "fold1.onnx", x), ref, atol=FP32_TOLERANCE)


def test_ensemble_is_the_mean_of_the_folds(tiny_deploy):
    deploy, _ = tiny_deploy
    x = random_batch(4)
    folds = np.mean([run_onnx(deploy / f"fold{k}.onnx", x) for k in range(2)], axis=0)
    np.testing.assert_allclose(run_onnx(deploy / "ensemble.onnx", x), folds, atol=1e-5)


def test_reduced_precision_is_judged_on_out_of_fold_images_with_its_own_thresholds(tiny_deploy, tiny_run):
    deploy, spec = tiny_deploy
    run_thresholds = json.loads((tiny_run[0] / "thresholds.json").read_text())
    fp32 = spec.variants["fp32"]
    np.testing.assert_allclose(fp32.thresholds[4][0], run_thresholds["thresholds"], rtol=1e-6)
    np.testing.assert_allclose(fp32.thresholds[1][0], run_thresholds["single_view_thresholds"], rtol=1e-6)
    assert fp32.thresholds[8][1] == fp32.thresholds[2][1] == 4  # no thresholds tuned for 2 or 8 views: 4's
    for name in ("fp16", "int8-cpu-vnni", "int8-cpu-avx2", "int8-trt"):
        v = spec.variants[name]
        q = v.quality
        d = q["abs_diff_vs_fp32"]
        assert q["images"] == 48 and d["values"] == 48 * 28 and 0 <= d["p50"] <= d["p99"] <= d["max"] < 0.5
        assert v.usable == (q["macro_f1_drop"] <= 1.0) and "bound 1" in v.reason
        assert q["macro_f1_drop"] == pytest.approx(q["fp32_macro_f1"]["tuned"] - q["macro_f1"]["tuned"])
        for f in spec.files:
            if f.variant == name:
                assert f.info["abs_diff_vs_fp32"]["max"] <= (d["max"] if f.kind == "fold" else 0.5)
    assert spec.variants["fp16"].quality["abs_diff_vs_fp32"]["max"] < 1e-2
    # thresholds of their own, tuned on their own out-of-fold predictions
    assert spec.variants["int8-cpu-vnni"].thresholds[4][0] != fp32.thresholds[4][0]
    settings = json.loads((deploy / "model.json").read_text())["variants"]
    assert settings["int8-cpu-avx2"]["settings"]["reduce_range"] and not settings["int8-cpu-vnni"]["settings"]["reduce_range"]
    assert settings["int8-cpu-vnni"]["settings"]["kept_in_float"] == ["attention-gates", "head"]
    assert settings["int8-cpu-vnni"]["settings"]["integer_pooling"] and not settings["int8-trt"]["settings"]["integer_pooling"]


def test_a_variant_over_the_f1_bound_is_unusable_and_auto_leaves_it(tiny_run, tmp_path, capsys):
    from runtime.backends.select import Environment, choose

    out = tmp_path / "strict"
    assert export_main(["onnx", "--run", str(tiny_run[0]), "--out", str(out), "--precision", "int8",
                        "--int8-targets", "cpu-vnni", "--calib-images", "8", "--max-f1-drop", "-1"]) == 0
    assert "int8-cpu-vnni: " in capsys.readouterr().out
    spec = load_model_spec(out)
    v = spec.variants["int8-cpu-vnni"]
    assert not v.usable and "above the bound -1" in v.reason
    assert spec.defaults["choices"][-1]["candidates"] == ["ensemble.onnx"]
    choice = choose(spec, "auto", env=Environment(cpu_class="vnni", int8_speedup=lambda *_: 3.0))
    assert choice.file.path.name == "ensemble.onnx" and "marked unusable" in choice.reason


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
    here = f"int8-cpu-{cpu_class(cpu_info()[1])}"  # cpu: the flavour for the exporting machine's CPU
    assert {(f.variant, f.target) for f in spec.files} == {("fp32", "any"), (here, "cpu")}
    assert spec.variants[here].quality["images"] == 16
    assert f"{here}: " in capsys.readouterr().out
    code = export_main(["onnx", "--run", str(tiny_run[0]), "--out", str(tmp_path / "x"), "--precision", "int8",
                        "--int8-targets", "gpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown INT8 target 'gpu'; valid: cpu, cpu-vnni, cpu-avx2, tensorrt" in err and "\n" not in err


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


def test_int8_levers_time_each_setting_against_fp32(tiny_run, tiny_deploy, capsys):
    deploy, _ = tiny_deploy
    assert export_main(["int8-levers", "--run", str(tiny_run[0]), "--onnx", str(deploy / "fold0.onnx"),
                        "--batch-sizes", "2", "--seconds", "0.05", "--calib-images", "8",
                        "--only", "all quantized;1 intra-op thread"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CPU: ") and "INT8/FP32" in lines[1]
    assert [line.split("  ")[0] for line in lines[2:]] == ["all quantized", "1 intra-op thread"]
    from export.int8_levers import levers

    # the levers calibrate on the images export onnx calibrates on, and compare on others
    from export.int8_levers import run_images
    from export.onnx_export import RunData

    data = RunData(Run(tiny_run[0]))
    calib, held = run_images(data, 8, tiny_run[0])
    np.testing.assert_array_equal(calib, data.images(data.calibration_ids(8)))
    assert len(held) == 8 and not any(np.array_equal(h, c) for h in held for c in calib)

    rows = levers(deploy / "fold0.onnx", random_batch(4), random_batch(3, seed=1), (1,), 0.02, ["per-tensor weights"])
    assert rows[0]["ratio"] == pytest.approx(rows[0]["int8_per_s"] / rows[0]["fp32_per_s"])
    assert 0 < rows[0]["p99_abs_dp"] <= rows[0]["max_abs_dp"] < 0.5


def test_cpu_int8_keeps_cbam_gates_and_the_head_in_float_and_quantizes_every_other_convolution(tiny_deploy, tmp_path):
    from export.precision import float_nodes

    deploy, _ = tiny_deploy
    fp32 = onnx.load(str(deploy / "fold0.onnx"))
    head = {n.op_type for n in fp32.graph.node if n.name in float_nodes(fp32, ("head",))}
    assert {"Gemm", "Sigmoid", "GlobalAveragePool"} <= head and "Conv" not in head
    stem = float_nodes(fp32, ("stem",))
    assert len(stem) == 1 and all("/attention/" in n for n in float_nodes(fp32, ("attention",)))
    gates = {n.op_type for n in fp32.graph.node if n.name in float_nodes(fp32, ("attention-gates",))}
    assert gates == {"Conv", "Relu", "Add", "Sigmoid", "Concat"}
    for name, cpu_flavour in (("int8-cpu-vnni", True), ("int8-trt", False)):
        int8 = onnx.load(str(deploy / f"fold0.{name}.onnx"))
        made_by = {o: n.op_type for n in int8.graph.node for o in n.output}
        for conv in (n for n in int8.graph.node if n.op_type == "Conv"):
            quantized = made_by.get(conv.input[1]) == "DequantizeLinear"
            assert quantized == (not cpu_flavour or "/attention/" not in conv.name), conv.name
        gemm = next(n for n in int8.graph.node if n.op_type == "Gemm")
        assert (made_by.get(gemm.input[1]) != "DequantizeLinear") == cpu_flavour
        # CBAM's products over whole feature maps: 8-bit on the CPU flavours (both inputs dequantized),
        # but for the last block's, which is part of the head
        products = [n for n in int8.graph.node if n.op_type == "Mul" and "/attention/" in n.name
                    and n.name not in float_nodes(fp32, ("head",))]
        assert products and all((made_by.get(n.input[0]) == made_by.get(n.input[1]) == "DequantizeLinear")
                                == cpu_flavour for n in products)
        # the max over the channels: of the 8-bit values on the CPU flavours (export.int8_graph.integer_max)
        maxes = [n for n in int8.graph.node if n.op_type == "ReduceMax"]
        assert len(maxes) == 8 and all((made_by.get(n.input[0]) == "QuantizeLinear") == cpu_flavour for n in maxes)
    # in ONNX Runtime's optimized graph the CPU flavour's CBAM pooling runs on 8-bit tensors
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(deploy / "fold0.int8-cpu-vnni.onnx"), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("QLinearGlobalAveragePool") == 2 * 8 and ops.count("QLinearMul") == 2 * 8 - 1
    assert "ReduceMean" not in ops