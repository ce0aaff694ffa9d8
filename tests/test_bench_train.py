"""The training benchmarks behind `make bench-train` and scripts/bench_train.py (figures are printed,
never asserted on: these tests check that the rows, the stage attribution and the memory figures
come out, at tiny sizes)."""

import json

import pytest
import torch

from train import bench
from train.bench import bench_train, main


def test_bench_train_reports_throughput_and_memory(capsys):
    row = bench_train(width=8, size=32, batch_size=4, steps=2, warmup=1)
    assert row["device"] == "cpu" and row["peak_gpu_mb"] is None
    assert row["train_images_per_s"] > 0 and row["inference_images_per_s"] > 0 and row["peak_rss_mb"] > 0
    main(["--width", "8", "--size", "32", "--batch-size", "4", "--steps", "2", "--compare-plain"])
    lines = capsys.readouterr().out.splitlines()
    assert "train img/s" in lines[0] and len(lines) == 3
    assert "cbam" in lines[1] and "none" in lines[2] and lines[1].rstrip().endswith("cpu")


def test_bench_train_times_train_fits_own_step(monkeypatch):
    """The model benchmark times the step an epoch of train fit runs, not a copy of it."""
    from train import fit

    calls = []
    real = fit.train_step

    def counted(parts, x, y, device):
        calls.append(type(parts).__name__)
        return real(parts, x, y, device)

    monkeypatch.setattr(fit, "train_step", counted)
    bench_train(width=8, size=32, batch_size=4, steps=2, warmup=1)
    assert calls == ["_FoldParts"] * 3  # warm-up and timed steps


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_bench_train_on_cuda_uses_the_gpu():
    row = bench_train(width=8, size=32, batch_size=4, steps=2, warmup=1, device="cuda")
    assert row["peak_gpu_mb"] > 0 and row["device"] != "cpu"


def test_bench_train_on_a_fake_cuda_waits_for_the_gpu_and_reports_its_peak(monkeypatch, capsys):
    """The CUDA branch, executed on the CPU (tests.fake_cuda): the step runs as train fit runs it on
    CUDA (FP16 autocast, an enabled gradient scaler), each timer waits for the GPU after its warm-up
    and after its timed steps, and each configuration's GPU peak is its own (reset first)."""
    from tests.fake_cuda import fake_cuda
    from train import fit
    from train.bench import main_model

    fake = fake_cuda(monkeypatch)
    scalers = []
    real = fit.train_step

    def step(parts, x, y, device):
        scalers.append(parts.scaler.is_enabled())
        return real(parts, x, y, device)

    monkeypatch.setattr(fit, "train_step", step)
    row = bench_train(width=8, size=32, batch_size=4, steps=2, warmup=1, device="cuda")
    assert row["device"] == "Fake GPU" and row["peak_gpu_mb"] == 3.0
    assert scalers == [True] * 3 and ("cuda", torch.float16, True) in fake.autocasts
    assert fake.synced == 4 and fake.peak_resets == 1  # train and inference timers, 2 waits each
    assert main_model(["--width", "8", "--size", "32", "--batch-size", "2", "--steps", "1", "--device", "cuda",
                       "--compare-plain"]) == 0
    assert fake.peak_resets == 3
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.rstrip().endswith("Fake GPU") for line in lines[1:])


def test_ideal_adds_times_on_a_cpu_and_takes_the_slower_stage_on_a_gpu():
    assert bench.ideal_rate(100.0, 100.0, "cpu") == pytest.approx(50.0)
    assert bench.ideal_rate(300.0, 100.0, "cuda") == 100.0


def test_stage_table_has_a_row_per_setting_and_names_the_bounding_stage(tiny_data, tmp_path, capsys):
    cache = tmp_path / "cache"
    main(["stages", "--data", str(tiny_data), "--cache", str(cache), "--models", "resnet18:8", "--size", "32",
          "--batch-size", "4", "--workers", "0,1", "--steps", "1", "--data-steps", "2", "--threads", "1",
          "--json", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out.splitlines()
    rows = json.loads((tmp_path / "rows.json").read_text())
    table = [line for line in out if line.startswith("| resnet18")]
    assert "AMD" in out[0] or "cores" in out[0]  # the CPU and the load come with the figures
    assert len(rows) == len(table) == 1 + 2 * 2  # AMP on (untimed on the CPU), then source x workers
    amp_on, timed = rows[0], rows[1:]
    assert amp_on["amp"] and amp_on["model"] is None and "CUDA-only" in amp_on["note"] and "CUDA-only" in table[0]
    assert {(r["source"], r["workers"]) for r in timed} == {("cache", 0), ("cache", 1), ("png", 0), ("png", 1)}
    from train.cache import current_images
    assert current_images(cache).is_file()  # the cache rows read train fit's cache
    for r, line in zip(timed, table[1:]):
        assert not r["amp"] and min(r["data"], r["model"], r["end_to_end"], r["ideal"]) > 0
        assert r["bound"] == ("data" if r["data"] < r["model"] else "model") and f"| {r['bound']} |" in line
        assert r["ideal"] == pytest.approx(1 / (1 / r["data"] + 1 / r["model"]))
    assert len({r["model"] for r in timed}) == 1  # the model stage is measured once per model


def test_stage_table_names_the_stage_that_bounds_it(tiny_data, monkeypatch):
    """A loader slower than the model is reported as the bound, and the reverse."""
    monkeypatch.setattr(bench, "model_rate", lambda *a, **k: (50.0, 0.1))
    monkeypatch.setattr(bench, "end_to_end_rate", lambda *a, **k: 9.0)
    monkeypatch.setattr(bench, "data_rate", lambda cfg, *a, **k: 10.0 if cfg.cache == "" else 500.0)
    rows = bench.stage_table(tiny_data, "", models=(("resnet18", 8),), size=32, batch_size=4, amps=(False,),
                             sources=("png",), workers=(0,))
    assert rows[0]["bound"] == "data"
    monkeypatch.setattr(bench, "data_rate", lambda *a, **k: 500.0)
    assert bench.stage_table(tiny_data, "", models=(("resnet18", 8),), size=32, batch_size=4, amps=(False,),
                             sources=("png",), workers=(0,))[0]["bound"] == "model"


def test_compiled_rows_report_the_compile_time(tiny_data, monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "model_rate", lambda cfg, s, w, n, compiled: calls.append(compiled) or (40.0, 12.0))
    monkeypatch.setattr(bench, "end_to_end_rate", lambda *a, **k: 9.0)
    monkeypatch.setattr(bench, "data_rate", lambda *a, **k: 100.0)
    rows = bench.stage_table(tiny_data, "", models=(("resnet18", 8),), size=32, batch_size=4, amps=(False,),
                             sources=("png",), workers=(0,), compiled=(False, True))
    assert calls == [False, True] and [r["compile"] for r in rows] == [False, True]
    assert "12 s (compiling)" in bench.format_stage_row(rows[1])


def test_memory_of_a_fit_through_the_cache_per_process(tiny_data, tmp_path, capsys):
    """The fit and each loader worker get their peak RSS; the workers read the memory-mapped cache."""
    cache = tmp_path / "cache"
    main(["memory", "--data", str(tiny_data), "--cache", str(cache), "--size", "32", "--width", "8",
          "--workers", "2", "--batch-size", "4", "--threads", "1"])
    out = capsys.readouterr().out
    assert "cache " in out and "(--cache-gb 0.05)" in out
    rows = [line for line in out.splitlines() if line.startswith("| fit") or line.startswith("| loader worker")]
    assert len(rows) == 3 and rows[0].startswith("| fit")  # the fit and its 2 workers
    assert all(float(line.split("|")[2]) > 0 and float(line.split("|")[3]) > 0 for line in rows)
    assert "getrusage ru_maxrss: fit" in out


def test_the_peak_memory_sampler_reads_this_process():
    with bench.PeakMemory(interval=0.01) as peaks:
        block = bytearray(64 * 2 ** 20)
        block[::4096] = b"x" * len(block[::4096])
    me = next(p for p in peaks.peaks.values() if p["role"] == "fit")
    assert me["VmHWM"] >= 64 and me["RssAnon"] >= 64 and me["Private"] >= 64
    assert peaks.total_pss >= me["Pss"] - 1e-9


def test_mapped_rss_counts_only_the_named_file():
    smaps = ("7f00-7f10 r--s 00000000 fd:01 12 /data/cache/images-0123456789abcdef.npy\nSize: 64 kB\nRss: 40 kB\n"
             "7f10-7f20 r-xp 00000000 fd:01 13 /usr/lib/libtorch.so\nRss: 900 kB\n"
             "7f20-7f30 rw-p 00000000 00:00 0\nRss: 7 kB\n")
    assert bench._mapped_rss(smaps, "images-*.npy") == 40  # the sampler's default: a cache's images, any key
    assert bench._mapped_rss(smaps, "index-*.json") == 0


def test_real_dataset_makes_a_kaggle_layout_from_single_channel_pngs(tmp_path):
    from runtime.labels import read_labels
    from runtime.reader import ImageFolder

    src = tmp_path / "src"
    src.mkdir()
    for k, c in enumerate(bench.CHANNELS):
        (src / f"id{k}_{c}.png").write_bytes(b"png")
    out = bench.real_dataset(tmp_path / "data", 5, src)
    labels = read_labels(out / "train.csv")
    assert len(labels) == 5 and all(1 <= len(v) <= 3 for v in labels.values())
    assert len(list((out / "train").glob("*.png"))) == 20 and ImageFolder(out / "train")
    with pytest.raises(FileNotFoundError, match="no real HPA PNGs"):
        bench.real_dataset(tmp_path / "other", 1, tmp_path / "empty")
