"""Decoding of HPA samples: four grayscale files per Id, returned as one uint8 HxWx4 array.

Accepted: ``{Id}_{red,green,blue,yellow}.{png,jpg,jpeg,tif,tiff}`` in one folder (or in the
sub-folder a split manifest names). 16-bit images are scaled to 8 bits; an RGB file where
grayscale is expected keeps one plane (with a warning); channels of different sizes are
resized to the red channel's size. Anything else raises :class:`DataError` naming the file.

Hostile files:
- Decoded size: the width and height in the file's header (read by Pillow, which decodes no
  pixels) must give at most ``max_pixels`` pixels per channel before OpenCV decodes it, so a small
  file that claims 60000x60000 never allocates gigabytes. Default 8192x8192 (HPA fields are
  2048 or 3072 square); set ``HPA_MAX_PIXELS`` or ``runtime infer --max-pixels``. Any error of the
  header reader or the decoder becomes a DataError naming the file: that sample's errors.csv row.
- Symlinks: nothing is read outside the image folder. A channel file (or a manifest sub-folder)
  that is a symlink is followed only when its real path lies inside the folder's real path: a
  dataset de-duplicated with links inside its folder still reads, and a link that leads out is
  that sample's error (never a silent read of, say, another user's files).
"""

import io
import logging
import os
import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import JpegImagePlugin, PngImagePlugin, TiffImagePlugin

from runtime.classes import CHANNELS
from runtime.decoders import imdecode, resolve_decoder
from runtime.errors import DataError, first_line
from runtime.ids import check_id, is_safe_id

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MAX_PIXELS_ENV = "HPA_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 8192 * 8192

# Header parsers by leading bytes. The plugin classes are used directly, not through
# PIL.Image.open, whose own decompression-bomb check (fixed at 89/179 megapixels, process-wide)
# would override the configurable limit here.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEADERS = [(PNG_SIGNATURE, PngImagePlugin.PngImageFile), (b"\xff\xd8\xff", JpegImagePlugin.JpegImageFile),
            *((prefix, TiffImagePlugin.TiffImageFile) for prefix in TiffImagePlugin.PREFIXES)]


def max_pixels_setting(value=None):
    """The decoded-size limit: ``value`` when given, else ``HPA_MAX_PIXELS``, else the default."""
    if value is None:
        text = os.environ.get(MAX_PIXELS_ENV, "")
        if not text:
            return DEFAULT_MAX_PIXELS
        try:
            value = int(text)
        except ValueError:
            raise DataError(MAX_PIXELS_ENV, f"must be a whole number of pixels, got {text!r}") from None
    if value < 1:
        raise DataError(MAX_PIXELS_ENV, f"must be at least 1, got {value}")
    return value


def header_size(data, path):
    """(width, height) from an encoded image's header, decoding no pixels."""
    head = bytes(data[:8])
    if head == PNG_SIGNATURE and bytes(data[12:16]) == b"IHDR":
        # The PNG spec puts IHDR first, width and height at fixed offsets: read directly, as
        # Pillow would, at 1 us instead of ~36 us a file (a sixth of decoding a 128-px demo PNG).
        return struct.unpack(">II", bytes(data[16:24]))
    opener = next((cls for magic, cls in _HEADERS if head.startswith(magic)), None)
    if opener is None:
        raise DataError(path, "unreadable image (not a PNG, JPEG or TIFF file)")
    try:
        with opener(io.BytesIO(data)) as image:
            return image.size
    except Exception as err:  # Pillow raises many types for a damaged header; all mean this file
        raise DataError(path, f"unreadable or truncated image header ({first_line(err)})") from None


def decode_channel(path, max_pixels=DEFAULT_MAX_PIXELS, decoder="auto"):
    """Decode one grayscale channel file to a 2-D uint8 array (``decoder``: runtime.decoders)."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(path, "missing file") from None
    except OSError as err:
        raise DataError(path, f"cannot read ({err.strerror})") from None
    if data.size == 0:
        raise DataError(path, "empty file (0 bytes)")
    width, height = header_size(data, path)
    if width * height > max_pixels:
        raise DataError(path, f"{width}x{height} pixels is over the decoded-size limit of {max_pixels} "
                              f"per channel (raise it with {MAX_PIXELS_ENV} or --max-pixels)")
    img = imdecode(data, path, decoder)
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
        if ext.lower() in EXTENSIONS and "_" in stem and _is_file(entry):
            sample_id, channel = stem.rsplit("_", 1)
            if channel in CHANNELS:
                yield sample_id, channel, entry.name


def _is_file(entry):
    try:
        return entry.is_file()
    except OSError:  # a symlink loop: listed, so reading it reports the error for its sample
        return True


def _id_problem(sample_id):
    try:
        check_id(sample_id)
    except DataError as err:
        return err.reason


class ImageFolder:
    """Where a dataset's images live: one folder, or sub-folders listed in a split manifest.

    ``scripts/split_dataset.py`` writes ``manifest.csv`` (``Id,dir``) at the top of a split
    folder; when that file exists, each Id is read from its sub-folder. ``max_pixels``: the
    decoded-size limit per channel (default ``max_pixels_setting()``). ``decoder``: ``auto``,
    ``wuffs`` or ``opencv`` (runtime.decoders).
    """

    MANIFEST = "manifest.csv"

    def __init__(self, root, max_pixels=None, decoder="auto"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "image folder not found")
        self.max_pixels = max_pixels_setting(max_pixels)
        self.decoder = resolve_decoder(decoder)
        self._real_root = os.path.realpath(self.root)
        self._subdir = {}
        manifest = self.root / self.MANIFEST
        if manifest.exists():
            from runtime.labels import read_manifest

            self._subdir = read_manifest(manifest)

    def folder_of(self, sample_id):
        return self.root / self._subdir.get(sample_id, "")

    def channel_path(self, sample_id, channel):
        check_id(sample_id, self.root)
        return find_channel_file(self.folder_of(sample_id), sample_id, channel)

    def check_inside(self, path):
        """DataError when ``path`` (ROOT/[sub-folder/]file) is a symlink, or in a sub-folder that
        is one, whose real path leads out of the image folder. Only links are resolved (one lstat
        for a plain file), since nothing below the root but they can lead out."""
        if os.path.islink(path) or (path.parent != self.root and os.path.islink(path.parent)):
            real = os.path.realpath(path)
            if os.path.commonpath([real, self._real_root]) != self._real_root:
                raise DataError(path, f"a symlink to {real}, outside the image folder {self.root} (not read)")
        return path

    def _decode(self, path):
        return decode_channel(self.check_inside(path), self.max_pixels, self.decoder)

    def read(self, sample_id):
        """The sample as uint8 (H, W, 4) in CHANNELS order."""
        planes = [self._decode(self.channel_path(sample_id, ch)) for ch in CHANNELS]
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

    def listing(self):
        """(Ids, problems): every Id with all four channel files and a safe name, sorted; and
        {Id: reason} for every other Id the scan finds (channel files missing, or a name that is
        not a safe Id), sorted. A run lists each problem in its errors.csv (the Id's files are
        tried, and fail with that reason), so no sample ever vanishes without a word."""
        ids, problems = [], {}
        for sample_id, chans in sorted(self._scan().items()):
            if not is_safe_id(sample_id):
                problems[sample_id] = _id_problem(sample_id)
            elif len(chans) < len(CHANNELS):
                problems[sample_id] = "missing " + ", ".join(c for c in CHANNELS if c not in chans)
            else:
                ids.append(sample_id)
        return ids, problems

    def ids(self):
        """Every Id with all four channel files present and a safe name, sorted."""
        return self.listing()[0]
