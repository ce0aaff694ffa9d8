"""``python -m runtime bench``: throughput (images/s) and latency (p50/p95/p99) per backend and
batch size for the model alone (the backends timed in turns, so their ratios hold on a busy
machine), decoding alone (PNG files to the model's input, on the same
threads ``runtime infer`` uses), and end to end from PNG files (sequential decode-then-infer,
and pipelined), with how close the pipelined run comes to the ideal the two parts allow. The
project's performance benchmark; not a timed test (docs/benchmarks.md).

The ideal (IDEAL_RULES, printed under the table): when decoding and the model share the CPU cores,
their times per image add up, so 1 / (1/decode + 1/model); when the model runs on a GPU, the
slower of the two. Each end-to-end round takes its decode and model figures beside it, so the
ratio compares one moment's load (the machine may be shared).

Figures are for one view per image: a model exported with test-time augmentation (model.json
``tta``) does that many times the model work per image in ``runtime infer`` unless run with
``--tta 1``.

Decoding alone is measured with one worker and with all of them (``--workers``), in turns, and
the rows say the decoder (``--decoder``), the kind of worker and the scaling: the N-worker rate
over the 1-worker rate (runtime/pipeline.py; docs/benchmarks.md).

Bounded time: the model is timed ``seconds`` per backend and batch size (the backends in turns), so
a bench's model timing is about backends x batch sizes x seconds, plus a warm-up call each; that
plan must be finite and at most MAX_MODEL_SECONDS (one hour), or the bench is refused before
anything loads. With ``--images`` it adds passes over the folder's samples (seven for decode-only,
nine per backend end to end: three rounds of sequential, decode-only and pipelined, each round
with a second of the model alone), a time set by the folder's size."""

import logging
import math
import statistics
import time
from contextlib import ExitStack

import numpy as np

from runtime.backends import make_backend
from runtime.backends.base import backend_class, check_options, option_pair
from runtime.bench_decode import physical_cores
from runtime.errors import DataError
from runtime.model_spec import load_model_spec
from runtime.pipeline import decoded_batches, worker_kind
from runtime.probe import cpu_info, interleaved
from runtime.reader import ImageFolder
from runtime.writeutil import atomic_write_json


log = logging.getLogger(__name__)

MAX_MODEL_SECONDS = 3600.0


def check_plan(n_backends, batch_sizes, seconds):
    """ValueError (one line) unless the model timing of a bench is finite and at most MAX_MODEL_SECONDS."""
    if not 0 < seconds < math.inf:
        raise ValueError(f"--seconds must be a finite number above 0, got {seconds}")
    planned = n_backends * len(batch_sizes) * seconds
    if planned > MAX_MODEL_SECONDS:
        raise ValueError(f"--seconds {seconds:g} for {n_backends} backend(s) x {len(batch_sizes)} batch size(s) plans "
                         f"{planned:.0f} s of model timing; a bench is limited to {MAX_MODEL_SECONDS:.0f} s")


def model_only(backends, batch_size, seconds, rng):
    """Latency stats of each backend at one batch size, the backends timed in turns."""
    size = backends[0].spec.preprocess.size
    x = rng.integers(0, 256, (batch_size, 4, size, size), dtype=np.uint8)  # the images backends take
    times = interleaved([lambda b=b: b.infer(x) for b in backends], seconds, block=min(1.0, seconds / 3))
    return [_stats(batch_size, np.array(t) * 1000) for t in times]


def _stats(batch_size, ms):
    return {"images_per_s": batch_size * len(ms) / (ms.sum() / 1000), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)), "calls": len(ms)}


def _through(folder, ids, pp, batch_size, workers, infer=None):
    """Images/s from PNG files to (optionally) the model's output."""
    t0 = time.perf_counter()
    n = 0
    for batch in decoded_batches(folder, ids, pp, batch_size, workers):
        if batch.ids and infer:
            infer(batch.images)
        n += len(batch.ids)
    return n / (time.perf_counter() - t0)


IDEAL_RULES = {"cpu": "1/(1/decode + 1/model): decoding and the model share the CPU cores",
               "cuda": "min(decode, model): decoding on the CPU overlaps the model on the GPU"}


def ideal(decode, model, device):
    """The most end to end can reach: decode and model time add up on shared CPU cores; with the
    model on a GPU the slower of the two (IDEAL_RULES)."""
    return min(decode, model) if device == "cuda" else 1 / (1 / decode + 1 / model)


def _end_to_end(backend, folder, ids, b, workers, rounds=3, model_seconds=1.0):
    """e2e-sequential, then e2e-pipelined ``rounds`` times, each round also timing decoding alone
    (the same workers) and the model alone (batch ``b``) just before it: the round's ideal comes
    from figures taken under the same load as its end-to-end run, and the row gives the medians
    (a bench on a shared machine would otherwise compare moments of different load)."""
    pp = backend.spec.preprocess
    _through(folder, ids[: 2 * b], pp, b, workers, backend.infer)  # warm the file cache and the session
    x = np.random.default_rng(0).integers(0, 256, (b, 4, pp.size, pp.size), dtype=np.uint8)
    rule = "cuda" if backend.device == "cuda" else "cpu"
    measured = {"sequential": [], "pipelined": [], "decode": [], "model": [], "ideal": [], "of_ideal": []}
    for _ in range(rounds):
        measured["sequential"].append(_through(folder, ids, pp, b, 0, backend.infer))
        measured["decode"].append(_through(folder, ids, pp, b, workers))
        times = interleaved([lambda: backend.infer(x)], model_seconds, block=model_seconds)[0]
        measured["model"].append(b * len(times) / sum(times))
        measured["pipelined"].append(_through(folder, ids, pp, b, workers, backend.infer))
        measured["ideal"].append(ideal(measured["decode"][-1], measured["model"][-1], rule))
        measured["of_ideal"].append(measured["pipelined"][-1] / measured["ideal"][-1])
    med = {k: statistics.median(v) for k, v in measured.items()}
    common = {"backend": backend.description, "batch_size": b, "images": len(ids), "rounds": rounds,
              "ideal_rule": IDEAL_RULES[rule], "round_decode_per_s": med["decode"], "round_model_per_s": med["model"],
              "ideal_per_s": med["ideal"]}
    return [{**common, "mode": "e2e-sequential", "images_per_s": med["sequential"],
             "of_ideal": statistics.median(s / i for s, i in zip(measured["sequential"], measured["ideal"]))},
            {**common, "mode": f"e2e-pipelined({workers} {worker_kind(folder, ids, workers)})",
             "images_per_s": med["pipelined"], "of_ideal": med["of_ideal"]}]


def bench_item(text):
    """One ``--backend`` item, ``name[:precision][+key=value...]`` -> (``name[:precision]``, {key: value}).
    A bad option is a ValueError naming the item as it was typed (it is no --backend-option)."""
    head, *pairs = text.split("+")
    name = head.partition(":")[0]
    taken = backend_class(name).options
    options = {}
    for pair in pairs:
        parsed = option_pair(pair)
        if parsed is None:
            raise ValueError(f"--backend item {text!r}: +{pair} is not +KEY=VALUE "
                             "(e.g. onnxruntime-cuda:fp16+cuda_graph=1)")
        if parsed[0] not in taken:
            raise ValueError(f"--backend item {text!r}: {name} takes no option {parsed[0]!r} "
                             + (f"(it takes: {', '.join(taken)})" if taken else "(it takes none)"))
        options[parsed[0]] = parsed[1]
    return head, options


# *Decision*: a batch of the default 512-px model at 1024 images is 4 GiB as float32; no engine here
# gains from a larger one, and a typo of 100000 would take the machine's memory.
MAX_BATCH_BYTES = 4 << 30


def bench(model, backends="onnxruntime:fp32", batch_sizes=(1, 8, 32), images=None, seconds=3.0, workers=4,
          json_path=None, decoder="auto", options=None):
    """Rows per backend: the model alone at each batch size (the backends timed in turns), then
    (with ``images``) decoding alone with 1 worker and with ``workers`` (measured once, before the
    first end-to-end run) and end to end at the largest batch. ``options``: backend options, each
    backend given the ones it takes; an item ``name:precision+key=value+...`` adds its own (so one
    run can time a backend with and without an option, e.g. ``onnxruntime-cuda:fp16+cuda_graph=1``)."""
    items = [b.strip() for b in backends.split(",") if b.strip()]
    check_plan(len(items), batch_sizes, seconds)
    items = [bench_item(item) for item in items]
    options = check_options([item.partition(":")[0] for item, _ in items], options or {})
    items = [(item, {**options, **own}) for item, own in items]
    spec = load_model_spec(model)
    rng = np.random.default_rng(0)
    folder = ImageFolder(images, decoder=decoder) if images else None
    size = spec.preprocess.size
    for b in batch_sizes:  # the random model input is made whole: bound it before allocating
        if b * 4 * size * size * 4 > MAX_BATCH_BYTES:
            gib = b * 16 * size * size / 2**30
            raise DataError("--batch-sizes", f"{b} images of 4 x {size} x {size} are {gib:.1f} GiB as float32, "
                                             f"over the {MAX_BATCH_BYTES >> 30} GiB a bench batch may take")
    ids = readable_ids(folder, spec.preprocess, max(batch_sizes), workers) if folder else []
    rows, decoded = [], False
    with ExitStack() as stack:
        opened = []
        for item, own in items:  # own: --backend-option's, then the item's +key=value ones
            name, _, precision = item.partition(":")
            opened.append(stack.enter_context(make_backend(spec, name, "ensemble", precision or None,
                                                           partial_options=True, **own)))
        stats = [model_only(opened, b, seconds, rng) for b in batch_sizes]
        for k, backend in enumerate(opened):
            model_rows = [{"backend": backend.description, "mode": "model", "batch_size": b, **per[k]}
                          for b, per in zip(batch_sizes, stats)]
            rows += model_rows
            if folder and not decoded:
                rows += _decode_only(folder, ids, spec.preprocess, max(batch_sizes), workers)
                decoded = True
            if folder:
                rows += _end_to_end(backend, folder, ids, max(batch_sizes), workers)
    if json_path:
        name, flags = cpu_info()
        atomic_write_json(json_path, {"cpu": name, "cpu_flags": flags, "rows": rows})
    return rows


def readable_ids(folder, pp, batch_size, workers):
    """The Ids of ``folder`` whose samples decode, found in one pass (which also warms the file
    cache). The others (a missing channel, an unreadable file) are left out of every figure, and
    one warning line says how many and the first one's file and reason: a figure over fewer
    samples than the folder holds is never silent."""
    ids, problems = folder.listing()
    if not ids and not problems:
        raise DataError(folder.root, "no samples here (no {Id}_{red,green,blue,yellow} image files)")
    bad = {sample_id: f"{folder.root}: Id {sample_id!r}: {reason}" for sample_id, reason in problems.items()}
    for batch in decoded_batches(folder, ids, pp, batch_size, workers):
        bad.update((sample_id, f"{path}: {reason}") for sample_id, path, reason in batch.errors)
    good = [i for i in ids if i not in bad]
    if not good:
        raise DataError(folder.root, f"none of its {len(bad)} samples can be read (first: {next(iter(bad.values()))}; "
                                     "runtime infer's errors.csv says why for each)")
    if bad:
        log.warning("%s: %d of %d samples cannot be read and are left out of the figures (first: %s; runtime "
                    "infer's errors.csv lists each)", folder.root, len(bad), len(good) + len(bad),
                    next(iter(bad.values())))
    return good


def _decode_only(folder, ids, pp, batch_size, workers, rounds=3):
    """Decode-only rows with 1 worker and with ``workers`` (the kind runtime infer would use),
    each the median of ``rounds`` runs timed in turns; the second row's ``scaling`` is its rate
    over the first's."""
    _through(folder, ids, pp, batch_size, workers)  # warm the file cache (and start nothing twice)
    counts = [1] if workers <= 1 else [1, workers]
    rates = {w: [] for w in counts}
    for _ in range(rounds):
        for w in counts:
            rates[w].append(_through(folder, ids, pp, batch_size, w))
    rows = []
    for w in counts:
        kind = worker_kind(folder, ids, w)
        rows.append({"backend": "-", "mode": f"decode-only({folder.decoder}, {w} {kind[:-1] if w == 1 else kind})",
                     "decoder": folder.decoder, "workers": w, "worker_kind": kind, "batch_size": batch_size,
                     "images_per_s": statistics.median(rates[w]), "images": len(ids)})
    if any(r["images_per_s"] == 0 for r in rows):
        raise DataError(folder.root, "no sample here could be read (runtime infer's errors.csv says why for each)")
    if len(rows) == 2:
        cores, how = physical_cores()
        rows[1].update(scaling=rows[1]["images_per_s"] / rows[0]["images_per_s"], physical_cores=cores,
                       cores_from=how)
        rows[1]["of_cores"] = rows[1]["scaling"] / min(cores, workers)
    return rows


def format_table(rows):
    """The rows as a table, then how the ideal and the scaling were reckoned."""
    lines = [f"{'backend':<52}{'mode':<34}{'batch':>6}{'img/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
             f"{'ideal':>9}{'of ideal':>9}"]
    for r in rows:
        lat = "".join(f"{r[k]:>9.2f}" if k in r else f"{'':>9}" for k in ("p50_ms", "p95_ms", "p99_ms"))
        vs = f"{r['ideal_per_s']:>9.1f}{r['of_ideal']:>8.0%}" if "ideal_per_s" in r else \
            f"{'':>9}{r['scaling']:>8.2f}x of 1 worker ({r['of_cores']:.0%} of " \
            f"{min(r['physical_cores'], r['workers'])} cores)" if "scaling" in r else ""
        lines.append(f"{r['backend']:<52}{r['mode']:<34}{r['batch_size']:>6}{r['images_per_s']:>10.1f}{lat}{vs}")
    for rule in dict.fromkeys(r["ideal_rule"] for r in rows if "ideal_rule" in r):
        n = next(r["rounds"] for r in rows if r.get("ideal_rule") == rule)
        lines.append(f"ideal = {rule}; per round of {n}, from decode-only and model-only timed beside that "
                     "round's end-to-end run; medians shown")
    for r in rows:
        if "scaling" in r:
            lines.append(f"scaling: {r['workers']} workers over 1; cores: {r['physical_cores']} physical "
                         f"({r['cores_from']}); the aim is 80 % of min(workers, cores)")
    return "\n".join(lines)
