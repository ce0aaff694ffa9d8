"""Training data: decode through ``runtime`` (the one reader and preprocessing), cache, augment."""

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from runtime.errors import DataError
from runtime.labels import multi_hot, read_labels
from runtime.preprocess import channel_stats, normalize, resize
from runtime.reader import ImageFolder
from runtime.tta import dihedral

log = logging.getLogger(__name__)


class Samples:
    """The labelled samples of a dataset, decoded and resized once.

    Every image is decoded at start (in threads: OpenCV releases the GIL). A sample whose files
    are missing or corrupt is listed in ``errors`` (Id, file, reason) and left out, never
    silently. When the resized set fits in ``cache_gb`` it stays in memory; otherwise it is
    decoded again from disk each epoch.
    """

    def __init__(self, labels_csv, image_dir, pp, cache_gb=8.0, threads=None, progress=True, cache_dir=None):
        self.pp = pp
        self.folder = ImageFolder(image_dir)
        table = read_labels(labels_csv)
        ids = list(table)
        if cache_dir:  # decoded once into DIR, then memory-mapped: --cache-gb does not apply (train.cache)
            from train.cache import build_cache
            self.ids, self.errors, self.images = build_cache(cache_dir, self.folder, ids, pp, progress=progress)
            self.cached = True
            self.y = multi_hot([table[i] for i in self.ids])
            if not self.ids:
                raise DataError(labels_csv, "no readable samples")
            return
        self.cached = len(ids) * pp.size * pp.size * 4 <= cache_gb * 2 ** 30
        threads = threads or min(8, os.cpu_count() or 1)
        # Held in RAM: each sample is written into one array as it is decoded (a list of samples
        # stacked at the end would hold the set twice at the peak).
        images = np.empty((len(ids), pp.size, pp.size, 4), np.uint8) if self.cached else None
        self.errors, keep = [], []
        with ThreadPoolExecutor(threads) as pool:
            results = pool.map(self._load, ids)
            for sample_id, result in tqdm(zip(ids, results), total=len(ids), desc="decode", unit="img",
                                          disable=not progress):
                if isinstance(result, DataError):
                    self.errors.append((sample_id, result.path, result.reason))
                    log.warning("skipping %s: %s", sample_id, result)
                    continue
                if self.cached:
                    images[len(keep)] = result
                keep.append(sample_id)
        self.ids = keep
        self.y = multi_hot([table[i] for i in keep])
        # the rows of unreadable samples stay allocated at the end, unused: no second copy to drop them
        self.images = images[:len(keep)] if self.cached and keep else None
        if not keep:
            raise DataError(labels_csv, "no readable samples")

    def __getstate__(self):  # a memory-mapped cache travels as its path (--jobs), not as a copy
        state = dict(self.__dict__)
        if isinstance(self.images, np.memmap):
            # the exact file of this run's key (train.cache): a rebuild of the folder for another
            # key meanwhile never reaches a process or loader worker that reopens it
            state["images"] = ("memmap", self.images.filename)
        return state

    def __setstate__(self, state):
        if isinstance(state.get("images"), tuple):
            from train.cache import open_images
            state["images"] = open_images(state["images"][1])
        self.__dict__.update(state)

    def _load(self, sample_id):
        try:
            sample = resize(self.folder.read(sample_id), self.pp)
            return sample if self.cached else None
        except DataError as err:
            return err

    def get(self, index):
        if self.images is not None:
            return np.asarray(self.images[index])
        return resize(self.folder.read(self.ids[index]), self.pp)

    def channel_stats(self, limit=512, seed=0):
        """Per-channel mean/std (0..1) over up to ``limit`` samples, read one at a time (from RAM, the
        ``--cache`` memory map or the PNG files): runtime's ``channel_stats`` never holds them together."""
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(self.ids), size=min(limit, len(self.ids)), replace=False)
        return channel_stats(self.get(i) for i in sorted(pick))


class FoldDataset(torch.utils.data.Dataset):
    """Samples at the given indices as uint8 (S, S, 4) plus multi-hot targets.

    Augmentation draws from a generator seeded by (seed, epoch, index), so a resumed epoch sees
    exactly the augmentations an uninterrupted one would.
    """

    def __init__(self, samples, indices, augment=False, seed=0):
        self.samples, self.indices, self.augment, self.seed = samples, np.asarray(indices), augment, seed
        self.epoch = 0

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        index = int(self.indices[i])
        sample = self.samples.get(index)
        if self.augment:
            k = np.random.default_rng((self.seed, self.epoch, index)).integers(8)
            sample = np.ascontiguousarray(dihedral(sample, int(k)))
        return sample, self.samples.y[index]


class Collate:
    """Batch uint8 samples and normalise them with runtime's ``normalize`` -> float tensors.

    A module-level class, not a closure: a DataLoader worker started by 'spawn' or 'forkserver'
    (macOS's and Windows' default, and Python 3.14's on Linux) receives it pickled."""

    def __init__(self, pp):
        self.pp = pp

    def __call__(self, batch):
        images = np.stack([b[0] for b in batch])
        targets = np.stack([b[1] for b in batch])
        return torch.from_numpy(normalize(images, self.pp)), torch.from_numpy(targets)


def balanced_weights(y, power=0.5):
    """Per-sample sampling weights: each image weighs as its rarest class, (N / count)^power."""
    counts = np.maximum(y.sum(0), 1)
    class_w = (len(y) / counts) ** power
    w = (y * class_w).max(1)
    return np.where(w > 0, w, class_w.min())
