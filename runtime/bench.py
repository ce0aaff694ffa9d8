"""``python -m runtime bench``: throughput (images/s) and latency (p50/p95/p99) per backend and
batch size, for the model alone and end to end from PNG files (pipelined decoding against a
sequential decode-then-infer loop). The project's performance benchmark; not a timed test.

Figures are for one view per image: a model exported with test-time augmentation (model.json
``tta``) does that many times the model work per image in ``runtime infer`` unless run with
``--tta 1``."""

import platform
import time

import numpy as np

from runtime.backends import make_backend
from runtime.model_spec import load_model_spec
from runtime.pipeline import decoded_batches
from runtime.reader import ImageFolder
from runtime.writeutil import atomic_write_json


def _model_only(backend, batch_size, seconds, rng):
    size = backend.spec.preprocess.size
    x = rng.standard_normal((batch_size, 4, size, size), dtype=np.float32)
    for _ in range(2):
        backend.infer(x)
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < 5:
        t0 = time.perf_counter()
        backend.infer(x)
        latencies.append(time.perf_counter() - t0)
    ms = np.array(latencies) * 1000
    return {"images_per_s": batch_size * len(ms) / (ms.sum() / 1000), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)), "calls": len(ms)}


def _end_to_end(backend, folder, ids, batch_size, workers):
    t0 = time.perf_counter()
    n = 0
    for batch in decoded_batches(folder, ids, backend.spec.preprocess, batch_size, workers):
        if batch.ids:
            backend.infer(batch.images)
        n += len(batch.ids)
    return n / (time.perf_counter() - t0)


def bench(model, backends="onnxruntime:fp32", batch_sizes=(1, 8, 32), images=None, seconds=3.0, workers=4,
          json_path=None):
    spec = load_model_spec(model)
    rng = np.random.default_rng(0)
    rows = []
    for item in [b.strip() for b in backends.split(",") if b.strip()]:
        name, _, precision = item.partition(":")
        backend = make_backend(spec, name, "ensemble", precision or None)
        with backend:
            for b in batch_sizes:
                rows.append({"backend": backend.description, "mode": "model", "batch_size": b,
                             **_model_only(backend, b, seconds, rng)})
            if images:
                folder = ImageFolder(images)
                ids = folder.ids()
                b = max(batch_sizes)
                _end_to_end(backend, folder, ids[: 2 * b], b, workers)  # warm the file cache
                for mode, w in (("e2e-sequential", 0), (f"e2e-pipelined({workers} threads)", workers)):
                    rows.append({"backend": backend.description, "mode": mode, "batch_size": b,
                                 "images_per_s": _end_to_end(backend, folder, ids, b, w), "images": len(ids)})
    if json_path:
        atomic_write_json(json_path, {"machine": platform.processor() or platform.machine(), "rows": rows})
    return rows


def format_table(rows):
    lines = [f"{'backend':<52}{'mode':<28}{'batch':>6}{'img/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"]
    for r in rows:
        lat = "".join(f"{r[k]:>9.2f}" if k in r else f"{'':>9}" for k in ("p50_ms", "p95_ms", "p99_ms"))
        lines.append(f"{r['backend']:<52}{r['mode']:<28}{r['batch_size']:>6}{r['images_per_s']:>10.1f}{lat}")
    return "\n".join(lines)
