"""The training configuration: one frozen dataclass, built once from the command line, saved with
every checkpoint and as RUN/config.json."""

from dataclasses import asdict, dataclass, fields
from pathlib import Path


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

    def to_dict(self):
        return asdict(self)

    def dataset(self):
        """(labels CSV, image folder) this run trains on."""
        return dataset_paths(self.data, self.labels, self.images)

    @classmethod
    def from_dict(cls, data):
        known = {f.name for f in fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**values)
