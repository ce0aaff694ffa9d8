"""The training configuration: one frozen dataclass, built once from the command line, saved with
every checkpoint and as RUN/config.json."""

import math
import os
from dataclasses import asdict, dataclass, fields
from numbers import Real
from pathlib import Path

from runtime.classes import NUM_CLASSES
from runtime.preprocess import SIZE_RANGE
from runtime.tta import VIEW_COUNTS

ARCHS = ("resnet18", "resnet34", "resnet50")       # train.model.ARCHS (which imports torch)
ATTENTIONS = ("cbam", "none")
LOSSES = ("focal", "bce")
SAMPLERS = ("balanced", "uniform")

# The network halves the image five times (stem, max-pool, three strided stages): below 32 pixels
# the last stages see a single pixel padded with zeros, and a 1-pixel image breaks the flipped
# views of test-time augmentation after a whole fold has trained.
DOWNSAMPLING = 32
# *Decision*: 8x torchvision's width. ResNet-50 at width 1024 would hold 6.5e9 parameters (about
# 100 GB with AdamW's two moments and the gradients): more than any one GPU holds.
MAX_WIDTH = 512
MAX_SEED = 2 ** 32 - 1                             # numpy's seed range; per-fold seeds derive from it
MAX_LR = 1.0            # AdamW moves each weight by about lr a step: above 1 training diverges
MAX_GAMMA = 10.0        # focal loss: at 10 an image predicted at p 0.5 weighs 0.001; usual values are 0-5
MAX_SAMPLER_POWER = 4.0  # 1 balances the classes fully; beyond 4 the rarest class's images are all that is drawn
# The stem widths any config may have (the command line, a checkpoint, RUN/config.json), so that a
# checkpoint claiming a width of 10**9 is refused before the allocator sees it.
WIDTH_RANGE = (1, MAX_WIDTH)


def dataset_paths(data, labels="", images=""):
    """(labels CSV, image folder) of a dataset in the Kaggle layout: DATA/train.csv and DATA/train/
    (or DATA itself when it holds the images), unless given explicitly."""
    data = Path(data)
    labels = Path(labels) if labels else data / "train.csv"
    if images:
        return labels, Path(images)
    return labels, (data / "train" if (data / "train").is_dir() else data)


@dataclass(frozen=True)
class FitConfig:
    data: str                       # dataset folder (train.csv + train/), Kaggle layout
    out: str                        # run folder
    labels: str = ""                # default: DATA/train.csv
    images: str = ""                # default: DATA/train (or DATA itself when it holds the PNGs)
    folds: int = 3
    fold: tuple = ()                # train only these folds (empty: all)
    folds_file: str = ""            # reuse a split written by `python -m train folds`
    arch: str = "resnet18"
    attention: str = "cbam"
    width: int = 64                 # stem width; 64 is torchvision's ResNet, 32 a 4x cheaper one
    pretrained: str = ""            # a local torchvision ResNet state dict, or imagenet / imagenet-v2 (train.pretrained)
    dropout: float = 0.0
    size: int = 256
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05      # AdamW's decoupled decay; 1e-4 left the demo's rare classes overfit
    loss: str = "focal"
    gamma: float = 2.0
    alpha: tuple = ()               # focal alpha: empty (none), one value, or one per class
    sampler: str = "balanced"       # balanced: oversample images of rare classes; uniform: plain shuffle
    sampler_power: float = 0.5      # class weight = (N / count)^power
    augment: bool = True            # flips and 90-degree rotations (cells have no orientation)
    tta: int = 4                    # out-of-fold predictions average this many dihedral views (runtime.tta)
    seed: int = 0
    device: str = "auto"            # auto: cuda when present, else cpu
    amp: bool = True                # mixed precision on CUDA (ignored on CPU)
    workers: int = 0                # DataLoader workers when images are streamed from disk
    cache_gb: float = 8.0           # keep resized images in memory when they fit in this
    cache: str = ""                 # decoded-image cache folder on disk (train.cache); overrides cache_gb
    threads: int = 0                # torch CPU threads (0: torch's default)
    jobs: int = 1                   # CPU: train this many folds at once, one process each

    def to_dict(self):
        return asdict(self)

    def dataset(self):
        """(labels CSV, image folder) this run trains on."""
        return dataset_paths(self.data, self.labels, self.images)

    def check(self):
        """Refuse, in one line naming the option, every setting that cannot train (ValueError),
        before anything is read or written. What needs the data (how many samples there are) is
        checked by ``train.fit`` once the labels are read; the device once torch is imported."""
        _choice("--arch", self.arch, ARCHS)
        _choice("--attention", self.attention, ATTENTIONS)
        _choice("--loss", self.loss, LOSSES)
        _choice("--sampler", self.sampler, SAMPLERS)
        _choice("--tta", self.tta, VIEW_COUNTS)
        _whole("--folds", self.folds, 2)
        for k in self.fold:
            _whole("--fold", k, 0)
            if k >= self.folds:
                raise ValueError(f"--fold {k} outside 0..{self.folds - 1}")
        if len(set(self.fold)) != len(self.fold):
            raise ValueError(f"--fold {','.join(map(str, self.fold))}: a fold is listed twice")
        _whole("--width", self.width, 1, MAX_WIDTH, high_why="8x torchvision's ResNet; wider does not fit in one GPU")
        _whole("--size", self.size, DOWNSAMPLING, _max_size(), f"the network downsamples by {DOWNSAMPLING}",
               "its square is over the decoded-size limit, HPA_MAX_PIXELS")
        _whole("--epochs", self.epochs, 1)
        _whole("--batch-size", self.batch_size, 1)
        if self.batch_size == 1 and self.size <= DOWNSAMPLING:
            raise ValueError(f"--batch-size 1 at --size {self.size}: BatchNorm needs more than one value per "
                             f"channel, and the last stage's map is 1x1; use --batch-size 2 or more")
        # *Decision* on the upper bounds below: values past them are not slow training but none
        # (NaN losses, or a float overflow in torch after the data is decoded)
        _number("--lr", self.lr, 0.0, strict=True, high=MAX_LR)
        _number("--weight-decay", self.weight_decay, 0.0)
        if self.lr * self.weight_decay >= 1:
            raise ValueError(f"--lr {self.lr} x --weight-decay {self.weight_decay} must be below 1 (AdamW scales "
                             "the weights by 1 - lr x weight decay at every step)")
        _number("--dropout", self.dropout, 0.0)
        if self.dropout >= 1:
            raise ValueError(f"--dropout must be below 1, got {self.dropout} (1 drops every feature)")
        _number("--gamma", self.gamma, 0.0, high=MAX_GAMMA)
        _number("--sampler-power", self.sampler_power, 0.0, high=MAX_SAMPLER_POWER)
        if len(self.alpha) not in (0, 1, NUM_CLASSES):
            raise ValueError(f"--alpha needs 1 or {NUM_CLASSES} values, got {len(self.alpha)}")
        for value in self.alpha:
            _number("--alpha", value, 0.0, high=1.0)
        _whole("--seed", self.seed, 0, MAX_SEED)
        _whole("--workers", self.workers, 0)
        # *Decision*: more torch threads than logical cores never trains faster, and a typo of
        # 100000 would start that many OpenMP threads
        _whole("--threads", self.threads, 0, os.cpu_count() or 1, high_why="the CPU cores of this machine")
        _whole("--jobs", self.jobs, 1)
        if isinstance(self.cache_gb, bool) or not isinstance(self.cache_gb, (int, float)) or not self.cache_gb >= 0:
            raise ValueError(f"--cache-gb must be a number at least 0, got {self.cache_gb}")  # inf: always cache
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return self

    @classmethod
    def from_dict(cls, data):
        """From a checkpoint's or RUN/config.json's ``config``. Keys this version does not know are
        ignored (older and newer runs load); a known key whose value has the wrong type is a
        ValueError naming it, so a damaged config is refused before anything is built from it."""
        if not isinstance(data, dict):
            raise ValueError(f"config is {type(data).__name__}, expected an object")
        values = {}
        for f in fields(cls):
            if f.name in data:
                values[f.name] = _typed(f.name, f.type, data[f.name])
        missing = [f.name for f in fields(cls) if f.name not in values and f.name in ("data", "out")]
        if missing:
            raise ValueError(f"config lacks {missing[0]!r}")
        # The sizes a model is built from, checked before anything is allocated (a checkpoint
        # claiming a width of 10**9). The command line's values go through check() instead, whose
        # messages name the option.
        for name, (low, high) in (("width", WIDTH_RANGE), ("size", SIZE_RANGE)):
            value = values.get(name, getattr(cls, name))
            if not low <= value <= high:
                raise ValueError(f"config.{name} {repr(value)[:60]} is outside {low}..{high}")
        if not 0 <= values.get("dropout", cls.dropout) < 1:
            raise ValueError(f"config.dropout {values['dropout']!r} is outside [0, 1)")
        return cls(**values)


def _typed(name, kind, value):
    """``value`` as the field's type (a JSON list becomes a tuple), or ValueError naming ``name``."""
    def number(v, whole):
        ok = not isinstance(v, bool) and (isinstance(v, int) if whole else isinstance(v, Real) and math.isfinite(v))
        if not ok:
            expected = "a whole number" if whole else "a finite number"
            raise ValueError(f"config.{name} is {repr(v)[:60]}, expected {expected}")
        return int(v) if whole else float(v)

    if kind is tuple:
        if not isinstance(value, (list, tuple)) or len(value) > 1024:
            raise ValueError(f"config.{name} is {type(value).__name__}, expected a list")
        return tuple(number(v, name == "fold") for v in value)  # fold: fold indices; alpha: weights
    if kind in (int, float):
        return number(value, kind is int)
    if not isinstance(value, kind):
        raise ValueError(f"config.{name} is {type(value).__name__}, expected {kind.__name__}")
    return value


def _max_size():
    from runtime.reader import max_pixels_setting

    return math.isqrt(max_pixels_setting())


def _choice(option, value, valid):
    if value not in valid:
        raise ValueError(f"{option} {value}: valid values are {', '.join(map(str, valid))}")


def _whole(option, value, low, high=None, low_why="", high_why=""):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{option} must be a whole number, got {value!r}")
    if value < low:
        raise ValueError(f"{option} {value}: must be at least {low}" + (f" ({low_why})" if low_why else ""))
    if high is not None and value > high:
        raise ValueError(f"{option} {value}: must be at most {high}" + (f" ({high_why})" if high_why else ""))


def _number(option, value, low, strict=False, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{option} must be a finite number, got {value!r}")
    if value < low or (strict and value == low):
        raise ValueError(f"{option} {value}: must be {'above' if strict else 'at least'} {low}")
    if high is not None and value > high:
        raise ValueError(f"{option} {value}: must be at most {high}")
