"""The model's input contract: version-3 graphs take the resized uint8 image and normalise it
themselves, exactly as the host did for version 2; version-2 deployment folders keep running with
the probabilities they always gave.

``v2_deploy`` builds a version-2 folder from the tiny run the way version 2 was exported: each
fold's network and the ensemble without the normalising wrapper (float32 input), and a model.json
of version 2 whose ``input`` is the normalised float32 tensor."""

import json
import shutil

import numpy as np
import onnx
from onnx.utils import extract_model
import pytest
import torch

from export.onnx_export import EnsembleGraph, FoldGraph, RunData, export_graph, load_models, normalization_nodes
from export.precision import to_fp16, to_int8
from runtime.__main__ import main as runtime_main
from runtime.backends import make_backend
from runtime.backends.select import default_choices
from runtime.errors import DataError
from runtime.model_schema import VERSION
from runtime.model_spec import INPUT_NAME, LOGITS, PROBS, ModelSpec, load_model_spec, sha256_of
from runtime.onnx_session import make_session
from runtime.preprocess import image_chw, normalize_chw, preprocess
from runtime.reader import ImageFolder
from runtime.tta import predict_views, views
from train.run import Run

V2_FROM_FILES = [
    "decode {Id}_{channel}.png for each channel of preprocess.channels as grayscale: 8-bit as is, "
    "16-bit times 255/65535 rounded to 8 bits",
    "stack the channels in that order: uint8 (H, W, 4)",
    "resize to (size, size) with OpenCV's resize and interpolation preprocess.interpolation "
    "(area: cv2.INTER_AREA), unless already that size",
    "x = float32(pixel) * float32(1/255), then (x - mean[c]) / std[c] per channel, in float32",
    "move channels first: (4, size, size); stack images into a batch: (N, 4, size, size)",
]


@pytest.fixture(scope="module")
def v2_deploy(tiny_run, tiny_deploy, tmp_path_factory):
    """A version-2 deployment folder of tiny_run: FP32 fold and ensemble files taking float32."""
    run, (deploy, spec) = Run(tiny_run[0]), tiny_deploy
    out = tmp_path_factory.mktemp("v2") / "deploy"
    shutil.copytree(deploy / "checkpoints", out / "checkpoints")
    models = load_models(run)
    size = spec.preprocess.size
    for k, m in enumerate(models):
        export_graph(FoldGraph(m), out / f"fold{k}.onnx", size, (LOGITS, PROBS), torch.float32)
    export_graph(EnsembleGraph(models), out / "ensemble.onnx", size, (PROBS,), torch.float32)
    data = json.loads((deploy / "model.json").read_text())
    data["version"] = 2
    data["input"].update(dtype="float32", from_files=V2_FROM_FILES)
    data["files"] = [{**f, "sha256": sha256_of(out / f["path"]), "bytes": (out / f["path"]).stat().st_size}
                     for f in data["files"] if f["precision"] == "fp32"]
    data["variants"] = {"fp32": data["variants"]["fp32"]}
    data["defaults"] = {"rule": "", "choices": []}
    data["defaults"] = default_choices(ModelSpec(out / "model.json", data))
    (out / "model.json").write_text(json.dumps(data, indent=1))
    return out


def test_export_writes_version_3_with_the_uint8_input(tiny_deploy):
    deploy, spec = tiny_deploy
    data = json.loads((deploy / "model.json").read_text())
    assert data["version"] == VERSION == 3 and spec.version == 3
    assert data["input"]["dtype"] == "uint8" and data["input"]["shape"] == ["batch", 4, 48, 48]
    assert "the graph normalises" in data["input"]["from_files"][-1]
    for f in spec.files:  # every file: folds and ensemble, FP32, FP16 and every INT8 flavour
        model = onnx.load(str(f.path))
        (image,) = model.graph.input
        assert (image.name, image.type.tensor_type.elem_type) == (INPUT_NAME, onnx.TensorProto.UINT8), f.path.name
        first = [n for n in model.graph.node if INPUT_NAME in n.input]
        assert [(n.op_type, n.name) for n in first] == [("Cast", "/normalize/Cast")], f.path.name  # once, at the input


def test_a_version_3_file_on_uint8_matches_host_normalisation_and_the_float_graph(tiny_deploy, v2_deploy, tiny_data):
    deploy, spec = tiny_deploy
    folder = ImageFolder(tiny_data / "test")
    real = np.stack([image_chw(folder.read(i), spec.preprocess) for i in folder.ids()])
    noise = np.random.default_rng(0).integers(0, 256, (7, 4, 48, 48), dtype=np.uint8)
    for name in ("fold0.onnx", "fold1.onnx", "ensemble.onnx"):
        v3, v2 = make_session(deploy / name), make_session(v2_deploy / name)
        for x in (real, noise, np.full((2, 4, 48, 48), 255, np.uint8)):
            got = v3.run([PROBS], {INPUT_NAME: x})[0]
            want = v2.run([PROBS], {INPUT_NAME: normalize_chw(x, spec.preprocess)})[0]
            assert np.abs(got - want).max() <= 1e-6, name


def test_the_graphs_normalisation_is_the_hosts_bit_for_bit(tiny_deploy, tmp_path):
    """The first nodes of an exported file, cut out as a graph of their own, compute exactly
    runtime.preprocess.normalize."""
    deploy, spec = tiny_deploy
    model = onnx.load(str(deploy / "ensemble.onnx"))
    nodes = normalization_nodes(model)
    assert [n.split("/")[-1] for n in nodes] == ["Cast", "Mul", "Sub", "Div"]
    last = next(n for n in model.graph.node if n.name == nodes[-1]).output[0]
    path = tmp_path / "normalize.onnx"
    extract_model(str(deploy / "ensemble.onnx"), str(path), [INPUT_NAME], [last])
    x = np.random.default_rng(1).integers(0, 256, (3, 4, 48, 48), dtype=np.uint8)
    x[0, :, 0, :4] = [[0, 1, 254, 255]] * 4
    got = make_session(path).run(None, {INPUT_NAME: x})[0]
    want = np.stack([preprocess(np.moveaxis(image, 0, -1), spec.preprocess) for image in x])
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_reduced_precisions_normalise_in_float32_and_equal_the_float_input_files(tiny_run, tiny_deploy, v2_deploy,
                                                                                   tmp_path):
    """FP16 and INT8 files keep the uint8 input and the normalisation in float32: they give what
    the same conversion of the float-input graph gives on host-normalised images (the INT8 one
    calibrated on the same images, normalised), so their quality is that of the float-input files."""
    deploy, spec = tiny_deploy
    pp = spec.preprocess
    x = np.random.default_rng(2).integers(0, 256, (6, 4, 48, 48), dtype=np.uint8)
    to_fp16(v2_deploy / "fold0.onnx", tmp_path / "v2.fp16.onnx")
    data = RunData(Run(tiny_run[0]))
    calib = data.images(data.calibration_ids(16))  # what tiny_deploy was calibrated on
    assert calib.dtype == np.uint8
    to_int8(v2_deploy / "fold0.onnx", tmp_path / "v2.int8.onnx", normalize_chw(calib, pp), "cpu-vnni")
    for v3_name, v2_path in (("fold0.fp16.onnx", tmp_path / "v2.fp16.onnx"),
                             ("fold0.int8-cpu-vnni.onnx", tmp_path / "v2.int8.onnx")):
        model = onnx.load(str(deploy / v3_name))
        normalize = [n for n in model.graph.node if n.name in normalization_nodes(model)]
        assert [n.op_type for n in normalize[:4]] == ["Cast", "Mul", "Sub", "Div"]
        assert next(a.i for a in normalize[0].attribute if a.name == "to") == onnx.TensorProto.FLOAT
        constants = {i.name: i.data_type for i in model.graph.initializer}
        assert {constants[name] for n in normalize[1:4] for name in n.input if name in constants} == {
            onnx.TensorProto.FLOAT}  # 1/255, mean and std in float32
        got = make_session(deploy / v3_name).run([PROBS], {INPUT_NAME: x})[0]
        want = make_session(v2_path).run([PROBS], {INPUT_NAME: normalize_chw(x, pp)})[0]
        assert np.abs(got - want).max() <= 1e-6, v3_name


def test_test_time_views_of_the_uint8_image_equal_those_of_the_float_tensor(tiny_deploy):
    pp = tiny_deploy[1].preprocess
    x = np.random.default_rng(3).integers(0, 256, (3, 4, 48, 48), dtype=np.uint8)
    for n in (2, 4, 8):
        for of_image, of_tensor in zip(views(x, n), views(normalize_chw(x, pp), n)):
            assert of_image.dtype == np.uint8 and np.array_equal(normalize_chw(of_image, pp), of_tensor)
    session = make_session(tiny_deploy[0] / "ensemble.onnx")
    on_image = predict_views(lambda b: session.run([PROBS], {INPUT_NAME: b})[0], x, 8)
    with make_backend(load_model_spec(tiny_deploy[0]), "torch") as torch_backend:
        on_tensor = torch_backend.predict(x, 8)  # normalises on its device, views taken of the uint8 image
    assert np.abs(on_image - on_tensor).max() <= 1e-4


def old_probabilities(deploy, folder, ids, views_n):
    """What runtime infer computed for a version-2 file: runtime.preprocess.preprocess per sample
    (float32, channels first), the views of the float tensor, ONNX Runtime on each."""
    spec = load_model_spec(deploy)
    session = make_session(spec.find("ensemble", "fp32").path)
    x = np.stack([preprocess(folder.read(i), spec.preprocess) for i in ids])
    return predict_views(lambda b: session.run([PROBS], {INPUT_NAME: b})[0], x, views_n)


def test_a_version_2_folder_runs_with_unchanged_predictions(v2_deploy, tiny_data, tmp_path, capsys):
    spec = load_model_spec(v2_deploy)
    assert spec.version == 2 and spec.input["dtype"] == "float32"
    folder = ImageFolder(tiny_data / "test")
    ids = folder.ids()
    for views_n in (1, 4):
        out = tmp_path / f"out{views_n}"
        assert runtime_main(["infer", "--model", str(v2_deploy), "--images", str(tiny_data / "test"), "--out",
                             str(out), "--backend", "onnxruntime", "--precision", "fp32", "--batch-size", "5",
                             "--tta", str(views_n)]) == 0
        want = old_probabilities(v2_deploy, folder, ids, views_n)
        lines = (out / "probabilities.csv").read_text().splitlines()
        assert lines[1:] == [",".join([i, *(f"{v:.6f}" for v in p)]) for i, p in zip(ids, want)]
        with make_backend(spec, "onnxruntime", precision="fp32") as backend:  # the arrays, not only their text
            x = np.stack([image_chw(folder.read(i), spec.preprocess) for i in ids])
            assert np.array_equal(backend.predict(x, views_n), want)
    assert "12 done, 0 failed" in capsys.readouterr().out


def test_a_file_whose_input_type_is_not_model_jsons_is_refused_in_one_line(v2_deploy, tiny_data, tmp_path, capsys):
    folder = tmp_path / "deploy"
    shutil.copytree(v2_deploy, folder)
    data = json.loads((folder / "model.json").read_text())
    data["version"], data["input"]["dtype"] = 3, "uint8"  # a version-3 model.json over float-input graphs
    (folder / "model.json").write_text(json.dumps(data))
    code = runtime_main(["infer", "--model", str(folder), "--images", str(tiny_data / "test"), "--out",
                         str(tmp_path / "out"), "--backend", "onnxruntime", "--precision", "fp32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "".join(err) and [e for e in err if e.startswith("error:")] == err[-1:]
    assert err[-1] == (f"error: {folder / 'ensemble.onnx'}: graph input 'image' is tensor(float), "
                   "model.json says uint8 (tensor(uint8))")


@pytest.mark.parametrize("version, dtype", [(2, "uint8"), (3, "float32")])
def test_each_version_states_its_own_input_type(v2_deploy, tmp_path, version, dtype):
    data = json.loads((v2_deploy / "model.json").read_text())
    data["version"], data["input"]["dtype"] = version, dtype
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"input/dtype: '.*' was expected"):
        load_model_spec(path)


def test_backends_take_the_uint8_image_and_normalise_once(tiny_deploy, v2_deploy):
    """The runtime's batches are uint8; only a version-2 file's backend normalises on the host."""
    x = np.random.default_rng(4).integers(0, 256, (4, 4, 48, 48), dtype=np.uint8)
    v3, v2 = load_model_spec(tiny_deploy[0]), load_model_spec(v2_deploy)
    with make_backend(v3, "onnxruntime", precision="fp32") as a, make_backend(v2, "onnxruntime") as b, \
            make_backend(v3, "torch") as c:
        assert (a.host_normalizes, b.host_normalizes, c.host_normalizes) == (False, True, False)
        pa, pb, pc = a.infer(x), b.infer(x), c.infer(x)
    assert np.abs(pa - pb).max() <= 1e-6 and np.abs(pa - pc).max() <= 1e-4


def test_the_pipeline_yields_the_uint8_images_channels_first(tiny_deploy, tiny_data):
    from runtime.pipeline import decoded_batches

    pp = tiny_deploy[1].preprocess
    folder = ImageFolder(tiny_data / "test")
    ids = folder.ids()
    for workers in (0, 2):
        batches = list(decoded_batches(folder, ids, pp, 5, workers))
        images = np.concatenate([b.images for b in batches])
        assert all(b.images.dtype == np.uint8 for b in batches) and images.shape == (len(ids), 4, 48, 48)
        assert np.array_equal(normalize_chw(images, pp), np.stack([preprocess(folder.read(i), pp) for i in ids]))


@pytest.mark.parametrize("which, triton_type", [("v3", "TYPE_UINT8"), ("v2", "TYPE_FP32")])
def test_triton_configs_state_the_input_type_of_model_json(tiny_deploy, v2_deploy, tmp_path, which, triton_type):
    pytest.importorskip("tritonclient")
    from tritonclient.grpc import model_config_pb2

    from export.triton import check_config, write_repository

    deploy = tiny_deploy[0] if which == "v3" else v2_deploy
    folder, _ = write_repository(deploy, tmp_path / "repo")
    text = (folder / "config.pbtxt").read_text()
    cfg = check_config(folder / "config.pbtxt", load_model_spec(deploy))
    assert f"data_type: {triton_type}" in text.split("output")[0]  # the input's
    assert cfg.input[0].data_type == getattr(model_config_pb2, triton_type)
    other = "TYPE_FP32" if triton_type == "TYPE_UINT8" else "TYPE_UINT8"
    (folder / "config.pbtxt").write_text(text.replace(f"data_type: {triton_type}", f"data_type: {other}", 1))
    with pytest.raises(DataError, match=f"input is {triton_type} \\(model.json's input.dtype\\)"):
        check_config(folder / "config.pbtxt", load_model_spec(deploy))
