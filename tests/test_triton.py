import pytest

from export.__main__ import main as export_main
from export.triton import check_config, write_repository
from runtime.errors import DataError
from runtime.model_spec import load_model_spec, sha256_of
from tests.test_tensorrt import fake_engine


def test_repository_config_parses_strictly_and_matches_the_model(tiny_deploy, tmp_path):
    deploy, spec = tiny_deploy
    folder, note = write_repository(deploy, tmp_path / "repo", name="hpa", max_batch=16, preferred=(4, 8, 32))
    assert note is None  # an ONNX model is tied to no TensorRT release
    cfg = check_config(folder / "config.pbtxt", spec)
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 16
    assert [i.name for i in cfg.input] == ["image"] and list(cfg.input[0].dims) == [4, 48, 48]
    assert list(cfg.output[0].dims) == [28] and cfg.output[0].label_filename == "labels.txt"
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]  # 32 > max batch is left out
    assert sha256_of(folder / "1" / "model.onnx") == spec.find("ensemble", "fp32").sha256
    assert (folder / "labels.txt").read_text().splitlines()[27] == "Rods & rings"


def test_unknown_fields_and_wrong_shapes_are_refused(tiny_deploy, tmp_path):
    deploy, spec = tiny_deploy
    folder, _ = write_repository(deploy, tmp_path / "repo")
    path = folder / "config.pbtxt"
    text = path.read_text()
    path.write_text(text + "\nnot_a_triton_field: 3\n")
    with pytest.raises(DataError, match="not a valid Triton model config"):
        check_config(path, spec)
    path.write_text(text.replace("dims: 28", "dims: 27"))
    with pytest.raises(DataError, match="output must be probs"):
        check_config(path, load_model_spec(deploy))


def test_cli_and_missing_engine(tiny_deploy, tmp_path, capsys):
    deploy, _ = tiny_deploy
    assert export_main(["triton", "--deploy", str(deploy), "--out", str(tmp_path / "r"), "--precision", "int8"]) == 0
    assert (tmp_path / "r" / "hpa" / "1" / "model.onnx").is_file()
    assert export_main(["triton", "--deploy", str(deploy), "--out", str(tmp_path / "r2"), "--backend", "tensorrt"]) == 2
    assert "no fp32 TensorRT engine" in capsys.readouterr().err


def test_a_plan_runs_on_gpu_instances_and_says_what_it_is_tied_to(tiny_deploy, tmp_path, capsys):
    deploy = fake_engine(tiny_deploy[0], tmp_path)
    folder, note = write_repository(deploy, tmp_path / "repo", precision="fp16", max_batch=128)
    assert "TensorRT 10.16.1.11 plan for GPUs of compute capability 9.0 (built on NVIDIA H100 80GB HBM3)" in note
    text = (folder / "config.pbtxt").read_text()
    assert text.startswith(f"# {note}\n")
    cfg = check_config(folder / "config.pbtxt", load_model_spec(deploy), profile_max=64)
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 64  # capped by the engine's profile
    assert [g.kind for g in cfg.instance_group] == [cfg.instance_group[0].KIND_GPU]
    assert (folder / "1" / "model.plan").read_bytes() == b"plan"

    assert export_main(["triton", "--deploy", str(deploy), "--out", str(tmp_path / "r2"), "--precision", "fp16"]) == 0
    assert "compute capability 9.0" in capsys.readouterr().out


def test_kind_cpu_is_refused_for_a_plan(tiny_deploy, tmp_path, capsys):
    deploy = fake_engine(tiny_deploy[0], tmp_path)
    code = export_main(["triton", "--deploy", str(deploy), "--out", str(tmp_path / "r"), "--precision", "fp16",
                        "--kind", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "runs on a GPU only" in err and "\n" not in err
    # a hand-edited config is refused too
    folder, _ = write_repository(deploy, tmp_path / "repo", precision="fp16")
    path = folder / "config.pbtxt"
    path.write_text(path.read_text().replace("KIND_GPU", "KIND_CPU"))
    with pytest.raises(DataError, match="tensorrt_plan model runs on KIND_GPU instances only"):
        check_config(path, load_model_spec(deploy))


def test_a_profile_starting_above_batch_1_is_refused(tiny_deploy, tmp_path, capsys):
    deploy = fake_engine(tiny_deploy[0], tmp_path, min_batch=4)
    code = export_main(["triton", "--deploy", str(deploy), "--out", str(tmp_path / "r"), "--precision", "fp16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "starts at batch 4" in err and "--min-batch 1" in err and "\n" not in err
    assert not (tmp_path / "r" / "hpa" / "config.pbtxt").exists()
