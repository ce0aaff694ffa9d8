"""How decoding scales with cores: samples/s from PNG files to the model's input (decode the four
channels, resize, normalise; no model) with 1 worker and with N, per decoder (OpenCV, Wuffs) and
per kind of worker (threads, processes), timed in interleaved turns so that a change in the
machine's load hits every variant alike (``scripts/bench_decode.py``; docs/benchmarks.md).

``scaling`` = the N-worker rate / the 1-worker rate; the aim is at least 0.8 x the physical cores
(logical cores share a physical core's decoding units, so they count once)."""

import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from runtime.classes import CHANNELS
from runtime.cli import ArgumentParser, positive_int, positive_int_list
from runtime.decoders import imdecode, wuffs_available, wuffs_decoder, wuffs_format
from runtime.pipeline import decoded_batches, load_into, opencv_single_threaded
from runtime.preprocess import Preprocess, image_chw_into
from runtime.probe import cpu_info
from runtime.reader import ImageFolder, decode_channel


def physical_cores(cpuinfo="/proc/cpuinfo"):
    """(physical cores this process may run on, how that was found): the distinct (physical id,
    core id) pairs of /proc/cpuinfo among the CPUs of os.sched_getaffinity (a container or
    ``taskset`` may allow fewer than the machine has; logical siblings of one core count once);
    the allowed CPUs themselves where /proc/cpuinfo says nothing of cores."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    cores, cpu, package = {}, None, "0"
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            cpu = int(value)
        elif key == "physical id":
            package = value
        elif key == "core id" and cpu is not None:
            cores[cpu] = (package, value)
    found = {cores[c] for c in allowed if c in cores}
    if not found:
        return len(allowed), f"{len(allowed)} CPUs allowed by sched_getaffinity; no core ids in {cpuinfo}"
    return len(found), f"core ids in {cpuinfo} of the {len(allowed)} CPUs allowed by sched_getaffinity"


def samples_from_channels(src, dst, count):
    """``count`` four-channel samples in ``dst`` from single-channel PNGs ``*_{channel}.png`` in
    ``src`` (one real file per channel name, taken in turn); returns ``dst``."""
    files = {c: sorted(Path(src).glob(f"*_{c}.png")) for c in CHANNELS}
    missing = [c for c, found in files.items() if not found]
    if missing:
        raise ValueError(f"{src}: no *_{missing[0]}.png channel files")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        for c, found in files.items():
            shutil.copyfile(found[k % len(found)], dst / f"s{k:04d}_{c}.png")
    return dst


def rate(folder, ids, pp, workers, processes=False, batch_size=32):
    """Samples/s of decoded_batches over ``ids`` (pool start included, as ``runtime infer`` pays it)."""
    t0 = time.perf_counter()
    n = sum(len(b.ids) for b in decoded_batches(folder, ids, pp, batch_size, workers, processes=processes))
    return n / (time.perf_counter() - t0)


def scaling(folder, ids, pp, variants, rounds=3):
    """{variant: median samples/s} for ``variants`` = [(name, workers, processes)], every variant
    timed once per round, in turns (after one untimed pass that warms the file cache)."""
    rate(folder, ids, pp, 0)
    times = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            times[v].append(rate(folder, ids, pp, v[1], v[2]))
    return {v: statistics.median(r) for v, r in times.items()}


def measure(images, size, workers, decoders, kinds, rounds, samples):
    """Rows of one folder: per decoder, kind of worker and N in ``workers``, the 1-worker and
    N-worker rates."""
    pp = Preprocess(size=size)
    rows = []
    for decoder in decoders:
        folder = ImageFolder(images, decoder=decoder)
        ids = folder.ids()
        ids = (ids * (samples // max(1, len(ids)) + 1))[:samples] if samples else ids
        variants = [(k, w, k == "processes") for k in kinds for w in sorted({1, *workers})]
        medians = scaling(folder, ids, pp, variants, rounds)
        for kind in kinds:
            one = medians[(kind, 1, kind == "processes")]
            for n in sorted(set(workers) - {1}):
                many = medians[(kind, n, kind == "processes")]
                rows.append({"images": str(images), "decoder": decoder, "workers": kind, "n": n, "one_per_s": one,
                             "n_per_s": many, "scaling": many / one, "samples": len(ids)})
    return rows


# The layers one channel file goes through, each timed including the ones above it: the library's
# own call on the file's bytes in memory (cv2.imdecode; pywuffs' decode and its pixbuf, the one
# read the reader makes), runtime.decoders.imdecode (the PNG chunk walk that picks Wuffs or
# OpenCV, the thread's decoder), and the reader (runtime.reader.decode_channel: open, the size
# checks, one pread, closing). What a layer adds over the one above is the toolkit's overhead; the
# first layer's ratio is the most any wrapper could show.
LAYERS = ("library", "imdecode", "reader")


def _library_call(decoder, blob, plan):
    """The decoder library's own call on PNG bytes (``plan``: wuffs_format's answer)."""
    if decoder == "wuffs" and plan is not None:
        return wuffs_decoder(plan[0]).decode(blob).pixbuf
    return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)


def per_channel(pngs, decoders, passes=7):
    """{decoder: {layer: (median wall ms, median CPU ms)}} per channel file on one thread, for
    each of LAYERS: every file of ``pngs`` decoded, the decoders and layers in turns, ``passes``
    times. CPU time (time.thread_time) is what a loaded machine inflates least: waiting for a core
    is not counted."""
    files = sorted(Path(pngs).glob("*.png"))
    if not files:
        raise ValueError(f"{pngs}: no .png files")
    blobs = [f.read_bytes() for f in files]
    plans = [wuffs_format(b) for b in blobs]
    runs = {"library": lambda d: [_library_call(d, b, plan) is None for b, plan in zip(blobs, plans)],
            "imdecode": lambda d: [imdecode(b, f, d) is None for b, f in zip(blobs, files)],
            "reader": lambda d: [decode_channel(f, decoder=d) is None for f in files]}
    turns = [(d, layer) for d in decoders for layer in LAYERS]
    wall, cpu = {t: [] for t in turns}, {t: [] for t in turns}
    with opencv_single_threaded():
        for d, layer in turns:
            runs[layer](d)  # warm the file cache and the decoder
        for _ in range(passes):
            for d, layer in turns:
                w0, c0 = time.perf_counter(), time.thread_time()
                runs[layer](d)
                wall[d, layer].append((time.perf_counter() - w0) * 1000 / len(files))
                cpu[d, layer].append((time.thread_time() - c0) * 1000 / len(files))
    return {d: {layer: (statistics.median(wall[d, layer]), statistics.median(cpu[d, layer])) for layer in LAYERS}
            for d in decoders}


def setup_per_call(decoders, calls=2000):
    """{decoder: microseconds} for one library call on a 1x1 gray PNG (best of 5 runs of ``calls``):
    what a call costs before any pixel, paid once per channel file."""
    blob = cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes()
    plan = wuffs_format(blob)
    best = {}
    for d in decoders:
        _library_call(d, blob, plan)
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls):
                _library_call(d, blob, plan)
            runs.append((time.perf_counter() - t0) * 1e6 / calls)
        best[d] = min(runs)
    return best


def format_per_channel(ms, setup):
    """The per_channel table: a row per layer, CPU (wall) ms per decoder, and Wuffs' lead."""
    both = {"opencv", "wuffs"} <= set(ms)
    lines = [f"{'layer':<44}" + "".join(f"{d + ' CPU (wall) ms':>24}" for d in ms) + ("  wuffs vs opencv, CPU (wall)"
                                                                                    if both else "")]
    names = {"library": "library call, bytes in memory", "imdecode": "+ runtime.decoders.imdecode",
             "reader": "+ reader (decode_channel: open, checks, read)"}
    for layer in LAYERS:
        row = f"{names[layer]:<44}" + "".join(f"{ms[d][layer][1]:>15.3f} ({ms[d][layer][0]:.3f})" for d in ms)
        if both:
            o, w = ms["opencv"][layer], ms["wuffs"][layer]
            row += f"  {o[1] / w[1]:.2f}x ({o[0] / w[0]:.2f}x)"
        lines.append(row)
    lines.append("one call on a 1x1 PNG (set-up before any pixel): "
                 + ", ".join(f"{d} {us:.1f} us" for d, us in setup.items()))
    return "\n".join(lines)


def around_decode(folder, pp, ids, passes=5):
    """(whole sample us, decode + resize us) on one thread, minimum over ``passes``: ``load_into``
    against the bare decoder and resize calls on the same files' bytes, already in memory. The
    difference is reading, checks and the Python between calls: an upper bound on the share a
    sample holds the GIL (file syscalls release it too), which caps N threads at
    1 / (share + (1 - share) / N) (Amdahl)."""
    files = [[folder.channel_path(i, c) for c in CHANNELS] for i in ids]
    blobs = [[f.read_bytes() for f in sample] for sample in files]
    out = np.empty((4, pp.size, pp.size), np.uint8)

    def whole():
        for sample_id in ids:
            load_into(folder, pp, sample_id, out)

    def bare():
        for sample in blobs:
            image_chw_into([imdecode(blob, "", folder.decoder) for blob in sample], pp, out)

    best = {whole: math.inf, bare: math.inf}
    with opencv_single_threaded():
        for _ in range(passes):
            for fn in best:
                t0 = time.perf_counter()
                fn()
                best[fn] = min(best[fn], (time.perf_counter() - t0) * 1e6 / len(ids))
    return best[whole], best[bare]


def format_rows(rows, cores):
    lines = [f"{'images':<34}{'decoder':<8}{'workers':<11}{'1 worker':>10}{'N':>4}{'N workers':>11}"
             f"{'scaling':>9}{'of cores':>10}"]
    for r in rows:
        lines.append(f"{Path(r['images']).name[:33]:<34}{r['decoder']:<8}{r['workers']:<11}{r['one_per_s']:>10.1f}"
                     f"{r['n']:>4}{r['n_per_s']:>11.1f}{r['scaling']:>8.2f}x{r['scaling'] / cores:>9.0%}")
    return "\n".join(lines)


def main(argv=None):
    p = ArgumentParser(prog="scripts/bench_decode.py", description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="*", help="image folders of four-channel samples")
    p.add_argument("--channels", default="", help="a folder of single-channel PNGs (*_{red,...}.png): "
                                                  "--samples four-channel samples are made from it in a temp folder")
    p.add_argument("--samples", type=positive_int, default=None,
                   help="samples per run (Ids repeated when a folder has fewer)")
    p.add_argument("--size", type=positive_int, default=96, help="the model's input size (resize target)")
    p.add_argument("--workers", default="", help="comma-separated N (default: the physical and the logical cores)")
    p.add_argument("--decoders", default="opencv,wuffs" if wuffs_available() else "opencv")
    p.add_argument("--kinds", default="threads,processes", help="threads, processes or both")
    p.add_argument("--rounds", type=positive_int, default=3)
    p.add_argument("--passes", type=positive_int, default=7, help="passes over --channels' files per decoder and layer")
    args = p.parse_args(argv)
    cores, how = physical_cores()
    workers = positive_int_list(args.workers) if args.workers else sorted({cores, os.cpu_count() or 1})
    name, _ = cpu_info()
    print(f"CPU: {name}; {os.cpu_count()} logical cores, {cores} physical ({how}); load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        folders = list(args.folders)
        if args.channels:
            decoders = args.decoders.split(",")
            ms = per_channel(args.channels, decoders, args.passes)
            print(f"one thread, per channel file of {args.channels} (median of {args.passes} passes, decoders and "
                  f"layers in turns):\n" + format_per_channel(ms, setup_per_call(decoders)), flush=True)
            folders.append(samples_from_channels(args.channels, Path(tmp) / "real", args.samples or 200))
        rows = []
        for folder in folders:
            for decoder in args.decoders.split(","):
                f = ImageFolder(folder, decoder=decoder)
                whole, bare = around_decode(f, Preprocess(size=args.size), f.ids()[:50])
                share = 1 - bare / whole
                print(f"{Path(folder).name} {decoder}: one sample {whole:.0f} us on one thread, its decode + resize "
                      f"{bare:.0f} us; reading, checks and Python {whole - bare:.0f} us ({share:.1%}): at most "
                      f"{1 / (share + (1 - share) / 16):.1f}x on 16 threads if all of it held the GIL", flush=True)
            rows += measure(folder, args.size, workers, args.decoders.split(","), args.kinds.split(","),
                            args.rounds, args.samples)
            print(format_rows([r for r in rows if r["images"] == str(folder)], cores), flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
