"""The training configuration: one frozen dataclass, built once from the command line, saved with
every checkpoint and as RUN/config.json."""

import math
from dataclasses import asdict, dataclass, fields
from numbers import Real
from pathlib import Path

from runtime.preprocess import SIZE_RANGE

# *Decision*: the stem widths a run may have. 64 is torchvision's ResNet; 1024 makes a ResNet-18
# of 700 million weights, past any model this toolkit trains, so a checkpoint claiming a width of
# 10**9 is refused here rather than by the allocator.
WIDTH_RANGE = (1, 1024)


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
    pretrained: str = ""            # a local torchvision ResNet state dict (never downloaded)
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
    threads: int = 0                # torch CPU threads (0: torch's default)
    jobs: int = 1                   # CPU: train this many folds at once, one process each

    def __post_init__(self):
        # The sizes a model is built from, checked wherever a config is made (the command line, a
        # checkpoint, RUN/config.json) before anything is allocated.
        for name, (low, high) in (("width", WIDTH_RANGE), ("size", SIZE_RANGE)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"config.{name} {repr(value)[:60]} is outside {low}..{high}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"config.dropout {self.dropout!r} is outside [0, 1)")

    def to_dict(self):
        return asdict(self)

    def dataset(self):
        """(labels CSV, image folder) this run trains on."""
        return dataset_paths(self.data, self.labels, self.images)

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
