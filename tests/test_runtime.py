import csv
import shutil

import cv2
import numpy as np
import pytest

from runtime.__main__ import main as runtime_main
from runtime.backends import make_backend
from runtime.infer import predicted_classes, run_inference, shard_ids
from runtime.labels import read_ids
from runtime.model_spec import load_model_spec
from runtime.reader import ImageFolder


@pytest.fixture(scope="module")
def spec(tiny_deploy):
    return load_model_spec(tiny_deploy[0])


def test_backends_agree_on_the_same_inputs(spec, tiny_data):
    from runtime.preprocess import image_chw

    folder = ImageFolder(tiny_data / "test")  # images like those INT8 was calibrated on
    x = np.stack([image_chw(folder.read(i), spec.preprocess) for i in folder.ids()[:5]])
    with make_backend(spec, "onnxruntime", precision="fp32") as ort_fp32, make_backend(spec, "torch") as ref:
        a, b = ort_fp32.infer(x), ref.infer(x)
    np.testing.assert_allclose(a, b, atol=1e-4)
    with make_backend(spec, "onnxruntime", precision="int8") as int8:
        assert "int8-cpu" in int8.file.path.name
        assert np.abs(int8.infer(x) - a).mean() < 0.05
    with make_backend(spec, "onnxruntime", model="fold1") as fold1, make_backend(spec, "torch", model="fold1") as ref1:
        np.testing.assert_allclose(fold1.infer(x), ref1.infer(x), atol=1e-4)


def test_auto_on_a_cpu_runs_int8_only_where_it_measured_faster(spec):
    from runtime.onnx_session import gpu_present

    if gpu_present():
        pytest.skip("a GPU is present")
    backend = make_backend(spec, "auto")
    assert (backend.name, backend.device) == ("onnxruntime", "cpu")
    assert "x FP32's speed on this CPU" in backend.choice.reason  # the probe ran, and the reason says what it found
    assert (backend.file.precision == "int8") == ("(vnni class, probe)" in backend.choice.reason
                                                  or "(avx2 class, probe)" in backend.choice.reason)


def test_input_is_checked_against_model_json(spec):
    with make_backend(spec, "onnxruntime") as backend:
        with pytest.raises(ValueError, match=r"expected the uint8 images \(N, 4, 48, 48\)"):
            backend.infer(np.zeros((1, 4, 32, 32), np.uint8))
        with pytest.raises(ValueError, match=r"expected the uint8 images .* got float32"):  # never normalised twice
            backend.infer(np.zeros((1, 4, 48, 48), np.float32))
    with pytest.raises(RuntimeError, match="outside its 'with' block"):
        make_backend(spec, "onnxruntime").infer(np.zeros((1, 4, 48, 48), np.uint8))


def test_submission_rule():
    thr = np.full(28, 0.5, np.float32)
    p = np.zeros(28, np.float32)
    p[[3, 7]] = 0.9
    assert predicted_classes(p, thr) == [3, 7]
    p[:] = 0.1
    p[12] = 0.3
    assert predicted_classes(p, thr) == [12]  # nothing above threshold: the most probable class


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def mixed(tiny_data, tmp_path):
    """tiny_data's test set plus bad samples of every kind."""
    folder = tmp_path / "images"
    shutil.copytree(tiny_data / "test", folder)
    good = ImageFolder(folder).ids()
    src = good[0]

    def clone(new):
        for ch in ("red", "green", "blue", "yellow"):
            shutil.copy(folder / f"{src}_{ch}.png", folder / f"{new}_{ch}.png")

    for name in ("bad-truncated", "bad-empty", "bad-missing", "conv-rgb", "conv-16bit"):
        clone(name)
    data = (folder / "bad-truncated_red.png").read_bytes()
    (folder / "bad-truncated_red.png").write_bytes(data[: len(data) // 3])
    (folder / "bad-empty_green.png").write_bytes(b"")
    (folder / "bad-missing_yellow.png").unlink()
    gray = cv2.imread(str(folder / f"{src}_blue.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(folder / "conv-rgb_blue.png"), np.stack([gray, gray, gray], -1))
    cv2.imwrite(str(folder / "conv-16bit_green.png"),
                cv2.imread(str(folder / f"{src}_green.png"), cv2.IMREAD_UNCHANGED).astype(np.uint16) * 257)
    return folder, good, src


def test_bad_samples_never_stop_or_shift_the_batch(spec, mixed, tmp_path):
    folder, good, src = mixed
    with make_backend(spec, "onnxruntime") as backend:
        clean = run_inference(backend, ImageFolder(folder), good, tmp_path / "clean", batch_size=4)
        ids = ["bad-truncated", *good[:3], "bad-empty", "conv-rgb", *good[3:], "bad-missing", "conv-16bit"]
        mixed_summary = run_inference(backend, ImageFolder(folder), ids, tmp_path / "mixed", batch_size=4)
    assert clean["failed"] == 0 and mixed_summary["failed"] == 3
    clean_p = {r["Id"]: r for r in read_csv(tmp_path / "clean" / "probabilities.csv")}
    mixed_p = {r["Id"]: r for r in read_csv(tmp_path / "mixed" / "probabilities.csv")}
    for sample_id in good:
        assert mixed_p[sample_id] == clean_p[sample_id]
    # An RGB copy and a 16-bit copy of a good sample are converted, not refused, and predict the same.
    for converted in ("conv-rgb", "conv-16bit"):
        got = np.array([float(v) for k, v in mixed_p[converted].items() if k != "Id"])
        want = np.array([float(v) for k, v in clean_p[src].items() if k != "Id"])
        np.testing.assert_allclose(got, want, atol=2e-3)
    errors = read_csv(tmp_path / "mixed" / "errors.csv")
    assert [e["Id"] for e in errors] == ["bad-truncated", "bad-empty", "bad-missing"]
    reasons = [e["reason"] for e in errors]
    assert "truncated" in reasons[0] and "empty" in reasons[1] and "missing" in reasons[2]


def test_interrupted_run_resumes_to_the_same_files(spec, tiny_data, tmp_path):
    folder = ImageFolder(tiny_data / "test")
    ids = folder.ids()
    with make_backend(spec, "onnxruntime") as backend:
        run_inference(backend, folder, ids, tmp_path / "full", batch_size=2, chunk_batches=1)
        real = backend.predict
        calls = {"n": 0}

        def dies(batch, views):
            calls["n"] += 1
            if calls["n"] == 4:
                raise KeyboardInterrupt
            return real(batch, views)

        backend.predict = dies
        with pytest.raises(KeyboardInterrupt):
            run_inference(backend, folder, ids, tmp_path / "part", batch_size=2, chunk_batches=1)
        assert not (tmp_path / "part" / "submission.csv").exists()  # nothing half-written
        backend.predict = real
        summary = run_inference(backend, folder, ids, tmp_path / "part", batch_size=2, resume=True, chunk_batches=1)
    assert summary["resumed_from"] == 6
    for name in ("submission.csv", "probabilities.csv", "errors.csv"):
        assert (tmp_path / "part" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_cli_writes_kaggle_submission_for_sample_submission_ids(tiny_data, tiny_deploy, tmp_path, capsys):
    out = tmp_path / "out"
    code = runtime_main(["infer", "--model", str(tiny_deploy[0]), "--images", str(tiny_data / "test"),
                         "--ids", str(tiny_data / "sample_submission.csv"), "--out", str(out), "--batch-size", "5"])
    assert code == 0
    rows = read_csv(out / "submission.csv")
    assert [r["Id"] for r in rows] == read_ids(tiny_data / "sample_submission.csv")
    for r in rows:
        classes = [int(c) for c in r["Predicted"].split(" ")]
        assert classes and all(0 <= c < 28 for c in classes) and classes == sorted(set(classes))
    assert "12 done, 0 failed" in capsys.readouterr().out
    assert runtime_main(["score", "--submission", str(out / "submission.csv"),
                         "--labels", str(tiny_data / "test_labels.csv")]) == 0


def test_infer_averages_the_views_model_json_was_tuned_for(spec, tiny_data, tmp_path):
    from runtime.preprocess import image_chw

    folder = ImageFolder(tiny_data / "test")
    ids = folder.ids()
    x = np.stack([image_chw(folder.read(i), spec.preprocess) for i in ids])
    with make_backend(spec, "onnxruntime", precision="fp32") as backend:
        default = run_inference(backend, folder, ids, tmp_path / "tta", batch_size=4)
        single = run_inference(backend, folder, ids, tmp_path / "single", batch_size=4, views=1)
        turns = np.mean([backend.infer(np.ascontiguousarray(np.rot90(x, k, (2, 3)))) for k in range(4)], axis=0)
        plain = backend.infer(x)
    assert (default["tta_views"], single["tta_views"]) == (4, 1)
    assert default["thresholds"] == "tuned for 4 view(s)" and single["thresholds"] == "tuned for 1 view(s)"

    def probs(out):
        return np.array([[float(v) for v in list(r.values())[1:]] for r in read_csv(out / "probabilities.csv")])

    np.testing.assert_allclose(probs(tmp_path / "tta"), turns, atol=2e-6)
    np.testing.assert_allclose(probs(tmp_path / "single"), plain, atol=2e-6)
    # each submission applies its own thresholds: re-derive both from the probabilities
    for out, views in ((tmp_path / "tta", 4), (tmp_path / "single", 1)):
        thresholds = np.asarray(spec.thresholds_for(views)[0], np.float32)
        want = [" ".join(map(str, predicted_classes(p, thresholds))) for p in probs(out)]
        assert [r["Predicted"] for r in read_csv(out / "submission.csv")] == want


def test_shards_partition_the_ids():
    ids = [f"id{i}" for i in range(10)]
    parts = [shard_ids(ids, f"{i}/3") for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(ids) and all(parts)
    with pytest.raises(ValueError, match="i/n"):
        shard_ids(ids, "3")


def test_bench_reports_throughput_and_latency(tiny_deploy, tiny_data):
    from runtime.bench import bench, format_table

    rows = bench(tiny_deploy[0], "onnxruntime:fp32", [1, 4], str(tiny_data / "test"), seconds=0.2, workers=2)
    modes = [r["mode"] for r in rows]
    assert modes[:2] == ["model", "model"] and "e2e-sequential" in modes
    assert all(r["images_per_s"] > 0 for r in rows) and rows[0]["p99_ms"] >= rows[0]["p50_ms"]
    assert "img/s" in format_table(rows)


def test_sharded_runs_merge_into_the_unsharded_files(tiny_data, tiny_deploy, tmp_path):
    common = ["--model", str(tiny_deploy[0]), "--images", str(tiny_data / "test"),
              "--ids", str(tiny_data / "sample_submission.csv"), "--batch-size", "3"]
    assert runtime_main(["infer", *common, "--out", str(tmp_path / "full")]) == 0
    for i in range(3):
        assert runtime_main(["infer", *common, "--out", str(tmp_path / f"s{i}"), "--shard", f"{i}/3"]) == 0
    shards = [str(tmp_path / f"s{i}") for i in range(3)]
    assert runtime_main(["merge", *shards, "--out", str(tmp_path / "merged"),
                         "--ids", str(tiny_data / "sample_submission.csv")]) == 0
    for name in ("submission.csv", "probabilities.csv", "errors.csv"):
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    assert runtime_main(["merge", *shards[:2], "--out", str(tmp_path / "m2"),
                         "--ids", str(tiny_data / "sample_submission.csv")]) == 2  # a shard is missing


def test_a_broken_sample_keeps_an_empty_submission_row(tiny_data, tiny_deploy, tmp_path, capsys):
    # Kaggle refuses a submission that lacks any of its Ids: one broken image must not cost the file
    images = tmp_path / "test"
    shutil.copytree(tiny_data / "test", images)
    ids = read_ids(tiny_data / "sample_submission.csv")
    (images / f"{ids[3]}_green.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (images / f"{ids[5]}_blue.png").unlink()
    out = tmp_path / "out"
    assert runtime_main(["infer", "--model", str(tiny_deploy[0]), "--images", str(images), "--tta", "1",
                         "--ids", str(tiny_data / "sample_submission.csv"), "--out", str(out)]) == 0
    std = capsys.readouterr()
    assert "10 done, 2 failed" in std.out and "2 samples could not be read" in std.err
    rows = read_csv(out / "submission.csv")
    assert [r["Id"] for r in rows] == ids
    assert [r["Id"] for r in rows if not r["Predicted"]] == [ids[3], ids[5]]
    assert [r["Id"] for r in read_csv(out / "errors.csv")] == [ids[3], ids[5]]
    assert len(read_csv(out / "probabilities.csv")) == 10
    assert runtime_main(["score", "--submission", str(out / "submission.csv"),
                         "--labels", str(tiny_data / "test_labels.csv")]) == 0  # the empty rows score as misses


def test_bench_defaults_to_what_the_model_and_the_install_have(tiny_deploy, tmp_path, monkeypatch):
    import importlib.util

    from runtime.__main__ import default_bench_backends

    assert default_bench_backends(tiny_deploy[0]) == "onnxruntime:fp32,onnxruntime:int8,torch"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert default_bench_backends(tiny_deploy[0]) == "onnxruntime:fp32,onnxruntime:int8"  # a runtime-only install


def test_a_folder_run_keeps_sorted_id_order_with_an_incomplete_sample(tiny_deploy, tiny_data, tmp_path):
    """Without --ids the submission lists the folder's Ids in sorted order, an incomplete sample in
    its place (its row empty), as merge --images expects them."""
    images = tmp_path / "test"
    shutil.copytree(tiny_data / "test", images)
    ids = ImageFolder(images).ids()
    (images / f"{ids[0]}_blue.png").unlink()
    out = tmp_path / "out"
    assert runtime_main(["infer", "--model", str(tiny_deploy[0]), "--images", str(images), "--tta", "1",
                         "--workers", "0", "--out", str(out)]) == 0
    rows = read_csv(out / "submission.csv")
    assert [r["Id"] for r in rows] == sorted(ids) and rows[0]["Predicted"] == ""
    assert runtime_main(["merge", str(out), "--images", str(images), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "submission.csv").read_bytes() == (out / "submission.csv").read_bytes()
