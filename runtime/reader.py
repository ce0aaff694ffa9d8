"""Decoding of HPA samples: four grayscale files per Id, returned as one uint8 HxWx4 array.

Accepted: ``{Id}_{red,green,blue,yellow}.{png,jpg,jpeg,tif,tiff}`` in one folder (or in the
sub-folder a split manifest names). 16-bit images are scaled to 8 bits; an RGB file where
grayscale is expected keeps one plane (with a warning); channels of different sizes are
resized to the red channel's size. Anything else raises :class:`DataError` naming the file.
"""

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from runtime.classes import CHANNELS
from runtime.errors import DataError
from runtime.ids import check_id, is_safe_id

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
def decode_channel(path):
    """Decode one grayscale channel file to a 2-D uint8 array."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(path, "missing file") from None
    except OSError as err:
        raise DataError(path, f"cannot read ({err.strerror})") from None
    if data.size == 0:
        raise DataError(path, "empty file (0 bytes)")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DataError(path, "unreadable or truncated image")
    if img.ndim == 3:
        img = _one_plane(img, path)
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(path, f"unsupported pixel type {img.dtype} (expected 8- or 16-bit grayscale)")
    return img


def _one_plane(img, path):
    # An RGB(A) file where grayscale is expected: HPA tools sometimes save a channel as RGB
    # with the signal in one plane or copied into all three. Keep the brightest colour plane.
    planes = img[..., :3] if img.shape[2] >= 3 else img
    keep = int(np.argmax(planes.reshape(-1, planes.shape[2]).sum(axis=0, dtype=np.uint64)))
    log.warning("%s: colour image where grayscale is expected; using plane %d", path, keep)
    return np.ascontiguousarray(planes[..., keep])


def find_channel_file(folder, sample_id, channel):
    """The path of one channel file, trying each accepted extension (PNG first)."""
    for ext in EXTENSIONS:
        path = Path(folder) / f"{sample_id}_{channel}{ext}"
        if path.exists():
            return path
    return Path(folder) / f"{sample_id}_{channel}.png"


def channel_files(folder):
    """(Id, channel, file name) for every channel image directly in ``folder``."""
    for entry in os.scandir(folder):
        stem, ext = os.path.splitext(entry.name)
        if ext.lower() in EXTENSIONS and "_" in stem and entry.is_file():
            sample_id, channel = stem.rsplit("_", 1)
            if channel in CHANNELS:
                yield sample_id, channel, entry.name


class ImageFolder:
    """Where a dataset's images live: one folder, or sub-folders listed in a split manifest.

    ``scripts/split_dataset.py`` writes ``manifest.csv`` (``Id,dir``) at the top of a split
    folder; when that file exists, each Id is read from its sub-folder.
    """

    MANIFEST = "manifest.csv"

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "image folder not found")
        self._subdir = {}
        manifest = self.root / self.MANIFEST
        if manifest.exists():
            from runtime.labels import read_manifest

            self._subdir = read_manifest(manifest)

    def folder_of(self, sample_id):
        return self.root / self._subdir.get(sample_id, "")

    def channel_path(self, sample_id, channel):
        check_id(sample_id)
        return find_channel_file(self.folder_of(sample_id), sample_id, channel)

    def read(self, sample_id):
        """The sample as uint8 (H, W, 4) in CHANNELS order."""
        check_id(sample_id)
        planes = [decode_channel(self.channel_path(sample_id, ch)) for ch in CHANNELS]
        shape = planes[0].shape
        for i, plane in enumerate(planes[1:], start=1):
            if plane.shape != shape:
                log.warning("%s: size %s differs from red's %s; resized",
                            self.channel_path(sample_id, CHANNELS[i]), plane.shape, shape)
                planes[i] = cv2.resize(plane, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        return np.stack(planes, axis=-1)

    def _scan(self):
        seen = {}
        folders = {self.root} | {self.root / d for d in set(self._subdir.values())}
        for folder in folders:
            if folder.is_dir():
                for sample_id, channel, _ in channel_files(folder):
                    seen.setdefault(sample_id, set()).add(channel)
        return seen

    def ids(self):
        """Every Id with all four channel files present, sorted (unsafe Ids are left out)."""
        return sorted(i for i, chans in self._scan().items()
                      if len(chans) == len(CHANNELS) and is_safe_id(i))

    def incomplete_ids(self):
        """Ids with some but not all four channel files: {Id: [missing channels]}."""
        return {i: [c for c in CHANNELS if c not in chans]
                for i, chans in sorted(self._scan().items()) if len(chans) < len(CHANNELS)}
