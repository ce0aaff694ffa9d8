"""K-fold training: build data, model, loss, optimizer, scheduler; resume; loop over folds and
epochs; keep each fold's best epoch by validation macro-F1 (single view, every epoch); predict
the fold's validation Ids once more with test-time augmentation; then ``train.report.merge``
tunes the thresholds and writes the report. The files live in a ``train.run.Run`` folder.

Journal (why ``--resume`` after a kill at any point gives the uninterrupted result): at the end
of an epoch a new best model and its validation predictions are first written under staged
names carrying the epoch (``best.e{N}.pt``, ``best.e{N}.npy``); then ``last.pt`` is written
atomically with the model, optimizer and the whole history: that write is the commit point.
Only then are the staged files renamed to ``best.pt`` / ``best_oof.npy`` and ``history.json``
(a copy of the history for readers) rewritten. On resume the history comes from ``last.pt``,
staged files of its best epoch are renamed and any others deleted, so a kill between two writes
either never happened (before the commit) or is completed (after it).
"""

import logging
import os
import re
import time
import warnings

import numpy as np
import torch
from tqdm import tqdm

from runtime.classes import NUM_CLASSES
from runtime.cli import setup_logging
from runtime.errors import DataError, loading
from runtime.labels import read_labels
from runtime.outlock import check_folder
from runtime.reader import ImageFolder
from runtime.preprocess import Preprocess
from runtime.tta import check_views, predict_views
from train import distributed as ddp
from train.checkpoint import check_state, load_checkpoint, save_checkpoint
from train.data import Collate, FoldDataset, Samples, balanced_weights
from train.folds import assign_folds, read_folds
from train.losses import build_loss
from train.metrics import macro_f1, tune_thresholds
from train.model import build_model, load_pretrained
from train.pretrained import resolve as resolve_weights, source as weights_source
from train.synth import dataset_record
from train.run import Run

log = logging.getLogger(__name__)

# Settings that may differ between processes training folds of one run.
PER_PROCESS = {"fold", "device", "workers", "threads", "cache_gb", "cache", "jobs"}
_STAGED = re.compile(r"best\.e(\d+)\.(pt|npy)$")


def resolve_device(name):
    """The torch device for ``--device``: auto, cpu, cuda, cuda:N (or mps where torch has it).
    Anything else, or a GPU that is not there, is refused in one line naming what was found."""
    kind, colon, index = name.partition(":")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps" and _mps_available():
        return torch.device("mps")
    if kind == "cuda" and (not colon or index.isdigit()):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: no CUDA GPU found (torch sees: {_found_devices()}); "
                             "use --device cpu or auto")
        if colon and int(index) >= count:
            raise ValueError(f"--device {name}: no such GPU (torch sees: {_found_devices()})")
        return torch.device(name)
    raise ValueError(f"--device {name}: not a training device; valid: auto, cpu, cuda, cuda:N "
                     f"(torch sees: {_found_devices()})")


def _mps_available():
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _found_devices():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(count)]
    return ", ".join(names + (["mps"] if _mps_available() else []))


def journal_point(name):
    """Called after each journal write (tests make it raise to simulate a kill there)."""


def fit(cfg, progress=True, merge_when_done=True, samples=None):
    """Train the folds named by cfg (all by default); returns the metrics dict when every fold is done.
    ``samples``: the decoded dataset when the caller has it already (the --jobs fold processes).

    Every setting is checked before anything is read or written (``FitConfig.check``, the
    device, the number of labelled Ids against the folds and the batch); what depends on which
    samples can be read is checked once they are decoded, before the run folder is touched."""
    cfg.check()
    device = resolve_device(cfg.device)
    _, size, local = ddp.setup(device.type)
    if cfg.batch_size % size:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {size} processes")
    run = Run(cfg.out)
    _check_out(run.path)
    _check_config(run, cfg)
    pretrained = _check_pretrained(cfg)
    _check_pretrained_source(run, pretrained)
    todo = cfg.fold or tuple(range(cfg.folds))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if size > 1 and device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)

    progress = progress and ddp.is_main()
    if samples is None:
        labels_csv, image_dir = cfg.dataset()
        ImageFolder(image_dir)  # the folder first, as Samples checks it: a wrong --data names the folder
        _check_counts(cfg, len(read_labels(labels_csv)), labels_csv, "labelled Ids")
        samples = Samples(labels_csv, image_dir, Preprocess(size=cfg.size), cfg.cache_gb, progress=progress,
                          cache_dir=cfg.cache or None)
    _check_counts(cfg, len(samples.ids), cfg.dataset()[0], "readable samples")
    folds = _split(run, cfg, samples, todo)
    run.path.mkdir(parents=True, exist_ok=True)
    with run.claim(todo, lock=ddp.is_main()) as removed:
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write: %s", len(removed),
                     ", ".join(str(p.relative_to(run.path)) for p in removed))
        return _train_folds(cfg, run, samples, folds, todo, device, size, progress, merge_when_done, pretrained)


def _train_folds(cfg, run, samples, folds, todo, device, size, progress, merge_when_done, pretrained=None):
    pp, folds = _prepare(run, cfg, samples, folds, pretrained)
    samples.pp = pp
    if cfg.jobs > 1 and len(todo) > 1 and device.type == "cpu" and size == 1:
        from train.parallel import train_in_processes

        train_in_processes(cfg, todo, run, progress, samples, _fold_process)
    else:
        for k in todo:
            train_fold(cfg, pp, samples, folds, k, device, run, progress)
            ddp.barrier()
    if not merge_when_done or not ddp.is_main():
        return None
    if all(run.fold_done(k) for k in range(cfg.folds)):
        from train.report import merge

        return merge(run.path)
    log.info("folds %s done; run `python -m train merge --run %s` once every fold is trained", list(todo), run.path)
    return None


def _check_out(path):
    """The run folder, or the folder it will be made in, is a folder this process can write to;
    checked before decoding, and nothing is made yet."""
    target = check_folder(path, "--out", "run folder")
    if not os.access(target, os.W_OK | os.X_OK):
        raise PermissionError(13, "folder not writable", str(target))


def _check_pretrained(cfg):
    """The --pretrained weights (a local file, or torchvision's ImageNet weights from the torch hub
    cache, downloaded when absent) are found and checked before the data is decoded: loaded into
    the model built on the meta device (shapes only, no memory), as each fold will load them.
    Returns what the run records of them ({"name", "sha256"}), or None without --pretrained."""
    if not cfg.pretrained:
        return None
    path, recorded = weights_source(cfg.pretrained, cfg.arch, cfg.width)
    with torch.device("meta"):
        probe = build_model(cfg.arch, cfg.attention, cfg.width, dropout=cfg.dropout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "copying ... to a meta parameter is a no-op": the point
        load_pretrained(probe, path)
    return recorded


def _check_pretrained_source(run, pretrained):
    """A run folder starts from one set of weights: the same --pretrained name with a file of other
    contents (a local file replaced between folds) is refused like another setting."""
    if not run.has_config():
        return
    old = run.pretrained
    if old is not None and pretrained is not None and old.get("sha256") != pretrained["sha256"]:
        raise DataError(run.file("config.json"), f"run started from weights {old.get('name')} with sha256 "
                                                 f"{str(old.get('sha256'))[:12]}..., --pretrained is now "
                                                 f"{pretrained['sha256'][:12]}...; use another --out")


def _check_counts(cfg, count, labels_csv, what):
    """Enough samples for the folds and for one training batch (each fold keeps at least one
    sample to validate on); checked on the labels before decoding and on the readable samples after."""
    if count < cfg.folds:
        raise DataError(labels_csv, f"{count} {what} cannot make {cfg.folds} folds (--folds)")
    if count - 1 < cfg.batch_size:
        raise DataError(labels_csv, f"{count} {what} leave fewer training images than one batch of "
                                    f"{cfg.batch_size} (--batch-size)")


def _check_split(cfg, folds, todo):
    """Every fold to train has at least one training batch."""
    for k in todo:
        train = int(np.sum(folds != k))
        if train < cfg.batch_size:
            raise ValueError(f"--batch-size {cfg.batch_size}: fold {k} has {train} training images, "
                             "fewer than one batch")


def _fold_process(cfg, samples):
    """One fold in a process of its own (train.parallel)."""
    setup_logging(logging.INFO)
    fit(cfg, progress=False, merge_when_done=False, samples=samples)


def _check_config(run, cfg):
    """A run folder holds one configuration; folds trained separately must agree on it."""
    if not run.has_config():
        return
    old, new = run.config.to_dict(), cfg.to_dict()
    diff = [k for k in new if k not in PER_PROCESS and old.get(k) != new[k]]
    if diff:
        raise DataError(run.file("config.json"), f"run was made with other settings ({', '.join(diff)}); use another --out")


def _split(run, cfg, samples, todo):
    """Rank 0: the fold of each sample (the --folds-file, the run's folds.csv, or a new stratified
    split), checked before anything is written; None on the other ranks (they read folds.csv)."""
    if not ddp.is_main():
        return None
    folds_csv = run.file("folds.csv")
    if cfg.folds_file:
        folds = read_folds(cfg.folds_file, samples.ids)
    elif folds_csv.exists():
        folds = read_folds(folds_csv, samples.ids)
    else:
        folds = assign_folds(samples.y, cfg.folds, cfg.seed)
    if set(np.unique(folds)) != set(range(cfg.folds)):
        raise DataError(cfg.folds_file or folds_csv, f"folds must be 0..{cfg.folds - 1}")
    _check_split(cfg, folds, todo)
    return folds


def _prepare(run, cfg, samples, folds, pretrained=None):
    """(Preprocess, fold per sample): decided once by rank 0 and written to the run folder
    (mean/std from the data, the split ``folds``), then read back by every other rank."""
    if ddp.is_main():
        run.write_errors(samples.errors)
        if not run.has_config():
            mean, std = samples.channel_stats(seed=cfg.seed)
            run.write_config(cfg, Preprocess(size=cfg.size, mean=mean, std=std), pretrained,
                             training_data=dataset_record(cfg.data))
        if not run.file("folds.csv").exists():
            run.write_split(samples.ids, folds)
    ddp.barrier()
    reader = Run(run.path)  # the other ranks read what rank 0 decided
    return reader.preprocess, read_folds(run.file("folds.csv"), samples.ids)


def _seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)


class _FoldParts:
    """A fold's model (plain and, under torchrun, DDP-wrapped), loss, optimizer, schedule, scaler."""

    def __init__(self, cfg, device, steps):
        self.model = build_model(cfg.arch, cfg.attention, cfg.width, dropout=cfg.dropout)
        if cfg.pretrained:
            load_pretrained(self.model, resolve_weights(cfg.pretrained, cfg.arch)[1])
        # Channels-last on the CPU too: oneDNN's NHWC convolutions train this network faster.
        self.model = self.model.to(device, memory_format=torch.channels_last)
        self.net = self.model
        if ddp.world()[1] > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                ddp.global_batchnorm(self.model), device_ids=[device.index] if device.type == "cuda" else None)
        alpha = (cfg.alpha * NUM_CLASSES if len(cfg.alpha) == 1 else cfg.alpha) or None  # checked by FitConfig.check
        self.criterion = build_loss(cfg.loss, cfg.gamma, alpha).to(device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = cfg.epochs * steps
        # OneCycleLR divides by its warm-up length less one step, 0.2 * total - 1: zero at exactly
        # 5 steps, so there the warm-up is 0.25 of them
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=cfg.lr, total_steps=total,
                                                             pct_start=0.25 if total == 5 else 0.2)
        self.amp = cfg.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def state(self):
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # A run started on the CPU (AMP off there) saved a disabled scaler's empty state; resumed
        # on CUDA with AMP, the scaler starts from its initial scale, as a fresh run's does
        # (GradScaler.load_state_dict refuses an empty state: "saved from a disabled instance").
        if state["scaler"] or not self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])


def train_fold(cfg, pp, samples, folds, k, device, run, progress=True):
    if run.fold_done(k):
        log.info("fold %d already trained; skipping", k)
        return
    run.fold_file(k, "").mkdir(exist_ok=True)
    train_idx, val_idx = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
    _seed_everything(cfg.seed * 1000 + k)
    train_set = FoldDataset(samples, train_idx, augment=cfg.augment, seed=cfg.seed * 1000 + k)
    steps = len(train_set) // cfg.batch_size
    if steps == 0:
        raise ValueError(f"fold {k}: {len(train_set)} training images is fewer than one batch of {cfg.batch_size}")
    parts = _FoldParts(cfg, device, steps)
    history = _resume(run, k, parts)
    weights = balanced_weights(samples.y[train_idx], cfg.sampler_power) if cfg.sampler == "balanced" else None
    y_val = samples.y[val_idx]
    for epoch in range(len(history["epochs"]), cfg.epochs):
        _seed_everything(cfg.seed * 1000 + k * 100 + epoch)
        train_set.epoch = epoch
        loader = _train_loader(cfg, pp, train_set, weights, epoch, k)
        t0 = time.perf_counter()
        train_loss = _train_epoch(parts, loader, device, desc=f"fold {k} epoch {epoch + 1}/{cfg.epochs}",
                                  progress=progress)
        seconds = time.perf_counter() - t0
        probs, val_loss = predict_sharded(parts.model, samples, val_idx, pp, device, parts.criterion,
                                          cfg.batch_size * 2, parts.amp)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
               "macro_f1_0.5": macro_f1(y_val, probs),
               "macro_f1_tuned": macro_f1(y_val, probs, tune_thresholds(y_val, probs)),
               "train_images_per_s": len(loader) * cfg.batch_size / seconds,  # the global batch
               "lr": parts.optimizer.param_groups[0]["lr"]}
        log.info("fold %d epoch %d: loss %.4f/%.4f macro-F1 %.3f (0.5) %.3f (tuned) %.1f img/s", k, epoch + 1,
                 train_loss, val_loss, row["macro_f1_0.5"], row["macro_f1_tuned"], row["train_images_per_s"])
        _journal_epoch(run, k, cfg, pp, parts, history, row, probs)
    _finish_fold(run, k, cfg, pp, parts, samples, val_idx, device, history)


def _resume(run, k, parts):
    """The fold's history: empty for a fresh fold, else last.pt's (model and optimizer restored)."""
    last = run.fold_file(k, "last.pt")
    if not last.exists():
        history = {"epochs": [], "best": {"epoch": -1, "macro_f1": -1.0}}
    else:
        state = load_checkpoint(last)
        check_state(last, state["model"], parts.model.state_dict())
        history = state.get("history")
        if not (isinstance(history, dict) and isinstance(history.get("epochs"), list)
                and isinstance(history.get("best"), dict)):
            raise DataError(last, "not a last.pt of train fit (no training history); rerun without --resume")
        with loading(last, "optimizer or schedule state does not fit this run; rerun without --resume"):
            parts.load(state)
        log.info("fold %d: resuming after epoch %d", k, len(history["epochs"]))
    if ddp.is_main():
        _commit_staged(run, k, history)
        run.write_history(k, history)
    return history


def _commit_staged(run, k, history):
    """Rename the staged files of the history's best epoch into place; delete any others."""
    for path in sorted(run.fold_file(k, "").glob("best.e*.*")):
        match = _STAGED.match(path.name)
        if match and int(match.group(1)) == history["best"]["epoch"]:
            path.replace(run.fold_file(k, "best.pt" if match.group(2) == "pt" else "best_oof.npy"))
        else:
            path.unlink()


def _journal_epoch(run, k, cfg, pp, parts, history, row, probs):
    """Record one finished epoch (see the module docstring for the order of the writes)."""
    history["epochs"].append(row)
    # Best epoch: validation macro-F1 with thresholds tuned on the fold (F1 at 0.5 is too noisy
    # early on for rare classes, whose probabilities are still small).
    improved = row["macro_f1_tuned"] > history["best"]["macro_f1"]
    if improved:
        history["best"] = {"epoch": row["epoch"], "macro_f1": row["macro_f1_tuned"], "macro_f1_0.5": row["macro_f1_0.5"]}
    if ddp.is_main():
        if improved:
            save_checkpoint(run.fold_file(k, f"best.e{row['epoch']}.pt"), parts.model, cfg, pp, fold=k,
                            epoch=row["epoch"], val_macro_f1=row["macro_f1_tuned"])
            run.write_npy(run.fold_file(k, f"best.e{row['epoch']}.npy"), probs)
            journal_point("staged")
        save_checkpoint(run.fold_file(k, "last.pt"), parts.model, cfg, pp, epoch=row["epoch"], history=history,
                        **parts.state())
        journal_point("last")
        _commit_staged(run, k, history)
        journal_point("commit")
        run.write_history(k, history)
        journal_point("history")
    ddp.barrier()


def _finish_fold(run, k, cfg, pp, parts, samples, val_idx, device, history):
    """The fold's out-of-fold predictions: the best epoch's single-view ones (oof_single.npy) and
    those averaged over cfg.tta dihedral views (oof.npy; with --tta 1 the single view is oof.npy).
    Every step can be redone, and last.pt goes last, so a kill here redoes this on resume."""
    views = check_views(cfg.tta)
    if views > 1:
        parts.model.load_state_dict(load_checkpoint(run.checkpoint(k))["model"])
        probs, _ = predict_sharded(parts.model, samples, val_idx, pp, device, None, cfg.batch_size * 2, parts.amp,
                                   views)
    if ddp.is_main():
        if views > 1:
            run.write_npy(run.oof_file(k, views), probs)
            journal_point("oof")
        best = run.fold_file(k, "best_oof.npy")
        if best.exists():
            best.replace(run.oof_file(k, 1))
        journal_point("single")
        history["done"] = True
        run.write_history(k, history)
        journal_point("done")
        run.fold_file(k, "last.pt").unlink(missing_ok=True)


def _train_loader(cfg, pp, train_set, weights, epoch, k):
    """Every rank draws the same global order and takes its slice of each global batch."""
    g = torch.Generator().manual_seed(cfg.seed * 1000 + k * 100 + epoch)
    if weights is not None:
        order = torch.utils.data.WeightedRandomSampler(weights, len(weights), replacement=True, generator=g)
    else:
        order = torch.utils.data.RandomSampler(train_set, generator=g)
    rank, size, _ = ddp.world()
    sampler = ddp.RankSlice(order, cfg.batch_size, rank, size)
    # Images held in RAM are served by this process; streamed from PNG or from the --cache memory map
    # (a worker opens the file again: train.data.Samples pickles it as its path) they use --workers.
    in_ram = train_set.samples.images is not None and not isinstance(train_set.samples.images, np.memmap)
    workers = 0 if in_ram else cfg.workers
    # Decision: no pin_memory. train_step's non_blocking copy from pageable memory is then a plain
    # synchronous copy (correct, no overlap); pinning would need a benchmark on a GPU to justify the
    # DataLoader's extra pinning thread and host copies, and none has run there yet.
    return torch.utils.data.DataLoader(train_set, cfg.batch_size // size, sampler=sampler, drop_last=True,
                                       collate_fn=Collate(pp), num_workers=workers)


def _autocast(device, amp):
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp)


def train_step(parts, x, y, device):
    """One optimizer step on a batch; returns its loss as a float (waiting for the device, as the
    epoch's running loss needs). train.bench times this same step."""
    x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
    y = y.to(device, non_blocking=True)
    parts.optimizer.zero_grad(set_to_none=True)
    with _autocast(device, parts.amp):
        loss = parts.criterion(parts.net(x), y)
    parts.scaler.scale(loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    return float(loss.detach())


def _train_epoch(parts, loader, device, desc, progress):
    parts.net.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress)
    for x, y in bar:
        total += train_step(parts, x, y, device) * len(x)
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
    return out, sum(loss for _, loss in parts) / max(len(indices), 1)


@torch.inference_mode()
def predict(model, samples, indices, pp, device, criterion=None, batch_size=64, amp=False, views=1):
    """Sigmoid probabilities (N, 28) for the samples at ``indices``, averaged over ``views``
    dihedral views (runtime.tta, as the runtime does), and the mean loss (single view only)."""
    model.eval()
    dataset = FoldDataset(samples, indices)
    loader = torch.utils.data.DataLoader(dataset, batch_size, shuffle=False, collate_fn=Collate(pp))
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

