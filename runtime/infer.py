"""Batch inference to Kaggle-format files, atomically and resumably.

Results are journaled as they come: every few batches a chunk file is written atomically under
``OUT/.chunks/``; the final ``submission.csv``, ``probabilities.csv`` and ``errors.csv`` are
assembled from the chunks at the end (each written to a temporary file, then renamed). An
interrupted run therefore never leaves a half-written CSV, and ``--resume`` skips every Id
already in a chunk. A fresh run (no ``--resume``) clears the previous run's files first.

Submission rule: ``Predicted`` lists the classes whose probability is above their threshold; an
image with none gets its single most probable class (Kaggle's metric gives an empty prediction no
credit, and every HPA image has at least one label).
"""

import csv
import io
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from runtime.classes import CLASS_NAMES
from runtime.pipeline import decoded_batches
from runtime.tta import check_views
from runtime.writeutil import atomic_write_json, atomic_write_text


log = logging.getLogger(__name__)

FINAL = ("submission.csv", "probabilities.csv", "errors.csv", "summary.json")
CHUNKS = ".chunks"


def predicted_classes(probs, thresholds):
    """Class indices above threshold, or the most probable class when none is."""
    above = np.flatnonzero(probs > thresholds)
    return above.tolist() if len(above) else [int(np.argmax(probs))]


def shard_ids(ids, shard):
    """The Ids of shard 'i/n': every n-th Id starting at i, in the given order (deterministic)."""
    if not shard:
        return list(ids)
    try:
        i, n = (int(v) for v in shard.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {shard}: need 0 <= i < n")
    return list(ids)[i::n]


def _read_chunks(folder):
    probs, errors = {}, {}
    for path in sorted(folder.glob("chunk-*.csv")):
        with open(path, newline="") as handle:
            for row in csv.reader(handle):
                if row[1] == "ok":
                    probs[row[0]] = np.array([float(v) for v in row[4:]], np.float32)
                else:
                    errors[row[0]] = (row[2], row[3])
    return probs, errors


def _write_chunk(folder, index, ids, probs, errors):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for sample_id, p in zip(ids, probs):
        writer.writerow([sample_id, "ok", "", "", *(f"{v:.6f}" for v in p)])
    for sample_id, path, reason in errors:
        writer.writerow([sample_id, "error", path, reason])
    atomic_write_text(folder / f"chunk-{index:06d}.csv", buf.getvalue())


def run_inference(backend, folder, ids, out, batch_size=32, thresholds=None, resume=False, workers=4,
                  chunk_batches=4, progress=None, views=None):
    """Infer every Id; returns the summary dict. ``backend`` must already be entered.

    ``views``: test-time views averaged per image (runtime.tta); default model.json's ``tta``.
    ``thresholds``: default the ones model.json has tuned for that many views."""
    spec = backend.spec
    views = spec.tta if views is None else check_views(views)
    threshold_mode = "given"
    if thresholds is None:
        thresholds, exact = spec.thresholds_for(views, backend.file)
        threshold_mode = f"tuned for {views} view(s)" if exact else f"tuned for {spec.tta} view(s), run with {views}"
        if not exact:
            log.warning("model.json has no thresholds tuned for %d test-time view(s); using those for %d", views, spec.tta)
    out = Path(out)
    chunks = out / CHUNKS
    if not resume:
        shutil.rmtree(chunks, ignore_errors=True)
        for name in FINAL:
            (out / name).unlink(missing_ok=True)
    chunks.mkdir(parents=True, exist_ok=True)
    done_probs, done_errors = _read_chunks(chunks)
    todo = [i for i in ids if i not in done_probs and i not in done_errors]
    index = len(list(chunks.glob("chunk-*.csv")))
    bar = progress(total=len(ids), initial=len(ids) - len(todo), unit="img", desc="infer") if progress else None

    t0 = time.perf_counter()
    pp = backend.spec.preprocess
    buffered_ids, buffered_probs, buffered_errors, batches = [], [], [], 0
    processed = 0
    for batch in decoded_batches(folder, todo, pp, batch_size, workers):
        probs = backend.predict(batch.images, views) if batch.ids else np.zeros((0, 28), np.float32)
        buffered_ids += batch.ids
        buffered_probs.append(probs)
        buffered_errors += batch.errors
        batches += 1
        processed += len(batch.ids) + len(batch.errors)
        if bar:
            bar.update(len(batch.ids) + len(batch.errors))
            bar.set_postfix(img_s=f"{processed / (time.perf_counter() - t0):.0f}", failed=len(buffered_errors) + len(done_errors))
        if batches % chunk_batches == 0:
            _write_chunk(chunks, index, buffered_ids, np.concatenate(buffered_probs), buffered_errors)
            index += 1
            buffered_ids, buffered_probs, buffered_errors = [], [], []
    if buffered_ids or buffered_errors:
        _write_chunk(chunks, index, buffered_ids, np.concatenate(buffered_probs), buffered_errors)
    seconds = time.perf_counter() - t0
    if bar:
        bar.close()

    probs, errors = _read_chunks(chunks)
    thresholds = np.asarray(thresholds, np.float32)
    ordered = [i for i in ids if i in probs]
    atomic_write_text(out / "submission.csv", "Id,Predicted\n" + "".join(
        f"{i},{' '.join(map(str, predicted_classes(probs[i], thresholds)))}\n" for i in ordered))
    header = "Id," + ",".join(f'"{n}"' for n in CLASS_NAMES) + "\n"
    atomic_write_text(out / "probabilities.csv", header + "".join(
        f"{i}," + ",".join(f"{v:.6f}" for v in probs[i]) + "\n" for i in ordered))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Id", "file", "reason"])
    writer.writerows([i, *errors[i]] for i in ids if i in errors)
    atomic_write_text(out / "errors.csv", buf.getvalue())
    summary = {"images": len(ids), "done": len(ordered), "failed": len([i for i in ids if i in errors]),
               "resumed_from": len(ids) - len(todo), "seconds": seconds,
               "images_per_s": processed / seconds if seconds > 0 else None,
               "backend": backend.description, "precision": backend.file.precision if backend.file else "fp32",
               "batch_size": batch_size, "tta_views": views, "thresholds": threshold_mode}
    atomic_write_json(out / "summary.json", summary)
    return summary


def merge_shards(shard_dirs, out, ids):
    """Join the outputs of ``--shard i/n`` runs into the files one unsharded run writes, in ``ids``
    order. Every Id must come from exactly one shard."""
    from runtime.errors import DataError

    rows = {"submission.csv": {}, "probabilities.csv": {}, "errors.csv": {}}
    headers = {}
    for folder in map(Path, shard_dirs):
        for name, table in rows.items():
            path = folder / name
            if not path.is_file():
                raise DataError(path, "missing: is this the output folder of a finished --shard run?")
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            if headers.setdefault(name, lines[0]) != lines[0]:
                raise DataError(path, "header differs from the other shards'")
            for line in lines[1:]:
                sample_id = line.split(",", 1)[0]
                if sample_id in table:
                    raise DataError(path, f"Id {sample_id} is in more than one shard")
                table[sample_id] = line
    done = set(rows["probabilities.csv"]) | set(rows["errors.csv"])
    missing = [i for i in ids if i not in done]
    if missing:
        raise DataError(shard_dirs[0], f"{len(missing)} Ids are in no shard (first: {missing[0]}); is a shard missing?")
    out = Path(out)
    for name, table in rows.items():
        atomic_write_text(out / name, headers[name] + "".join(table[i] for i in ids if i in table))
    return {"images": len(ids), "done": len(rows["probabilities.csv"]), "failed": len(rows["errors.csv"]),
            "shards": len(shard_dirs)}
