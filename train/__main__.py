"""python -m train {synth,folds,fit,merge}: the training command line."""

import logging
import sys
import time
from pathlib import Path

from runtime.cli import (ArgumentParser, dispatch, finite_float_list, int_at_least, non_negative_float,
                         non_negative_int, positive_float, positive_int)
from runtime.errors import DataError
from runtime.tta import VIEW_COUNTS
from train.config import ARCHS, ATTENTIONS, LOSSES, SAMPLERS


def _ints(text):
    return tuple(int(v) for v in text.split(",")) if text else ()


def parser():
    p = ArgumentParser(prog="python -m train", description="HPA training toolkit")
    sub = p.add_subparsers(dest="command", required=True)
    _data_commands(sub)
    _fit_command(sub.add_parser("fit", help="train K folds of a CBAM-ResNet"))
    m = sub.add_parser("merge", help="tune thresholds and write metrics.json once every fold is trained")
    m.add_argument("--run", required=True, help="the run folder whose folds were trained separately (--fold)")
    return p


def _data_commands(sub):
    """synth, gallery, analyze and folds: the commands about a dataset."""
    s = sub.add_parser("synth", help="write a synthetic dataset in the Kaggle layout")
    s.add_argument("--out", required=True, help="dataset folder to write (train.csv, train/, dataset.json)")
    s.add_argument("--images", type=positive_int, default=1000, help="training fields to generate")
    s.add_argument("--size", type=positive_int, default=512, help="field size in pixels (Kaggle: 512)")
    s.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same dataset")
    s.add_argument("--zoom", type=positive_float, default=1.0, help="magnification: >1 gives fewer, larger cells per field")
    s.add_argument("--min-per-class", type=non_negative_int, default=25, help="every class gets at least this many images (at most N/20)")
    s.add_argument("--test-images", type=non_negative_int, default=0, help="also write a held-out test/ set with sample_submission.csv")

    g = sub.add_parser("gallery", help="a PNG with one synthetic field per class")
    g.add_argument("--out", required=True, help="PNG file to write")
    g.add_argument("--size", type=positive_int, default=128, help="field size in pixels")
    g.add_argument("--zoom", type=positive_float, default=2.4, help="magnification, as for synth")

    a = sub.add_parser("analyze", help="figures and report.html about a dataset (and a run)")
    a.add_argument("--data", required=True, help="dataset folder (train.csv and train/, Kaggle layout)")
    a.add_argument("--out", required=True, help="folder for the figures and report.html")
    a.add_argument("--run", default="", help="a training run folder: adds its curves and per-class F1 (default: none)")
    a.add_argument("--linear", action="store_true", help="linear instead of log scale for the label counts")

    f = sub.add_parser("folds", help="write a multilabel-stratified Id,fold split")
    f.add_argument("--labels", required=True, help="labels CSV (Id,Target), e.g. DATA/train.csv")
    f.add_argument("--folds", type=int_at_least(2), default=3, help="number of folds")
    f.add_argument("--seed", type=int, default=0, help="random seed of the split")
    f.add_argument("--out", required=True, help="CSV file to write (Id,fold)")


def _fit_command(t):
    t.add_argument("--data", required=True, help="dataset folder: train.csv and train/ (Kaggle layout)")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--labels", default="", help="labels CSV (default: DATA/train.csv)")
    t.add_argument("--images", default="", help="image folder (default: DATA/train, or DATA when it holds the images)")
    t.add_argument("--folds", type=int_at_least(2), default=3, help="number of cross-validation folds")
    t.add_argument("--fold", type=_ints, default=(),
                   help="train only these folds, e.g. 0 or 0,2; `train merge` joins them (default: every fold)")
    t.add_argument("--folds-file", default="",
                   help="reuse an Id,fold split written by `train folds` (default: a stratified split by --seed)")
    t.add_argument("--arch", default="resnet18", choices=ARCHS, help="ResNet depth")
    t.add_argument("--attention", default="cbam", choices=ATTENTIONS,
                   help="cbam: channel and spatial attention in every block; none: plain ResNet")
    t.add_argument("--width", type=positive_int, default=64, help="stem width (64 = torchvision ResNet)")
    t.add_argument("--pretrained", default="", help="local torchvision ResNet weights file, or imagenet / imagenet-v2: "
                   "torchvision's ImageNet weights for --arch from the torch hub cache (downloaded once) (default: random initialisation)")
    t.add_argument("--dropout", type=non_negative_float, default=0.0, help="dropout before the classifier")
    t.add_argument("--size", type=positive_int, default=256, help="images are resized to SIZE x SIZE pixels")
    t.add_argument("--epochs", type=positive_int, default=10, help="epochs per fold")
    t.add_argument("--batch-size", type=positive_int, default=32, help="images per training step")
    t.add_argument("--lr", type=positive_float, default=1e-3,
                   help="AdamW's peak learning rate (one-cycle schedule: warm-up, then cosine decay)")
    t.add_argument("--weight-decay", type=non_negative_float, default=0.05,
                   help="AdamW's decoupled weight decay; short schedules on small data want more "
                        "(the demo takes 0.3: docs/training.md)")
    t.add_argument("--loss", default="focal", choices=LOSSES, help="focal loss or binary cross-entropy")
    t.add_argument("--gamma", type=non_negative_float, default=2.0, help="focal loss: the focusing exponent")
    t.add_argument("--alpha", type=finite_float_list, default=(),
                   help="focal alpha: one value or 28 comma-separated (default: none, every class weighs 1)")
    t.add_argument("--sampler", default="balanced", choices=SAMPLERS,
                   help="balanced: draw images of rare classes more often; uniform: a plain shuffle")
    t.add_argument("--sampler-power", type=non_negative_float, default=0.5,
                   help="balanced sampler: an image weighs (N / count of its rarest class)^power; 1 = fully balanced")
    t.add_argument("--no-augment", dest="augment", action="store_false",
                   help="train without the random flips and quarter turns (default: with them)")
    t.add_argument("--tta", type=int, default=4, choices=VIEW_COUNTS,
                   help="test-time augmentation: out-of-fold predictions (and the thresholds tuned on them) "
                        "average this many flips/quarter turns; the runtime applies the same")
    t.add_argument("--seed", type=int, default=0, help="random seed of the split, the weights and the sampling")
    t.add_argument("--device", default="auto", help="auto (cuda when present, else cpu), cpu, cuda or cuda:N")
    t.add_argument("--no-amp", dest="amp", action="store_false",
                   help="CUDA: train in FP32 instead of mixed precision (default: mixed precision on CUDA)")
    t.add_argument("--workers", type=non_negative_int, default=0,
                   help="DataLoader worker processes when the images are read from disk each epoch "
                        "(0: in the training process)")
    t.add_argument("--cache-gb", type=non_negative_float, default=8.0,
                   help="keep the resized images in memory when they fit in this many GiB, else read them each epoch")
    t.add_argument("--cache", default="", metavar="DIR",
                   help="decode every image once into DIR (uint8, memory-mapped) and train from there; "
                        "reused while the images, Ids and --size are unchanged, rebuilt otherwise; --cache-gb then does not apply "
                        "(default: no disk cache)")
    t.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch CPU threads (per process with --jobs; 0: torch's own choice)")
    t.add_argument("--jobs", type=positive_int, default=1,
                   help="CPU: train this many folds at once, one process each (faster than threads for small models)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out where it stopped (default: a run folder that exists is refused)")


def main(argv=None):
    return dispatch(parser(), COMMANDS, argv, level=logging.INFO)


def cmd_synth(args):
    from tqdm import tqdm

    from train.synth import generate

    t0 = time.perf_counter()
    rows = generate(args.out, args.images, args.size, args.seed, args.min_per_class, args.test_images,
                    progress=lambda it, **kw: tqdm(it, **kw), zoom=args.zoom)
    print(f"wrote {len(rows)} training images ({args.size}x{args.size}) to {Path(args.out) / 'train'}"
          f" in {time.perf_counter() - t0:.0f}s; labels: {Path(args.out) / 'train.csv'}")
    return 0


def cmd_gallery(args):
    from train.synth import gallery

    print(f"wrote {gallery(args.out, args.size, args.zoom)}")
    return 0


def cmd_analyze(args):
    from train.analyze import analyze

    figures = analyze(args.data, args.out, args.run or None, log=not args.linear)
    print(f"wrote {len(figures)} figures and {Path(args.out) / 'report.html'}")
    return 0


def cmd_folds(args):
    from runtime.labels import multi_hot, read_labels
    from train.folds import assign_folds, write_folds

    table = read_labels(args.labels)
    if len(table) < args.folds:
        raise DataError(args.labels, f"{len(table)} labelled Ids cannot make {args.folds} folds")
    folds = assign_folds(multi_hot(list(table.values())), args.folds, args.seed)
    write_folds(args.out, list(table), folds)
    print(f"wrote {args.out}: {len(folds)} Ids in {args.folds} folds")
    return 0


def cmd_fit(args):
    from contextlib import nullcontext

    from runtime.outlock import run_folder_lock
    from train.config import FitConfig
    from train.distributed import world
    from train.fit import fit
    from train.report import format_report
    from train.run import Run

    out = Path(args.out)
    _check_inputs(args)
    # one writer per run folder (runtime/outlock.py); under torchrun only rank 0 writes, and locks
    with run_folder_lock(out, args.fold) if world()[0] == 0 else nullcontext():
        if Run(out).has_config() and not args.resume and not args.fold:
            raise DataError(out, "run folder already exists; pass --resume to continue it or choose another --out")
        options = {k: v for k, v in vars(args).items() if k not in ("command", "resume")}
        cfg = FitConfig(**options)
        t0 = time.perf_counter()
        metrics = fit(cfg)
    if metrics:
        print(format_report(metrics))
        print(f"trained in {time.perf_counter() - t0:.0f}s; run folder: {out} (metrics.json, thresholds.json, "
              f"oof.csv, curves.png, fold*/best.pt)")
    return 0


def _check_inputs(args):
    """Files named on the command line are checked before the dataset is decoded (minutes on a
    big one), so a typo costs one line at once; their contents are checked where they are read."""
    from runtime.labels import read_rows

    from train.pretrained import HUB

    pretrained = "" if args.pretrained in HUB else args.pretrained
    for option, path in (("--pretrained", pretrained), ("--folds-file", args.folds_file)):
        if path and not Path(path).is_file():
            raise DataError(path, f"{option}: {'is a folder' if Path(path).is_dir() else 'file not found'}")
    if args.folds_file:
        next(read_rows(args.folds_file, ("Id", "fold")), None)  # a CSV with its columns


def cmd_merge(args):
    from train.report import format_report, merge

    print(format_report(merge(args.run)))
    return 0


COMMANDS = {"synth": cmd_synth, "gallery": cmd_gallery, "analyze": cmd_analyze, "folds": cmd_folds, "fit": cmd_fit, "merge": cmd_merge}

if __name__ == "__main__":
    sys.exit(main())
