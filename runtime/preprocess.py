"""Preprocessing, defined once: training, export, runtime and viewer all call these functions.

A sample is uint8 (H, W, 4) in CHANNELS order. ``resize`` brings it to the model's size
(still uint8, so training can cache it compactly); ``image_chw`` is that, channels first: the
uint8 (4, S, S) image an exported graph (model.json version 3) takes and normalises itself;
``image_chw_into`` writes it from the four channel planes straight into a batch's slot.
``normalize`` turns a batch of resized samples into the float32 (N, 4, S, S) tensor the network
computes on (training, the viewer's Grad-CAM, and version-2 files, which take it as their input);
``normalize_chw`` is the same on channels-first images. ``preprocess`` is resize and normalize for
one sample.
"""

import math
from dataclasses import asdict, dataclass, field, fields
from numbers import Integral, Real

import cv2
import numpy as np

from runtime.classes import CHANNELS

_INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
INTERPOLATIONS = tuple(_INTERPOLATIONS)
# What a Preprocess may hold (model.json's schema states the same ranges, runtime.model_schema).
# *Decision*: mean is a mean of pixels on the 0..1 scale, so it lies in [0, 1]; std is at least
# 1e-3, the floor ``channel_stats`` gives a training run, and at most 1e3: a std closer to zero
# scales pixels towards float32's overflow (1e-46 even becomes 0 and every probability NaN), and
# no run writes such values. size: up to 16384 px (model.json asks for at least 8).
SIZE_RANGE = (1, 16384)
MEAN_RANGE = (0.0, 1.0)
STD_RANGE = (1e-3, 1e3)


@dataclass(frozen=True)
class Preprocess:
    """How to feed a model. Stored in every checkpoint and in ``model.json``."""

    size: int = 256
    mean: tuple = (0.0, 0.0, 0.0, 0.0)  # per channel, on the 0..1 scale
    std: tuple = (1.0, 1.0, 1.0, 1.0)
    channels: tuple = field(default=CHANNELS)
    interpolation: str = "area"

    def __post_init__(self):
        # Checked here, where every Preprocess is made (model.json, checkpoints, the command line):
        # a value of the wrong type or out of range is a ValueError naming the field, never a
        # NaN input or an OpenCV overload error later.
        if isinstance(self.size, bool) or not isinstance(self.size, Integral):
            raise ValueError(f"size must be a whole number, got {self.size!r}")
        if not SIZE_RANGE[0] <= self.size <= SIZE_RANGE[1]:
            raise ValueError(f"size {self.size} is outside {SIZE_RANGE[0]}..{SIZE_RANGE[1]}")
        if isinstance(self.channels, str) or tuple(self.channels) != CHANNELS:
            raise ValueError(f"channel order must be {CHANNELS}, got {self.channels}")
        if not isinstance(self.interpolation, str) or self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; valid: {sorted(_INTERPOLATIONS)}")
        for name, (low, high) in (("mean", MEAN_RANGE), ("std", STD_RANGE)):
            values = getattr(self, name)
            if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__") or len(values) != 4:
                raise ValueError(f"{name} needs 4 values, one per channel, got {values!r}")
            for i, v in enumerate(values):
                if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or not low <= v <= high:
                    raise ValueError(f"{name}[{i}] is {v!r}, not a number in [{low:g}, {high:g}]")
        # JSON round-trips give lists; keep tuples (of plain ints and floats) so instances stay
        # hashable and comparable.
        object.__setattr__(self, "size", int(self.size))
        for name in ("mean", "std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "channels", tuple(self.channels))

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        """From model.json's or a checkpoint's ``preprocess``; ValueError for anything else."""
        if not isinstance(data, dict):
            names = ", ".join(f.name for f in fields(cls))
            raise ValueError(f"expected an object of {names}, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}")
        return cls(**data)


def resize(sample, cfg):
    """uint8 (H, W, 4) -> uint8 (size, size, 4)."""
    if sample.shape[:2] == (cfg.size, cfg.size):
        return sample
    return cv2.resize(sample, (cfg.size, cfg.size), interpolation=_INTERPOLATIONS[cfg.interpolation])


def normalize(batch, cfg):
    """uint8 (N, S, S, 4) or (S, S, 4) -> float32 (N, 4, S, S) or (4, S, S)."""
    x = np.asarray(batch, dtype=np.float32) * (1.0 / 255.0)
    x -= np.asarray(cfg.mean, dtype=np.float32)
    x /= np.asarray(cfg.std, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def image_chw(sample, cfg):
    """uint8 (H, W, 4) -> the resized uint8 (4, S, S) image, channels first."""
    return np.ascontiguousarray(np.moveaxis(resize(sample, cfg), -1, -3))


def image_chw_into(planes, cfg, out):
    """The four 2-D uint8 planes of a sample (``ImageFolder.read_planes``) resized straight into
    ``out``, a uint8 (4, S, S) slot of a batch: ``image_chw`` of the stacked sample, bit for bit
    (each interpolation treats the channels alone), without the interleaved copy, the resized
    copy and the channels-first copy."""
    for plane, dst in zip(planes, out):
        if plane.shape == dst.shape:
            np.copyto(dst, plane)
        else:  # dst is a contiguous (S, S) view: cv2 writes into it
            cv2.resize(plane, (cfg.size, cfg.size), dst=dst, interpolation=_INTERPOLATIONS[cfg.interpolation])
    return out


def normalize_chw(batch, cfg):
    """uint8 (N, 4, S, S) or (4, S, S) -> float32 of the same shape, by ``normalize`` itself: each
    element is computed alone, so the layout changes no bit of the result."""
    return normalize(np.moveaxis(np.asarray(batch), -3, -1), cfg)


def preprocess(sample, cfg):
    """One decoded sample -> the model's float32 (4, S, S) input."""
    return normalize(resize(sample, cfg), cfg)


def channel_stats(samples):
    """Per-channel mean and std (0..1 scale, std at least 1e-3) of uint8 samples: the
    ``Preprocess.mean``/``std`` a training run stores. ``samples`` is a uint8 (N, H, W, 4) array (a
    memory map too) or any iterable of uint8 (H, W, 4) samples; they are read one at a time, so the
    memory used is one sample's, not the set's.

    *Decision*: the statistics come from each channel's 256-bin histogram, exact integer counts,
    not from a float64 copy of the samples (512 samples at 512 px made a 4 GiB copy and as much
    again in temporaries, about 10 GiB at the peak). From the counts, the mean is the exact mean
    rounded once to float64 and the std is within a few units in the last place of the exact one,
    whatever the order of the samples or how they are read. The float64 reduction they replace
    carried the rounding of summing every pixel in turn: on 512 real 512-px samples it was off
    the exact values by up to 9e-10 relative (1e-12 on small sets). ``normalize`` applies them
    as float32, whose resolution is 6e-8 relative, so a stored value moves by at most one float32
    step, and only where it lay within 1e-9 of a rounding boundary (on those 512 samples none
    of the eight moved)."""
    hist = np.zeros((4, 256), np.int64)
    for sample in samples:  # an (N, H, W, 4) array or memory map yields one (H, W, 4) view at a time
        sample = np.asarray(sample)
        if sample.dtype != np.uint8 or sample.ndim != 3 or sample.shape[-1] != 4:
            raise ValueError(f"channel_stats takes uint8 (H, W, 4) samples, got {sample.dtype} {sample.shape}")
        for c in range(4):
            hist[c] += np.bincount(sample[..., c].ravel(), minlength=256)
    means, stds = [], []
    for counts in hist.tolist():  # Python integers from here on: exact, never overflowing
        n = sum(counts)
        if n == 0:
            raise ValueError("channel_stats needs at least one sample with pixels")
        total = sum(v * k for v, k in enumerate(counts))
        squares = sum(v * v * k for v, k in enumerate(counts))
        means.append(total / (255 * n))  # int / int: the exact quotient, correctly rounded
        # n^2 * 255^2 * variance = n * sum(v^2) - (sum v)^2, exact (and never negative)
        stds.append(math.sqrt(n * squares - total * total) / (255 * n))
    return tuple(means), tuple(max(v, 1e-3) for v in stds)
