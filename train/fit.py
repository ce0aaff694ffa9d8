"""K-fold training: build data, model, loss, optimizer, scheduler; resume; loop over folds and
epochs; keep each fold's best epoch by validation macro-F1 (single view, every epoch); predict
the fold's validation Ids once more with test-time augmentation; then tune thresholds on the
out-of-fold predictions and write the report.

Run folder::

    RUN/config.json         the resolved FitConfig plus the preprocessing (mean/std from the data)
    RUN/folds.csv           Id,fold
    RUN/errors.csv          Id,file,reason for samples that could not be read (left out)
    RUN/fold{k}/best.pt     best epoch's checkpoint (plain state dict + config)
    RUN/fold{k}/last.pt     latest epoch with optimizer state, for --resume (removed when the fold ends)
    RUN/fold{k}/history.json  per-epoch loss and macro-F1; "done" once the fold has finished
    RUN/fold{k}/oof.npy     the best epoch's probabilities for the fold's validation Ids, averaged
                            over --tta dihedral views (runtime.tta)
    RUN/fold{k}/oof_single.npy  the same without test-time augmentation (with --tta 1: oof.npy only)
    RUN/oof.csv             Id, fold, 28 out-of-fold probabilities (test-time augmented)
    RUN/thresholds.json     per-class thresholds tuned on the out-of-fold predictions, with and
                            without test-time augmentation
    RUN/metrics.json        macro-F1 (0.5, tuned, cross-fitted) overall and per fold, per-class F1
    RUN/curves.png          loss and macro-F1 per epoch per fold
"""

import csv
import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from runtime.errors import DataError
from runtime.preprocess import Preprocess
from runtime.tta import check_views, predict_views
from runtime.writeutil import atomic_path, atomic_write_json, atomic_write_text
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import FitConfig
from train import distributed as ddp
from train.data import FoldDataset, Samples, balanced_weights, collate, locate
from train.folds import assign_folds, read_folds, write_folds
from train.losses import build_loss
from train.metrics import crossfit_macro_f1, f1_per_class, macro_f1, tune_thresholds
from train.model import build_model, load_pretrained

log = logging.getLogger(__name__)


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check_config(run, cfg):
    """A run folder holds one configuration; folds trained separately must agree on it."""
    path = run / "config.json"
    if not path.exists():
        return
    old = FitConfig.from_dict(json.loads(path.read_text())["fit"]).to_dict()
    new = cfg.to_dict()
    ignore = {"fold", "device", "workers", "threads", "cache_gb", "jobs"}
    diff = [k for k in new if k not in ignore and old.get(k) != new[k]]
    if diff:
        raise DataError(path, f"run was made with other settings ({', '.join(diff)}); use another --out")


def fit(cfg, progress=True, merge_when_done=True, samples=None):
    """Train the folds named by cfg (all by default); returns the metrics dict when every fold is done.
    ``samples``: the decoded dataset when the caller has it already (the --jobs fold processes)."""
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    _check_config(run, cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    _, size, local = ddp.setup(device.type)
    if size > 1 and device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)

    labels_csv, image_dir = locate(cfg.data, cfg.labels, cfg.images)
    base_pp = Preprocess(size=cfg.size)
    progress = progress and ddp.is_main()
    if samples is None:
        samples = Samples(labels_csv, image_dir, base_pp, cfg.cache_gb, progress=progress)
    if ddp.is_main():
        _write_errors(run / "errors.csv", samples.errors)
        pp = _run_preprocess(run, cfg, samples)
        folds = _folds(run, cfg, samples)
    ddp.barrier()
    if not ddp.is_main():  # the other ranks read what rank 0 decided
        pp = _run_preprocess(run, cfg, samples)
        folds = _folds(run, cfg, samples)
    samples.pp = pp

    todo = cfg.fold or tuple(range(cfg.folds))
    for k in todo:
        if not 0 <= k < cfg.folds:
            raise ValueError(f"--fold {k} outside 0..{cfg.folds - 1}")
    if cfg.jobs > 1 and len(todo) > 1 and device.type == "cpu" and ddp.world()[1] == 1:
        _train_in_processes(cfg, todo, run, progress, samples)
    else:
        for k in todo:
            train_fold(cfg, pp, samples, folds, k, device, run, progress)
            ddp.barrier()
    if not merge_when_done:
        return None
    if ddp.is_main() and all((run / f"fold{k}" / "oof.npy").exists() for k in range(cfg.folds)):
        return merge(run)
    log.info("folds %s done; run `python -m train merge --run %s` once every fold is trained", list(todo), run)
    return None


def _train_in_processes(cfg, todo, run, progress, samples):
    """CPU only: train the folds in ``cfg.jobs`` processes at once, each with its share of the cores.

    Why: this small network's convolutions scale poorly across threads; on the 2-core demo machine
    two single-threaded processes train 1.34x as many images per second as one process with two
    threads (323 vs 241 img/s, ResNet-18 width 16 at 96 px). Processes are spawned, not forked
    (forking after OpenMP has started can hang); each gets the decoded samples (pickled, when
    they are cached in memory: about 1 s against 5-8 s to decode again), reads the run's
    config.json and folds.csv, and trains with the same per-fold seed as a sequential run.
    The bar counts epochs finished over all folds; each fold still logs its own epochs."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor
    from dataclasses import replace

    jobs = min(cfg.jobs, len(todo))
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // jobs)
    log.info("training folds %s in %d processes with %d thread(s) each", list(todo), jobs, threads)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        shared = samples if samples.images is not None else None  # streamed from disk: each decodes its own
        futures = [pool.submit(_fold_process, replace(cfg, fold=(k,), jobs=1, threads=threads), shared)
                   for k in todo]
        with tqdm(total=len(todo) * cfg.epochs, desc=f"{len(todo)} folds in {jobs} processes", unit="epoch",
                  disable=not progress) as bar:
            while not all(f.done() for f in futures):
                time.sleep(1.0)
                bar.update(sum(_epochs_done(run, k) for k in todo) - bar.n)
            bar.update(sum(_epochs_done(run, k) for k in todo) - bar.n)
        for future in futures:
            future.result()  # re-raises a fold's error here


def _fold_process(cfg, samples):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    fit(cfg, progress=False, merge_when_done=False, samples=samples)


def _read_history(path):
    """A fold's history.json (written atomically, so never half-read); empty before its first epoch."""
    return json.loads(path.read_text()) if path.exists() else {"epochs": []}


def _epochs_done(run, k):
    return len(_read_history(run / f"fold{k}" / "history.json")["epochs"])


def _run_preprocess(run, cfg, samples):
    """Mean/std from the data, computed once per run so every fold (and the ensemble) shares them."""
    path = run / "config.json"
    if path.exists():
        return Preprocess.from_dict(json.loads(path.read_text())["preprocess"])
    mean, std = samples.channel_stats(seed=cfg.seed)
    pp = Preprocess(size=cfg.size, mean=mean, std=std)
    atomic_write_json(path, {"fit": cfg.to_dict(), "preprocess": pp.to_dict()})
    return pp


def _folds(run, cfg, samples):
    path = run / "folds.csv"
    if cfg.folds_file:
        folds = read_folds(cfg.folds_file, samples.ids)
    elif path.exists():
        folds = read_folds(path, samples.ids)
    else:
        folds = assign_folds(samples.y, cfg.folds, cfg.seed)
    if set(np.unique(folds)) != set(range(cfg.folds)):
        raise DataError(cfg.folds_file or path, f"folds must be 0..{cfg.folds - 1}")
    if not path.exists():
        write_folds(path, samples.ids, folds)
    return folds


def _write_errors(path, errors):
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Id", "file", "reason"])
        writer.writerows(errors)


def _seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)


def train_fold(cfg, pp, samples, folds, k, device, run, progress=True):
    fold_dir = run / f"fold{k}"
    fold_dir.mkdir(exist_ok=True)
    history_path = fold_dir / "history.json"
    history = _read_history(history_path)
    if history.get("done"):
        log.info("fold %d already trained; skipping", k)
        return

    train_idx, val_idx = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
    _seed_everything(cfg.seed * 1000 + k)
    model = build_model(cfg.arch, cfg.attention, cfg.width, dropout=cfg.dropout)
    if cfg.pretrained:
        load_pretrained(model, cfg.pretrained)
    use_cuda = device.type == "cuda"
    # Channels-last on CPU too: oneDNN's NHWC convolutions train this network 8-22% faster on
    # the 2-core demo machine (measured: w16@128 150 -> 162 img/s, w32@64 150 -> 183).
    model = model.to(device, memory_format=torch.channels_last)
    rank, size, _ = ddp.world()
    net = model
    if size > 1:
        net = torch.nn.parallel.DistributedDataParallel(ddp.global_batchnorm(model),
                                                        device_ids=[device.index] if use_cuda else None)
    alpha = None
    if cfg.alpha:
        alpha = cfg.alpha * NUM_CLASSES if len(cfg.alpha) == 1 else cfg.alpha
        if len(alpha) != NUM_CLASSES:
            raise ValueError(f"--alpha needs 1 or {NUM_CLASSES} values, got {len(cfg.alpha)}")
    criterion = build_loss(cfg.loss, cfg.gamma, alpha).to(device)

    train_set = FoldDataset(samples, train_idx, augment=cfg.augment, seed=cfg.seed * 1000 + k)
    steps = len(train_set) // cfg.batch_size
    if steps == 0:
        raise ValueError(f"fold {k}: {len(train_set)} training images is fewer than one batch of {cfg.batch_size}")
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps,
                                                    pct_start=0.2)
    amp = cfg.amp and use_cuda
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start, best = 0, history.get("best", {"macro_f1": -1.0})
    last = fold_dir / "last.pt"
    if last.exists():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start = int(state["epoch"]) + 1
        history["epochs"] = history["epochs"][:start]
        log.info("fold %d: resuming after epoch %d", k, start - 1)

    weights = balanced_weights(samples.y[train_idx], cfg.sampler_power) if cfg.sampler == "balanced" else None
    for epoch in range(start, cfg.epochs):
        _seed_everything(cfg.seed * 1000 + k * 100 + epoch)
        train_set.epoch = epoch
        loader = _train_loader(cfg, pp, train_set, weights, epoch, k)
        t0 = time.perf_counter()
        train_loss = _train_epoch(net, loader, criterion, optimizer, scheduler, scaler, device, amp,
                                  desc=f"fold {k} epoch {epoch + 1}/{cfg.epochs}", progress=progress)
        seconds = time.perf_counter() - t0
        probs, val_loss = predict_sharded(model, samples, val_idx, pp, device, criterion, cfg.batch_size * 2, amp)
        y_val = samples.y[val_idx]
        row = {
            "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
            "macro_f1_0.5": macro_f1(y_val, probs),
            "macro_f1_tuned": macro_f1(y_val, probs, tune_thresholds(y_val, probs)),
            "train_images_per_s": len(loader) * cfg.batch_size / seconds,  # the global batch
            "lr": optimizer.param_groups[0]["lr"],
        }
        history["epochs"].append(row)
        # Best epoch: validation macro-F1 with thresholds tuned on the fold (F1 at 0.5 is too
        # noisy early on for rare classes, whose probabilities are still small).
        if row["macro_f1_tuned"] > best["macro_f1"]:
            best = {"epoch": epoch, "macro_f1": row["macro_f1_tuned"], "macro_f1_0.5": row["macro_f1_0.5"]}
            if rank == 0:
                save_checkpoint(fold_dir / "best.pt", model, cfg, pp, fold=k, epoch=epoch,
                                val_macro_f1=row["macro_f1_tuned"])
                with atomic_path(fold_dir / "oof.npy.partial") as tmp, open(tmp, "wb") as handle:
                    np.save(handle, probs.astype(np.float32))
        history["best"] = best
        log.info("fold %d epoch %d: loss %.4f/%.4f macro-F1 %.3f (0.5) %.3f (tuned) %.1f img/s", k, epoch + 1,
                 train_loss, val_loss, row["macro_f1_0.5"], row["macro_f1_tuned"], row["train_images_per_s"])
        if rank == 0:
            _save_last(last, model, cfg, pp, optimizer, scheduler, scaler, epoch)
            atomic_write_json(history_path, history)
        ddp.barrier()

    # The fold's out-of-fold predictions: the best epoch's, averaged over cfg.tta dihedral views
    # (oof.npy: what thresholds are tuned on) and its plain single-view ones (oof_single.npy:
    # for `runtime infer --tta 1`; without test-time augmentation they are oof.npy, and merge
    # reads that). The single-view file is renamed last, so a crash in between redoes the
    # test-time pass on resume.
    partial = fold_dir / "oof.npy.partial"
    views = check_views(cfg.tta)
    if views > 1:
        model.load_state_dict(load_checkpoint(fold_dir / "best.pt")["model"])
        probs, _ = predict_sharded(model, samples, val_idx, pp, device, None, cfg.batch_size * 2, amp, views)
    if rank == 0:
        if views > 1:
            with atomic_path(fold_dir / "oof.npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, probs.astype(np.float32))
        if partial.exists():
            partial.replace(fold_dir / ("oof_single.npy" if views > 1 else "oof.npy"))
        history["done"] = True
        atomic_write_json(history_path, history)
        last.unlink(missing_ok=True)


def _save_last(path, model, cfg, pp, optimizer, scheduler, scaler, epoch):
    save_checkpoint(path, model, cfg, pp, epoch=epoch, optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), scaler=scaler.state_dict())


def _train_loader(cfg, pp, train_set, weights, epoch, k):
    """Every rank draws the same global order and takes its slice of each global batch."""
    g = torch.Generator().manual_seed(cfg.seed * 1000 + k * 100 + epoch)
    if weights is not None:
        order = torch.utils.data.WeightedRandomSampler(weights, len(weights), replacement=True, generator=g)
    else:
        order = torch.utils.data.RandomSampler(train_set, generator=g)
    rank, size, _ = ddp.world()
    sampler = ddp.RankSlice(order, cfg.batch_size, rank, size)
    workers = 0 if train_set.samples.images is not None else cfg.workers
    return torch.utils.data.DataLoader(train_set, cfg.batch_size // size, sampler=sampler, drop_last=True,
                                       collate_fn=collate(pp), num_workers=workers)


def _autocast(device, amp):
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp) if amp else nullcontext()


def _train_epoch(model, loader, criterion, optimizer, scheduler, scaler, device, amp, desc, progress):
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress)
    for x, y in bar:
        x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += float(loss.detach()) * len(x)
        count += len(x)
        bar.set_postfix(loss=f"{total / count:.4f}")
    total, count = ddp.all_sum([total, count])
    return total / max(count, 1)


def predict_sharded(model, samples, indices, pp, device, criterion=None, batch_size=64, amp=False, views=1):
    """``predict`` with the Ids spread over the ranks and the results gathered in order."""
    rank, size, _ = ddp.world()
    if size == 1:
        return predict(model, samples, indices, pp, device, criterion, batch_size, amp, views)
    mine = np.asarray(indices)[rank::size]
    probs, loss = predict(model, samples, mine, pp, device, criterion, batch_size, amp, views)
    parts = ddp.gather_objects((probs, loss * len(mine)))
    out = np.zeros((len(indices), probs.shape[1]), np.float32)
    for r, (p, _) in enumerate(parts):
        out[r::size] = p
    return out, sum(l for _, l in parts) / max(len(indices), 1)


@torch.inference_mode()
def predict(model, samples, indices, pp, device, criterion=None, batch_size=64, amp=False, views=1):
    """Sigmoid probabilities (N, 28) for the samples at ``indices``, averaged over ``views``
    dihedral views (runtime.tta, as the runtime does), and the mean loss (single view only)."""
    model.eval()
    dataset = FoldDataset(samples, indices)
    loader = torch.utils.data.DataLoader(dataset, batch_size, shuffle=False, collate_fn=collate(pp))
    out, total = [], 0.0

    def logits_of(x):
        with _autocast(device, amp):
            return model(torch.as_tensor(x).to(device, memory_format=torch.channels_last)).float()

    for x, y in loader:
        if views > 1:
            out.append(predict_views(lambda v: torch.sigmoid(logits_of(v)).cpu().numpy(), x.numpy(), views))
            continue
        logits = logits_of(x)
        if criterion is not None:
            total += float(criterion(logits, y.to(device))) * len(x)
        out.append(torch.sigmoid(logits).cpu().numpy())
    return np.concatenate(out), total / max(len(dataset), 1)


def run_split(run):
    """(Ids, fold per Id) of a run, in folds.csv order."""
    path = Path(run) / "folds.csv"
    if not path.exists():
        raise DataError(path, "missing: not a training run folder")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["Id"] for r in rows], np.array([int(r["fold"]) for r in rows])


def run_targets(run):
    """(FitConfig, Ids, folds, multi-hot targets) of a run, in folds.csv order."""
    from runtime.labels import multi_hot, read_labels

    ids, folds = run_split(run)
    cfg = FitConfig.from_dict(json.loads((Path(run) / "config.json").read_text())["fit"])
    labels_csv, _ = locate(cfg.data, cfg.labels, cfg.images)
    table = read_labels(labels_csv)
    return cfg, ids, folds, multi_hot([table[i] for i in ids])


def _fold_oof(run, k, idx, name):
    path = run / f"fold{k}" / name
    if not path.exists():
        raise DataError(path, f"fold {k} has not finished training")
    probs = np.load(path)
    if probs.shape != (len(idx), NUM_CLASSES):
        raise DataError(path, f"shape {probs.shape} does not match the fold's {len(idx)} Ids")
    return probs


def merge(run):
    """Collect every fold's out-of-fold predictions, tune thresholds, write the report.

    Thresholds are tuned twice: on the test-time-augmented predictions (``thresholds``, what
    the runtime applies by default) and on the single-view ones (``single_view_thresholds``,
    for ``runtime infer --tta 1``). A run trained before test-time augmentation has only
    ``oof.npy``, and both sets come from it."""
    run = Path(run)
    cfg, ids, folds, y = run_targets(run)
    probs = np.zeros((len(ids), NUM_CLASSES), np.float32)
    single = np.zeros_like(probs)
    per_fold = []
    for k in range(cfg.folds):
        idx = np.flatnonzero(folds == k)
        probs[idx] = _fold_oof(run, k, idx, "oof.npy")
        has_single = (run / f"fold{k}" / "oof_single.npy").exists()
        single[idx] = _fold_oof(run, k, idx, "oof_single.npy") if has_single else probs[idx]
        history = _read_history(run / f"fold{k}" / "history.json")
        per_fold.append({"fold": k, "images": int(len(idx)), "best_epoch": history["best"]["epoch"] + 1,
                         "macro_f1_0.5": macro_f1(y[idx], probs[idx]),
                         "macro_f1_tuned_on_fold": macro_f1(y[idx], probs[idx], tune_thresholds(y[idx], probs[idx])),
                         "single_view_macro_f1_tuned_on_fold": history["best"]["macro_f1"]})

    thresholds = tune_thresholds(y, probs)
    single_thresholds = tune_thresholds(y, single)
    f1_05 = f1_per_class(y, probs > 0.5)
    f1_tuned = f1_per_class(y, probs > thresholds)
    metrics = {
        "images": len(ids),
        "tta": cfg.tta,
        "macro_f1": {
            "at_0.5": float(f1_05.mean()),
            "tuned": float(f1_tuned.mean()),
            "tuned_crossfit": crossfit_macro_f1(y, probs, folds),
        },
        "single_view_macro_f1": {
            "at_0.5": macro_f1(y, single),
            "tuned": macro_f1(y, single, single_thresholds),
            "tuned_crossfit": crossfit_macro_f1(y, single, folds),
        },
        "per_fold": per_fold,
        "per_class": [
            {"class": c, "name": CLASS_NAMES[c], "support": int(y[:, c].sum()), "f1_0.5": float(f1_05[c]),
             "f1_tuned": float(f1_tuned[c]), "threshold": float(thresholds[c])}
            for c in range(NUM_CLASSES)
        ],
        "notes": "macro_f1 and per_class: out-of-fold predictions averaged over `tta` dihedral views "
                 "(single_view_macro_f1: without). tuned: thresholds tuned and scored on the same "
                 "out-of-fold predictions (the usual Kaggle figure, optimistic for rare classes); "
                 "tuned_crossfit: each fold scored with thresholds tuned on the other folds (an "
                 "honest estimate).",
    }
    atomic_write_json(run / "thresholds.json", {"class_names": list(CLASS_NAMES),
                                                "thresholds": [float(t) for t in thresholds], "tta": cfg.tta,
                                                "single_view_thresholds": [float(t) for t in single_thresholds]})
    header = "Id,fold," + ",".join(f'"{n}"' for n in CLASS_NAMES) + "\n"
    body = "".join(f"{i},{f}," + ",".join(f"{p:.6f}" for p in row) + "\n" for i, f, row in zip(ids, folds, probs))
    atomic_write_text(run / "oof.csv", header + body)
    atomic_write_json(run / "metrics.json", metrics)
    from train.plots import plot_curves

    plot_curves(run, cfg.folds)
    return metrics


def format_report(metrics):
    """The F1 report printed at the end of a run."""
    m, views = metrics["macro_f1"], metrics.get("tta", 1)
    lines = [f"out-of-fold macro-F1 over {metrics['images']} images"
             + (f", {views} test-time views" if views > 1 else "")
             + f": {m['at_0.5']:.4f} at 0.5, {m['tuned']:.4f} with tuned thresholds ({m['tuned_crossfit']:.4f} cross-fitted)"]
    if views > 1 and "single_view_macro_f1" in metrics:
        s = metrics["single_view_macro_f1"]
        lines.append(f"  single view: {s['at_0.5']:.4f} at 0.5, {s['tuned']:.4f} tuned ({s['tuned_crossfit']:.4f} cross-fitted)")
    for f in metrics["per_fold"]:
        lines.append(f"  fold {f['fold']}: best epoch {f['best_epoch']}, macro-F1 {f['macro_f1_0.5']:.4f} at 0.5, "
                     f"{f['macro_f1_tuned_on_fold']:.4f} tuned on the fold")
    lines.append(f"  {'class':<32}{'support':>8}{'F1@0.5':>8}{'F1 tuned':>9}{'thr':>6}")
    for c in metrics["per_class"]:
        lines.append(f"  {c['class']:>2} {c['name']:<29}{c['support']:>8}{c['f1_0.5']:>8.3f}{c['f1_tuned']:>9.3f}"
                     f"{c['threshold']:>6.2f}")
    return "\n".join(lines)
