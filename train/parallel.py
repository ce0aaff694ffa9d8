"""CPU only: train several folds at once, one process each (``train fit --jobs N``).

Why: a small network's convolutions scale poorly across threads, so N single-threaded
processes train more images per second between them than one process with N threads (the
figures are in docs/benchmarks.md). Processes are spawned, not forked (forking after OpenMP has
started can hang); each gets the decoded samples (pickled, when they are cached in memory: much
cheaper than decoding again), reads the run's config.json and folds.csv, and trains with the
same per-fold seed as a sequential run, so the results are those of a sequential run with the
same threads per fold. The bar counts epochs finished over all folds; each fold still logs its
own epochs.
"""

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from tqdm import tqdm

log = logging.getLogger(__name__)


def train_in_processes(cfg, todo, run, progress, samples, worker):
    """Run ``worker(cfg for one fold, samples)`` (a module-level function, so a spawned process
    can import it) for each fold in ``todo``, ``cfg.jobs`` at a time."""
    jobs = min(cfg.jobs, len(todo))
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // jobs)
    log.info("training folds %s in %d processes with %d thread(s) each", list(todo), jobs, threads)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        shared = samples if samples.images is not None else None  # streamed from disk: each decodes its own
        futures = [pool.submit(worker, replace(cfg, fold=(k,), jobs=1, threads=threads), shared)
                   for k in todo]
        with tqdm(total=len(todo) * cfg.epochs, desc=f"{len(todo)} folds in {jobs} processes", unit="epoch",
                  disable=not progress) as bar:
            while not all(f.done() for f in futures):
                time.sleep(1.0)
                bar.update(sum(run.epochs_done(k) for k in todo) - bar.n)
            bar.update(sum(run.epochs_done(k) for k in todo) - bar.n)
        for future in futures:
            future.result()  # re-raises a fold's error here

