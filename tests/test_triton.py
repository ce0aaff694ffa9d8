import pytest

from export.__main__ import main as export_main
from export.triton import check_config, write_repository
from runtime.errors import DataError
from runtime.model_spec import load_model_spec, sha256_of


def test_repository_config_parses_strictly_and_matches_the_model(tiny_deploy, tmp_path):
    deploy, spec = tiny_deploy
    folder = write_repository(deploy, tmp_path / "repo", name="hpa", max_batch=16, preferred=(4, 8, 32))
    cfg = check_config(folder / "config.pbtxt", spec)
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 16
    assert [i.name for i in cfg.input] == ["image"] and list(cfg.input[0].dims) == [4, 48, 48]
    assert list(cfg.output[0].dims) == [28] and cfg.output[0].label_filename == "labels.txt"
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]  # 32 > max batch is left out
    assert sha256_of(folder / "1" / "model.onnx") == spec.find("ensemble", "fp32").sha256
    assert (folder / "labels.txt").read_text().splitlines()[27] == "Rods & rings"


def test_unknown_fields_and_wrong_shapes_are_refused(tiny_deploy, tmp_path):
    deploy, spec = tiny_deploy
    folder = write_repository(deploy, tmp_path / "repo")
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
