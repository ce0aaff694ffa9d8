"""runtime bench: model alone, decoding alone, end to end, and how close end to end comes to the
ideal the two parts allow."""

import json

import pytest

from runtime.__main__ import main as runtime_main
from runtime.bench import IDEAL_RULES, bench, format_table, ideal
from runtime.bench_decode import physical_cores


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
    assert rows[3]["of_cores"] == pytest.approx(rows[3]["scaling"] / min(2, rows[3]["physical_cores"]))
    for r in rows[4:]:  # each round's ideal from decode-only and model-only timed beside it; medians
        assert r["ideal_rule"] == IDEAL_RULES["cpu"] and r["rounds"] == 3 and r["images"] == 12
        assert r["ideal_per_s"] <= min(r["round_decode_per_s"], r["round_model_per_s"])
        assert 0 < r["of_ideal"] and r["images_per_s"] > 0
    table = format_table(rows)
    assert "of ideal" in table and f"ideal = {IDEAL_RULES['cpu']}" in table and "cores:" in table
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and saved["cpu"]

    assert runtime_main(["bench", "--model", str(tiny_deploy[0]), "--backend", "onnxruntime:int8",
                         "--batch-sizes", "2", "--seconds", "0.05", "--images", str(tiny_data / "test")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "decode-only" in out and "int8-cpu" in out


def test_physical_cores_count_logical_siblings_once_and_only_allowed_cpus(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("".join(f"processor\t: {cpu}\nphysical id\t: 0\ncore id\t\t: {cpu // 2}\n\n" for cpu in range(8)))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert physical_cores(info)[0] == 4  # 8 logical CPUs, two per core
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})  # taskset -c 0-2
    assert physical_cores(info) == (2, f"core ids in {info} of the 3 CPUs allowed by sched_getaffinity")
    assert physical_cores(tmp_path / "none")[0] == 3
