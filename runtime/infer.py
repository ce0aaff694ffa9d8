"""Batch inference to Kaggle-format files, atomically and resumably.

Results are journaled as they come (runtime/journal.py: the run's settings first, then a chunk
file every few batches, each written atomically); the final ``submission.csv``,
``probabilities.csv``, ``errors.csv`` and ``summary.json`` are assembled from the journal at the
end. An interrupted run therefore never leaves a half-written CSV, and ``--resume`` skips every Id
already journaled, after checking that its settings are the interrupted run's.

The output folder has one writer (runtime/outlock.py): a run holds its lock from before the journal
is touched to the end, and first removes the temporary files a killed run left there.

*Decision*: the previous run's outputs stay until the new set is complete. The four files are
written beside them under temporary names and renamed over them only at the end, ``summary.json``
last, so a run that fails at any point (a refused model output, an exception, Ctrl-C, kill -9)
leaves the last good ``submission.csv`` byte for byte; only the journal of the previous run is
replaced when a fresh run starts.

Submission rule: ``Predicted`` lists the classes whose probability is above their threshold; an
image with none gets its single most probable class (Kaggle's metric gives an empty prediction no
credit, and every HPA image has at least one label).

*Decision*: a sample that could not be read keeps its row in ``submission.csv``, with an empty
``Predicted``, and ``errors.csv`` says why. Kaggle refuses a submission that lacks any of its Ids,
so one broken image must not make the whole file unusable; the empty row scores as a miss, which
is what it is. (An Id that is unsafe as a file name cannot be a Kaggle Id and is in errors.csv only.)
"""

import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from runtime.errors import DataError, about
from runtime.ids import is_safe_id
from runtime.jsonfile import read_json
from runtime.journal import FOLDER, Journal, difference
from runtime.labels import bounded_lines, csv_text, parse_target
from runtime.regular import open_regular
from runtime.model_spec import sha256_of
from runtime.outlock import writer_lock
from runtime.pipeline import decoded_batches
from runtime.tta import check_views
from runtime.writeutil import atomic_write_set, remove_stale_temporaries

log = logging.getLogger(__name__)

OUTPUTS = ("submission.csv", "probabilities.csv", "errors.csv")
SUMMARY = "summary.json"
HEADERS = {"submission.csv": "Id,Predicted\n",
           "probabilities.csv": "Id," + ",".join(f'"{n}"' for n in CLASS_NAMES) + "\n",
           "errors.csv": "Id,file,reason\n"}


def predicted_classes(probs, thresholds):
    """Class indices above threshold, or the most probable class when none is."""
    above = np.flatnonzero(probs > thresholds)
    return above.tolist() if len(above) else [int(np.argmax(probs))]


def parse_shard(shard):
    """'i/n' -> (i, n) with 0 <= i < n; ValueError (one line) otherwise."""
    try:
        i, n = (int(v) for v in shard.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {shard}: need 0 <= i < n")
    return i, n


def shard_ids(ids, shard):
    """The Ids of shard 'i/n': every n-th Id starting at i, in the given order (deterministic)."""
    if not shard:
        return list(ids)
    i, n = parse_shard(shard)
    return list(ids)[i::n]


def resolve_thresholds(spec, views, thresholds=None, model_file=None):
    """(thresholds, how they were chosen): the given ones, else model.json's for ``views`` views
    and the variant of ``model_file`` (an INT8 file has thresholds tuned on its own predictions)."""
    if thresholds is not None:
        return np.asarray(thresholds, np.float32), "given"
    tuned, exact = spec.thresholds_for(views, model_file)
    if not exact:
        log.warning("model.json has no thresholds tuned for %d test-time view(s); using those for %d", views, spec.tta)
    mode = f"tuned for {views} view(s)" if exact else f"tuned for {spec.tta} view(s), run with {views}"
    return np.asarray(tuned, np.float32), mode


def run_settings(backend, folder, views, thresholds, batch_size):
    """Everything that decides a result: a resumed run and the shards of one merge must agree on it.

    The image folder (``folder``: a runtime.reader.ImageFolder) counts by its real path and by its
    content's fingerprint (every channel file's name, size and modification time:
    ImageFolder.fingerprint), so another folder with the same Ids, or images replaced since, is a
    difference; the decoded-size limit in force (``--max-pixels`` or HPA_MAX_PIXELS) decides which
    samples are errors. ``model.json`` counts by the sha256 of its bytes (its preprocessing and
    thresholds), besides the sha256 of the file or checkpoints the backend runs, which the backend
    verified when it loaded them.

    *Decision*: the path is compared too, so shards of one run made on several machines must see
    the folder at one path (a shared mount, or copies at the same path with their times kept);
    nothing else proves two folders hold the same images without reading them all."""
    f = backend.file
    return {"images": os.path.realpath(folder.root), "images_content": folder.fingerprint(),
            "max_pixels": int(folder.max_pixels),
            "model.json": sha256_of(backend.spec.path), "model": backend.model,
            "file": f.path.name if f else "checkpoints",
            "sha256": f.sha256 if f else ",".join(c.sha256 for c in backend.spec.checkpoints),
            "backend": f"{backend.name}-{backend.device}",
            "precision": f.precision if f else getattr(backend, "precision", "fp32"),
            "views": int(views), "thresholds": [round(float(t), 6) for t in thresholds], "batch_size": int(batch_size),
            **({"backend_options": backend.settings} if backend.settings else {})}


def run_inference(backend, folder, ids, out, batch_size=32, thresholds=None, resume=False, workers=4,
                  chunk_batches=4, progress=None, views=None):
    """Infer every Id; returns the summary dict. ``backend`` must already be entered.

    ``views``: test-time views averaged per image (runtime.tta); default model.json's ``tta``.
    ``thresholds``: default the ones model.json has tuned for that many views."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    views = backend.spec.tta if views is None else check_views(views)
    thresholds, threshold_mode = resolve_thresholds(backend.spec, views, thresholds, backend.file)
    settings = run_settings(backend, folder, views, thresholds, batch_size)
    out = Path(out)
    with writer_lock(out):
        for stale in (out, out / FOLDER):
            remove_stale_temporaries(stale)
        return _run(backend, folder, ids, out, batch_size, thresholds, threshold_mode, settings, views, resume,
                    workers, chunk_batches, progress)


def _run(backend, folder, ids, out, batch_size, thresholds, threshold_mode, settings, views, resume, workers,
         chunk_batches, progress):
    journal = Journal(out)
    journal.start(settings, resume)
    done_probs, done_errors = journal.read()
    todo = [i for i in ids if i not in done_probs and i not in done_errors]
    bar = progress(total=len(ids), initial=len(ids) - len(todo), unit="img", desc="infer") if progress else None
    t0 = time.perf_counter()
    try:
        processed = _infer(backend, folder, todo, views, batch_size, workers, chunk_batches, journal, bar)
    finally:  # closed on any failure too, so the error line starts a line of its own
        if bar:
            bar.close()
    seconds = time.perf_counter() - t0
    probs, errors = journal.read()
    summary = {"images": len(ids), "done": sum(i in probs for i in ids), "failed": sum(i in errors for i in ids),
               "resumed_from": len(ids) - len(todo), "seconds": seconds,
               "images_per_s": processed / seconds if seconds > 0 else None,
               "backend": backend.description, "precision": settings["precision"], "decoder": folder.decoder,
               "batch_size": batch_size, "tta_views": views, "thresholds": threshold_mode, "settings": settings}
    atomic_write_set([*((out / name, text) for name, text in output_texts(ids, probs, errors, thresholds).items()),
                      (out / SUMMARY, json.dumps(summary, indent=2) + "\n")])
    return summary


def _infer(backend, folder, todo, views, batch_size, workers, chunk_batches, journal, bar):
    """Predict ``todo`` batch by batch, journaling every ``chunk_batches`` batches; returns the
    number of Ids processed. An error of the model (ONNX Runtime, CUDA) names the model file."""
    model_path = backend.file.path if backend.file else backend.spec.path
    buffered = ([], [], [])  # Ids, probabilities, errors
    t0, processed, batches = time.perf_counter(), 0, 0
    for batch in decoded_batches(folder, todo, backend.spec.preprocess, batch_size, workers):
        with about(model_path):
            probs = backend.predict(batch.images, views) if batch.ids else np.zeros((0, NUM_CLASSES), np.float32)
        buffered[0].extend(batch.ids)
        buffered[1].extend(probs)
        buffered[2].extend(batch.errors)
        batches += 1
        processed += len(batch.ids) + len(batch.errors)
        if bar:
            bar.update(len(batch.ids) + len(batch.errors))
            bar.set_postfix(img_s=f"{processed / (time.perf_counter() - t0):.0f}")
        if batches % chunk_batches == 0:
            journal.append(*buffered)
            buffered = ([], [], [])
    if buffered[0] or buffered[2]:
        journal.append(*buffered)
    return processed


def _csv_text(name, rows):
    return HEADERS[name] + csv_text(rows)


def printable(text):
    """``text`` as valid UTF-8 text: the bytes of a file name that are not UTF-8 (which Python keeps
    as lone surrogates, e.g. byte 0xff as U+DCFF) become ``\\xff``. A name that is valid UTF-8 is
    returned as it is. Used for the Ids, files and reasons of errors.csv, so one such name never
    makes the CSV unreadable or costs another row."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name produces: escape the code point itself
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def output_texts(ids, probs, errors, thresholds):
    """{name: text} of submission.csv, probabilities.csv and errors.csv in ``ids`` order; a failed
    sample's submission row is empty (see the module's decision). The csv module quotes what needs
    quoting, so no Id can ever break a row."""
    ordered = [i for i in ids if i in probs]
    return {"submission.csv": _csv_text("submission.csv", (
                [i, " ".join(map(str, predicted_classes(probs[i], thresholds))) if i in probs else ""]
                for i in ids if i in probs or (i in errors and is_safe_id(i)))),
            "probabilities.csv": _csv_text("probabilities.csv", (
                [i, *(f"{v:.6f}" for v in probs[i])] for i in ordered)),
            "errors.csv": _csv_text("errors.csv", (
                [printable(i), *map(printable, errors[i])] for i in ids if i in errors))}


def _read_output(path):
    """The data rows of one output CSV of a finished run (DataError when missing, empty or not ours)."""
    name = path.name
    try:  # a regular file only, a bounded line at a time (runtime.regular, runtime.labels)
        handle, _ = open_regular(path, "r", newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "missing: is this the output folder of a finished --shard run?") from None
    with handle:
        lines = bounded_lines(handle, path)
        try:
            header = next(lines, "")
            if header != HEADERS[name]:
                raise DataError(path, "empty file" if not header else
                                f"not a {name} written by runtime infer (header differs)")
            rows = list(csv.reader(lines))
        except UnicodeDecodeError:
            raise DataError(path, "not a UTF-8 text CSV file") from None
        except csv.Error as err:
            raise DataError(path, f"not a valid CSV ({err})") from None
    for line, row in enumerate(rows, start=2):
        problem = _row_problem(name, row)
        if problem:
            raise DataError(f"{path} line {line}", f"{problem}: not a row runtime infer writes")
    return rows


def _row_problem(name, row):
    """What is wrong with one data row of a shard's output CSV ('' when nothing is)."""
    if name == "errors.csv":
        return "" if len(row) == 3 else f"{len(row)} fields, expected 3"
    if name == "submission.csv":
        if len(row) != 2:
            return f"{len(row)} fields, expected 2"
        try:
            parse_target(row[1], "")
        except DataError as err:
            return err.reason
        return ""
    if len(row) != 1 + NUM_CLASSES:
        return f"{len(row)} fields, expected {1 + NUM_CLASSES}"
    try:
        p = np.array([float(v) for v in row[1:]])
    except ValueError:
        return "a probability that is not a number"
    return "" if np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all() else "a probability outside 0..1"


def _shard_settings(folder):
    path = folder / SUMMARY
    try:
        return read_json(path)["settings"]
    except FileNotFoundError:
        raise DataError(path, "missing: is this the output folder of a finished --shard run?") from None
    except (ValueError, KeyError, TypeError):
        raise DataError(path, "not the summary.json of a finished runtime infer run") from None


def merge_shards(shard_dirs, out, ids):
    """Join the outputs of ``--shard i/n`` runs into the files one unsharded run writes, in ``ids``
    order. The shards must come from runs with the same settings, and every Id from exactly one.
    ``out`` is held (runtime/outlock.py) from the start, so a merge into a folder another process
    is writing is refused first."""
    with writer_lock(out):
        remove_stale_temporaries(out)
        return _merge(shard_dirs, Path(out), ids)


def _merge(shard_dirs, out, ids):
    folders = [Path(d) for d in shard_dirs]
    for folder in folders:  # the merged files would overwrite a shard's own before all are read
        if folder.exists() and out.exists() and os.path.samefile(folder, out):
            raise DataError(out, f"--out is one of the shards ({folder}); merge into another folder")
    settings = _shard_settings(folders[0])
    for folder in folders[1:]:
        diff = difference(settings, _shard_settings(folder))
        if diff:
            raise DataError(folder / SUMMARY, f"made with other settings than {folders[0]} ({diff}); "
                                              "merge only the shards of one run")
    ids = [printable(i) for i in ids]  # as errors.csv writes an Id that is no UTF-8 file name
    wanted = set(ids)
    rows = {name: {} for name in OUTPUTS}
    for folder in folders:
        for name, table in rows.items():
            for row in _read_output(folder / name):
                if not row or row[0] not in wanted:
                    raise DataError(folder / name, f"Id {row[0] if row else ''!r} is not among the Ids to merge")
                if row[0] in table:
                    raise DataError(folder / name, f"Id {row[0]} is in more than one shard")
                table[row[0]] = row
    missing = [i for i in ids if i not in rows["probabilities.csv"] and i not in rows["errors.csv"]]
    if missing:
        raise DataError(folders[0], f"{len(missing)} Ids are in no shard (first: {missing[0]}); is a shard missing?")
    atomic_write_set([(out / name, _csv_text(name, (table[i] for i in ids if i in table)))
                      for name, table in rows.items()])
    return {"images": len(ids), "done": len(rows["probabilities.csv"]), "failed": len(rows["errors.csv"]),
            "shards": len(folders)}
