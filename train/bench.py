"""Training throughput and memory (figures are printed, never asserted on).

Three benchmarks, one command each (scripts/bench_train.py):

- ``model`` (the default): images/s of train fit's optimizer step (``train.fit.train_step``:
  forward, focal loss, backward, AdamW, schedule) and of inference on random input, plus the
  process's peak memory.
- ``stages``: per model, AMP setting, source (the ``--cache`` memory map or the PNG files) and
  number of loader workers, the rate of each stage of ``train fit``'s epoch and which one bounds
  it: *data* (the fit's own DataLoader: read or decode, augment, collate and normalise), *model*
  (``train.fit.train_step`` on one batch already in memory), *end to end* (the loader feeding
  ``train_step``, as an epoch does) and the *ideal* the two allow. On a CPU the loader and the
  model share the cores, so their times per image add up: ideal = 1 / (1/data + 1/model); on a
  GPU they overlap: ideal = the slower of the two (as in docs/benchmarks.md).
- ``memory``: peak RSS of each process (the fit and its loader workers) of a one-epoch fit
  through the cache, in a fresh process so that nothing before it counts.

``data`` writes a benchmark dataset in the Kaggle layout from real HPA PNGs (real compression
decodes far slower than synthetic fields) with seeded random labels.
"""

import fnmatch
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from runtime.classes import NUM_CLASSES
from runtime.cli import ArgumentParser, non_negative_float, non_negative_int, positive_int
from runtime.probe import cpu_info

REAL_PNGS = Path(__file__).resolve().parents[2] / "shared" / "hpa-real" / "single_channel"
CHANNELS = ("red", "green", "blue", "yellow")
AMP_CUDA_ONLY = "AMP is CUDA-only in train fit: on the CPU it trains float32 (the AMP-off figures)"


def bench_train(arch="resnet18", width=32, size=128, batch_size=16, steps=20, warmup=3, threads=0, attention="cbam",
                device="cpu"):
    """One configuration's figures: train fit's own step (``train.fit.train_step`` on its
    ``_FoldParts``: focal loss, AdamW, schedule) on random input, then inference. On CUDA that step
    trains as ``train fit`` does there: float16 autocast with a gradient scaler, channels-last;
    timings wait for the GPU."""
    from train.fit import _autocast

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    if cuda:  # this configuration's peak alone (--compare-plain runs a second one in the same process)
        torch.cuda.reset_peak_memory_stats(device)
    cfg = _config("", None, arch, width, size, batch_size, True, 0, str(device), threads, attention)
    parts = _parts(cfg, compiled=False)
    # drawn on the CPU, so every device is given the same seeded batch
    x = torch.randn(batch_size, 4, size, size).to(device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch_size, NUM_CLASSES) > 0.9).float().to(device)
    batches = iter(lambda: (x, y), None)

    parts.net.train()
    train_ips = _timed_batches(batches, warmup, steps, lambda b: _step(parts, b, device), device)[0]
    parts.model.eval()

    def infer(b):
        with _autocast(device, parts.amp):
            parts.model(b[0])
        return len(b[0])

    with torch.inference_mode():
        infer_ips = _timed_batches(batches, warmup, steps, infer, device)[0]
    return {
        "arch": arch, "attention": attention, "width": width, "size": size, "batch_size": batch_size,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "threads": torch.get_num_threads(), "params_m": sum(p.numel() for p in parts.model.parameters()) / 1e6,
        "train_images_per_s": train_ips, "inference_images_per_s": infer_ips,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20 if cuda else None,
    }


# ---------------------------------------------------------------------------------------------
# A benchmark dataset of real PNGs


def real_dataset(out, images, source=REAL_PNGS, seed=0):
    """``out``/train/{Id}_{channel}.png and ``out``/train.csv: ``images`` four-channel samples made of
    the real single-channel PNGs in ``source`` (hard links, or copies across file systems), with
    seeded random labels (1 to 3 classes each). Returns ``out``."""
    source, out = Path(source), Path(out)
    files = {c: sorted(source.glob(f"*_{c}.png")) for c in CHANNELS}
    if not all(files.values()):
        raise FileNotFoundError(2, "no real HPA PNGs of every channel (*_red.png ...) here; "
                                   "use `python -m train synth` for synthetic ones", str(source))
    train = out / "train"
    train.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["Id,Target"]
    for k in range(images):
        sample_id = f"bench{k:06d}"
        for c, fs in files.items():
            dst = train / f"{sample_id}_{c}.png"
            if not dst.exists():
                try:
                    os.link(fs[k % len(fs)], dst)
                except OSError:
                    shutil.copyfile(fs[k % len(fs)], dst)
        labels = rng.choice(NUM_CLASSES, size=int(rng.integers(1, 4)), replace=False)
        rows.append(f"{sample_id},{' '.join(str(int(v)) for v in sorted(labels))}")
    from runtime.writeutil import atomic_write_text

    atomic_write_text(out / "train.csv", "\n".join(rows) + "\n")
    return out


# ---------------------------------------------------------------------------------------------
# Stages of a training epoch


def _config(data, cache, arch, width, size, batch_size, amp, workers, device, threads, attention="cbam"):
    from train.config import FitConfig

    return FitConfig(data=str(data), out="", arch=arch, attention=attention, width=width, size=size,
                     batch_size=batch_size, amp=amp, workers=workers, device=device, threads=threads,
                     cache=str(cache or ""), cache_gb=0.0, epochs=1).check()


def _samples(data, size, cache):
    """The dataset as train fit holds it: memory-mapped from ``cache``, or (None) decoded from the
    PNG files at every access (``--cache-gb 0``)."""
    from runtime.preprocess import Preprocess
    from train.config import dataset_paths
    from train.data import Samples

    labels, images = dataset_paths(data)
    return Samples(labels, images, Preprocess(size=size), cache_gb=0.0, progress=False,
                   cache_dir=str(cache) if cache else None)


def _loader(cfg, samples):
    """train fit's loader for one epoch over every sample (class-balanced order, augmentation)."""
    from train.data import FoldDataset, balanced_weights
    from train.fit import _train_loader

    train_set = FoldDataset(samples, np.arange(len(samples.ids)), augment=cfg.augment, seed=cfg.seed)
    return _train_loader(cfg, samples.pp, train_set, balanced_weights(samples.y, cfg.sampler_power), 0, 0)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_batches(batches, warmup, steps, work, device):
    """Images/s of ``work`` over ``steps`` batches after ``warmup`` ones, and the seconds the
    warm-up took (with torch.compile: mostly compiling)."""
    it = iter(batches)
    t0 = time.perf_counter()
    for _ in range(warmup):
        work(next(it))
    _sync(device)
    t1 = time.perf_counter()
    images = 0
    for _ in range(steps):
        images += work(next(it))
    _sync(device)
    return images / (time.perf_counter() - t1), t1 - t0


def data_rate(cfg, samples, warmup=1, steps=20):
    """Images/s of train fit's loader alone (read or decode, augment, collate, normalise); the
    batch is moved to the device as the step does."""
    device = torch.device(cfg.device)
    loader = _loader(cfg, samples)
    steps = min(steps, len(loader) - warmup)
    if steps < 1:
        raise ValueError(f"{len(samples.ids)} samples make {len(loader)} batches of {cfg.batch_size}; "
                         f"the data stage needs more than {warmup}")
    return _timed_batches(loader, warmup, steps, lambda b: len(b[0].to(device)), device)[0]


def _parts(cfg, compiled):
    from train.fit import _FoldParts

    parts = _FoldParts(cfg, torch.device(cfg.device), steps=10 ** 6)  # the schedule never runs out
    if compiled:
        parts.net = torch.compile(parts.net)
    return parts


def model_rate(cfg, samples, warmup=1, steps=3, compiled=False):
    """(images/s, warm-up seconds) of train fit's step on one batch held in memory: no loading."""
    torch.manual_seed(0)
    device = torch.device(cfg.device)
    parts = _parts(cfg, compiled)
    x, y = next(iter(_loader(cfg, samples)))
    x, y = x.to(device), y.to(device)
    return _timed_batches(iter(lambda: (x, y), None), warmup, steps,
                          lambda b: _step(parts, b, device), device)


def end_to_end_rate(cfg, samples, warmup=1, steps=3, compiled=False):
    """Images/s of train fit's loader feeding its step, as an epoch runs."""
    torch.manual_seed(0)
    device = torch.device(cfg.device)
    parts = _parts(cfg, compiled)
    loader = _loader(cfg, samples)
    if len(loader) < warmup + steps:
        raise ValueError(f"{len(samples.ids)} samples make {len(loader)} batches of {cfg.batch_size}; "
                         f"end to end needs {warmup + steps}")
    return _timed_batches(loader, warmup, steps, lambda b: _step(parts, b, device), device)[0]


def _step(parts, batch, device):
    from train.fit import train_step

    train_step(parts, *batch, device)
    return len(batch[0])


def ideal_rate(data, model, device_type):
    """What the two stages allow together: overlapped on a GPU, sharing the cores on a CPU."""
    return min(data, model) if device_type == "cuda" else 1 / (1 / data + 1 / model)


def stage_table(data, cache, models=(("resnet18", 64), ("resnet50", 64)), size=512, batch_size=2, amps=(True, False),
                sources=("cache", "png"), workers=(2,), compiled=(False,), device="cpu", threads=0, warmup=1,
                steps=3, data_steps=20, attention="cbam", report=None):
    """One row per (model, AMP, compile, source, workers): the rates of each stage, the ideal and the
    bounding stage. Model rates are measured once per (model, AMP, compile) and data rates once per
    (source, workers). Where train fit does not use AMP (any device but CUDA) the AMP row says so
    instead of timing float32 a second time. ``report(row)`` sees each row as it is made."""
    device_type = torch.device(device).type
    if threads:
        torch.set_num_threads(threads)
    sets = {s: _samples(data, size, cache if s == "cache" else None) for s in sources}
    data_rates, rows = {}, []
    for arch, width in models:
        for amp in amps:
            for comp in compiled:
                base = {"arch": arch, "width": width, "attention": attention, "size": size, "batch_size": batch_size,
                        "amp": amp, "compile": comp, "device": device, "threads": torch.get_num_threads()}
                if amp and device_type != "cuda":
                    rows.append(dict(base, source="-", workers="-", data=None, model=None, end_to_end=None,
                                     ideal=None, bound=None, warmup_s=None, note=AMP_CUDA_ONLY))
                    report and report(rows[-1])
                    continue
                model = warm = None
                for source in sources:
                    for w in workers:
                        cfg = _config(data, cache if source == "cache" else None, arch, width, size, batch_size, amp,
                                      w, device, threads, attention)
                        if model is None:
                            model, warm = model_rate(cfg, sets[source], warmup, steps, comp)
                        if (source, w) not in data_rates:
                            data_rates[source, w] = data_rate(cfg, sets[source], warmup, data_steps)
                        d = data_rates[source, w]
                        e2e = end_to_end_rate(cfg, sets[source], warmup, steps, comp)
                        ideal = ideal_rate(d, model, device_type)
                        rows.append(dict(base, source=source, workers=w, data=d, model=model, end_to_end=e2e,
                                         ideal=ideal, bound="data" if d < model else "model", warmup_s=warm,
                                         note=""))
                        report and report(rows[-1])
    return rows


STAGE_HEADER = ("| model | AMP | compile | source | workers | data img/s | model img/s | end to end img/s | "
                "ideal img/s | of ideal | bound by | note |\n| --- | --- | --- | --- | --- | --- | --- | --- | "
                "--- | --- | --- | --- |")


def format_stage_row(r):
    def num(v):
        return "-" if v is None else f"{v:.2f}" if v < 100 else f"{v:.0f}"

    share = "-" if r["ideal"] is None else f"{100 * r['end_to_end'] / r['ideal']:.0f} %"
    note = r["note"] or (f"first step {r['warmup_s']:.0f} s (compiling)" if r["compile"] else "")
    name = f"{r['arch']} w{r['width']} {r['attention']} {r['size']} px b{r['batch_size']}"
    return (f"| {name} | {'on' if r['amp'] else 'off'} | {'yes' if r['compile'] else 'no'} | {r['source']} | "
            f"{r['workers']} | {num(r['data'])} | {num(r['model'])} | {num(r['end_to_end'])} | {num(r['ideal'])} | "
            f"{share} | {r['bound'] or '-'} | {note} |")


# ---------------------------------------------------------------------------------------------
# Peak memory per process


def _memory(pid, mapped="", full=True):
    """MiB of a process ({} once it has gone): VmHWM (the kernel's peak RSS), RssAnon (its
    anonymous memory: heap, tensors, arrays; no file's pages) and, when ``full``, Pss (its share
    of every page, shared pages divided among the processes mapping them: summed over processes,
    the memory really used), Private (pages no other process maps, the cache's pages that only
    this process read among them) and, with ``mapped``, the resident pages of the mappings of
    files whose name matches ``mapped`` (a glob: the cache's images-<key>.npy). The status figures
    cost microseconds; the smaps ones about 10 and 20 ms for a process that has imported torch."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "RssAnon:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
        if not full:
            return out
        private = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "Pss":
                out["Pss"] = int(value.split()[0]) / 1024
            elif key in ("Private_Clean", "Private_Dirty"):
                private += int(value.split()[0])
        out["Private"] = private / 1024
        if mapped:
            out["Cache"] = _mapped_rss(Path(f"/proc/{pid}/smaps").read_text(), mapped) / 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def _mapped_rss(smaps, name):
    """kB resident of the mappings of files whose name matches ``name`` (a glob) in a /proc/PID/smaps text."""
    total, inside = 0, False
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):  # a mapping's header line
            inside = len(head) == 6 and fnmatch.fnmatchcase(os.path.basename(head[5]), name)
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def _children(pid):
    """Child process ids of ``pid``: its threads' ``children`` lists (cheap enough to read every
    few tens of ms), else a scan of /proc for processes whose parent it is."""
    try:
        return [int(k) for t in os.scandir(f"/proc/{pid}/task")
                for k in Path(t.path, "children").read_text().split()]
    except (OSError, ValueError):
        pass
    kids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


class PeakMemory:
    """Samples the memory of this process and of its children (the loader workers) in a thread
    (``_memory``): the status figures every ``interval`` s, often enough to see the workers of a
    short epoch, and the smaps figures every ``full_every`` samples, rarely enough not to take a
    core from the measured fit. Per process the peak of each figure, and the peak of the
    processes' Pss summed at one instant (``total_pss``)."""

    def __init__(self, interval=0.05, mapped="images-*.npy", full_every=4):
        self.interval, self.mapped, self.full_every, self.peaks, self.total_pss = interval, mapped, full_every, {}, 0.0
        self._ticks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, full=True):
        me, pss = os.getpid(), 0.0
        for pid, role in [(me, "fit")] + [(p, "loader worker") for p in _children(me)]:
            figures = _memory(pid, self.mapped, full)
            if figures:
                peak = self.peaks.setdefault(pid, {"role": role})
                for key, value in figures.items():
                    peak[key] = max(peak.get(key, 0.0), value)
                pss += figures.get("Pss", 0.0)
        if full:
            self.total_pss = max(self.total_pss, pss)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._ticks += 1
            self._sample(full=self._ticks % self.full_every == 0)

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        return False


def _memory_child(cfg_dict, queue):
    """In a fresh process: one epoch of one fold of ``cfg``, measured."""
    import multiprocessing as mp

    mp.set_start_method(None, force=True)  # a spawned child inherits "spawn"; the loader forks as in train fit
    from train.config import FitConfig
    from train.fit import fit

    cfg = FitConfig(**cfg_dict)
    t0 = time.perf_counter()
    try:
        with PeakMemory() as peaks:
            fit(cfg, progress=False, merge_when_done=False)
    except BaseException as err:  # noqa: BLE001 - sent to the parent as its one line
        queue.put({"error": f"{type(err).__name__}: {err}"})
        return
    queue.put({"processes": list(peaks.peaks.values()), "total_pss_mb": peaks.total_pss,
               "seconds": time.perf_counter() - t0,
               "self_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "children_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024})


def fit_memory(data, cache="", size=512, cache_gb=0.05, workers=2, arch="resnet18", width=16, batch_size=4,
               threads=0, out=None):
    """Peak memory of each process of a one-epoch, one-fold fit (2 folds, --tta 1), run in a fresh
    process: returns {"processes": [{role, VmHWM, RssAnon, RssFile, ...} MiB], "seconds",
    "self_maxrss_mb" and "children_maxrss_mb" (getrusage in that process: itself, and its largest
    finished loader worker)}. With ``cache`` the cache must be complete already (its build is
    not what is measured)."""
    import multiprocessing as mp
    from queue import Empty

    from train.config import FitConfig

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        cfg = FitConfig(data=str(data), out=str(out or Path(tmp) / "run"), folds=2, fold=(0,), arch=arch, width=width,
                        size=size, epochs=1, batch_size=batch_size, tta=1, workers=workers, cache_gb=cache_gb,
                        cache=str(cache or ""), threads=threads, device="cpu").check()
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_memory_child, args=(cfg.to_dict(), queue))
        proc.start()
        result = None
        while result is None:
            try:
                result = queue.get(timeout=1)
            except Empty:
                if not proc.is_alive():
                    result = {"error": f"the process ended with exit code {proc.exitcode} and no figures"}
        proc.join()
    if "error" in result:
        raise RuntimeError(f"the measured fit failed: {result['error']}")
    return result


def cache_gb_of(cache):
    from train.cache import current_images
    return current_images(cache).stat().st_size / 2 ** 30


# ---------------------------------------------------------------------------------------------
# Command line


def _models(text):
    out = []
    for item in text.split(","):
        arch, _, width = item.partition(":")
        out.append((arch, int(width or 64)))
    return tuple(out)


def _choices(allowed):
    def parse(text):
        values = tuple(text.split(","))
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"{bad[0]!r}: valid values are {', '.join(allowed)}")
        return values
    return parse


def _on_off(text):
    return tuple(v == "on" for v in _choices(("on", "off"))(text))


def _ints(text):
    return tuple(int(v) for v in text.split(","))


def _context(device):
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    name = cpu_info()[0]  # the model name as runtime bench reads it
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load average {load}, torch {torch.__version__}"


def main_model(argv):
    p = ArgumentParser(prog="scripts/bench_train.py", description="CPU/GPU training throughput of the CBAM-ResNet "
                       "(sub-commands: stages, memory, data; see train/bench.py)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=positive_int, default=32)
    p.add_argument("--size", type=positive_int, default=128)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--threads", type=non_negative_int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (float16 autocast, as train fit uses there)")
    p.add_argument("--compare-plain", action="store_true", help="also time the same ResNet without CBAM")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = [bench_train(args.arch, args.width, args.size, args.batch_size, args.steps, threads=args.threads,
                        device=args.device)]
    if args.compare_plain:
        rows.append(bench_train(args.arch, args.width, args.size, args.batch_size, args.steps, threads=args.threads,
                                attention="none", device=args.device))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<28}{'size':>6}{'batch':>7}{'threads':>8}{'train img/s':>13}{'infer img/s':>13}{'peak RSS MB':>13}"
          f"{'peak GPU MB':>13}  device")
    for r in rows:
        name = f"{r['arch']} w{r['width']} {r['attention']} ({r['params_m']:.1f}M)"
        gpu = f"{r['peak_gpu_mb']:>13.0f}" if r["peak_gpu_mb"] is not None else f"{'-':>13}"
        print(f"{name:<28}{r['size']:>6}{r['batch_size']:>7}{r['threads']:>8}{r['train_images_per_s']:>13.1f}"
              f"{r['inference_images_per_s']:>13.1f}{r['peak_rss_mb']:>13.0f}{gpu}  {r['device']}")
    return 0


def main_stages(argv):
    p = ArgumentParser(prog="scripts/bench_train.py stages",
                       description="images/s of each stage of train fit's epoch: data, model, end to end, ideal")
    p.add_argument("--data", required=True, help="dataset in the Kaggle layout (scripts/bench_train.py data makes one)")
    p.add_argument("--cache", default="", help="the --cache DIR for the cache rows (built first when absent)")
    p.add_argument("--models", type=_models, default=(("resnet18", 64), ("resnet50", 64)),
                   help="ARCH:WIDTH,... (default resnet18:64,resnet50:64)")
    p.add_argument("--attention", default="cbam", choices=("cbam", "none"))
    p.add_argument("--size", type=positive_int, default=512)
    p.add_argument("--batch-size", type=positive_int, default=2)
    p.add_argument("--amp", type=_on_off, default=(True, False), help="on,off (default both)")
    p.add_argument("--sources", type=_choices(("cache", "png")), default=("cache", "png"))
    p.add_argument("--workers", type=_ints, default=(2,), help="loader workers, e.g. 0,2")
    p.add_argument("--compile", type=_choices(("no", "yes")), default=("no",),
                   help="no,yes: also time the model under torch.compile (its first steps compile)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=non_negative_int, default=0)
    p.add_argument("--warmup", type=positive_int, default=1)
    p.add_argument("--steps", type=positive_int, default=3, help="timed steps of the model and end to end")
    p.add_argument("--data-steps", type=positive_int, default=20, help="timed batches of the data stage")
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if "cache" in args.sources and not args.cache:
        p.error("--sources cache needs --cache DIR")
    print(_context(args.device))
    print(STAGE_HEADER, flush=True)
    rows = stage_table(args.data, args.cache, args.models, args.size, args.batch_size, args.amp, args.sources,
                       args.workers, tuple(v == "yes" for v in args.compile), args.device, args.threads, args.warmup,
                       args.steps, args.data_steps, args.attention,
                       report=lambda r: print(format_stage_row(r), flush=True))
    print(_context(args.device))
    if args.json:
        from runtime.writeutil import atomic_write_json

        atomic_write_json(args.json, rows)
    return 0


def main_memory(argv):
    p = ArgumentParser(prog="scripts/bench_train.py memory",
                       description="peak RSS of each process of a one-epoch fit through the cache")
    p.add_argument("--data", required=True)
    p.add_argument("--cache", default="", help="--cache DIR (built first when absent); empty: no cache")
    p.add_argument("--cache-gb", type=non_negative_float, default=0.05)
    p.add_argument("--size", type=positive_int, default=512)
    p.add_argument("--workers", type=non_negative_int, default=2)
    p.add_argument("--arch", default="resnet18")
    # 16, not 8: torch 2.14.1's channels-last CPU training of ResNet-18 at width 8 aborts with heap
    # corruption ("free(): invalid next size") from 256 px up on an AVX-512 EPYC; width 16 trains
    p.add_argument("--width", type=positive_int, default=16, help="small: the data path's memory is measured")
    p.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--threads", type=non_negative_int, default=0)
    args = p.parse_args(argv)
    if args.cache:
        _samples(args.data, args.size, args.cache)  # built here, so that the measured fit only reads it
        print(f"cache {args.cache}: {cache_gb_of(args.cache):.2f} GiB (--cache-gb {args.cache_gb})")
    print(_context("cpu"))
    r = fit_memory(args.data, args.cache, args.size, args.cache_gb, args.workers, args.arch, args.width,
                   args.batch_size, args.threads)
    print(format_memory(r))
    print(_context("cpu"))
    return 0


def format_memory(r):
    lines = [f"one epoch of fold 0 of 2 in {r['seconds']:.0f} s; all processes together (sum of Pss): peak "
             f"{r['total_pss_mb']:.0f} MiB; getrusage ru_maxrss: fit {r['self_maxrss_mb']:.0f} MiB, largest "
             f"finished loader worker {r['children_maxrss_mb']:.0f} MiB",
             "| process | peak RSS (VmHWM) MiB | peak anonymous (RssAnon) MiB | peak Pss MiB | peak private MiB | "
             "peak cache pages resident MiB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for p in r["processes"]:
        lines.append(f"| {p['role']} | {p.get('VmHWM', 0):.0f} | {p.get('RssAnon', 0):.0f} | {p.get('Pss', 0):.0f} | "
                     f"{p.get('Private', 0):.0f} | {p.get('Cache', 0):.0f} |")
    return "\n".join(lines)


def main_data(argv):
    p = ArgumentParser(prog="scripts/bench_train.py data", description="a benchmark dataset of real HPA PNGs")
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=positive_int, default=64)
    p.add_argument("--source", default=str(REAL_PNGS), help="folder of real single-channel PNGs")
    args = p.parse_args(argv)
    out = real_dataset(args.out, args.images, args.source)
    print(f"wrote {args.images} samples to {out / 'train'}; labels: {out / 'train.csv'}")
    return 0


COMMANDS = {"stages": main_stages, "memory": main_memory, "data": main_data}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return main_model(argv)
