"""Preprocessing, defined once: training, export, runtime and viewer all call these functions.

A sample is uint8 (H, W, 4) in CHANNELS order. ``resize`` brings it to the model's size
(still uint8, so training can cache it compactly); ``image_chw`` is that, channels first: the
uint8 (4, S, S) image an exported graph (model.json version 3) takes and normalises itself.
``normalize`` turns a batch of resized samples into the float32 (N, 4, S, S) tensor the network
computes on (training, the viewer's Grad-CAM, and version-2 files, which take it as their input);
``normalize_chw`` is the same on channels-first images. ``preprocess`` is resize and normalize for
one sample.
"""

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from runtime.classes import CHANNELS

_INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """How to feed a model. Stored in every checkpoint and in ``model.json``."""

    size: int = 256
    mean: tuple = (0.0, 0.0, 0.0, 0.0)  # per channel, on the 0..1 scale
    std: tuple = (1.0, 1.0, 1.0, 1.0)
    channels: tuple = field(default=CHANNELS)
    interpolation: str = "area"

    def __post_init__(self):
        if tuple(self.channels) != CHANNELS:
            raise ValueError(f"channel order must be {CHANNELS}, got {self.channels}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; valid: {sorted(_INTERPOLATIONS)}")
        if len(self.mean) != 4 or len(self.std) != 4 or min(self.std) <= 0:
            raise ValueError("mean and std need 4 values each, std > 0")
        # JSON round-trips give lists; keep tuples so instances stay hashable and comparable.
        for name in ("mean", "std", "channels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
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


def normalize_chw(batch, cfg):
    """uint8 (N, 4, S, S) or (4, S, S) -> float32 of the same shape, by ``normalize`` itself: each
    element is computed alone, so the layout changes no bit of the result."""
    return normalize(np.moveaxis(np.asarray(batch), -3, -1), cfg)


def preprocess(sample, cfg):
    """One decoded sample -> the model's float32 (4, S, S) input."""
    return normalize(resize(sample, cfg), cfg)


def channel_stats(samples):
    """Per-channel mean and std (0..1 scale, std at least 1e-3) of uint8 (N, H, W, 4) samples:
    the ``Preprocess.mean``/``std`` a training run stores."""
    x = np.asarray(samples).astype(np.float64) / 255.0
    mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
    return tuple(float(v) for v in mean), tuple(float(max(v, 1e-3)) for v in std)
