"""runtime bench: model alone, decoding alone, end to end, and how close end to end comes to the
ideal the two parts allow."""

import json

import pytest

from runtime.__main__ import main as runtime_main
from runtime.bench import bench, format_table, ideal


def test_the_ideal_adds_times_on_shared_cores_and_takes_the_slower_part_on_a_gpu():
    assert ideal(100.0, 300.0, "cpu") == pytest.approx(75.0)  # 10 ms + 3.3 ms per image
    assert ideal(100.0, 300.0, "cuda") == 100.0


def test_bench_reports_decode_only_beside_model_and_end_to_end(tiny_deploy, tiny_data, tmp_path, capsys):
    rows = bench(tiny_deploy[0], "onnxruntime:fp32", [2, 4], str(tiny_data / "test"), seconds=0.1, workers=2,
                 json_path=tmp_path / "b.json", decoder="opencv")
    modes = [r["mode"] for r in rows]
    assert modes == ["model", "model", "decode-only(opencv, 1 thread)", "decode-only(opencv, 2 threads)",
                     "e2e-sequential", "e2e-pipelined(2 threads)"]
    assert rows[3]["scaling"] == pytest.approx(rows[3]["images_per_s"] / rows[2]["images_per_s"])
    decode, model4 = rows[3]["images_per_s"], rows[1]["images_per_s"]
    for r in rows[4:]:
        assert r["ideal_per_s"] == pytest.approx(1 / (1 / decode + 1 / model4))
        assert r["of_ideal"] == pytest.approx(r["images_per_s"] / r["ideal_per_s"]) and r["images"] == 12
    assert "of ideal" in format_table(rows)
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and saved["cpu"]

    assert runtime_main(["bench", "--model", str(tiny_deploy[0]), "--backend", "onnxruntime:int8",
                         "--batch-sizes", "2", "--seconds", "0.05", "--images", str(tiny_data / "test")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "decode-only" in out and "int8-cpu" in out
