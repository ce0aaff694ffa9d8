"""Decoding of HPA samples: four grayscale files per Id, returned as one uint8 HxWx4 array.

Accepted: ``{Id}_{red,green,blue,yellow}.{png,jpg,jpeg,tif,tiff}``, the extension in any case,
in one folder (or in the sub-folder a split manifest names). 16-bit images are scaled to 8 bits;
an RGB file where grayscale is expected keeps one plane (with a warning); channels of different
sizes are resized to the red channel's size. Anything else raises :class:`DataError` naming the file.

Hostile files:
- Not a file: only a regular file is opened (runtime.regular): a FIFO, socket, device or folder
  named like a channel file is that sample's error (``not a regular file (a FIFO)``), never a hang.
  Any OSError while locating or reading a sample's files (a name too long, a permission, a link
  loop) is that sample's error too, naming the file.
- Byte size: before the body of a file is read, its size from stat must fit what an image of its
  header's width and height can hold (``max_file_bytes``), so a sparse 6 GB file behind a small
  header is refused without reading it; header parsers read at most HEADER_BUDGET bytes. A file
  of at most 16 MiB, which no header can refuse by this rule, is read whole in one call and its
  header checked on those bytes (one system call less a channel).
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

import hashlib
import io
import itertools
import logging
import os
import stat
import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import JpegImagePlugin, PngImagePlugin, TiffImagePlugin

from runtime.classes import CHANNELS
from runtime.decoders import imdecode, resolve_decoder
from runtime.errors import DataError, first_line
from runtime.ids import check_id, is_safe_id
from runtime.regular import NotRegularFile, open_regular_fd

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
            if not text.isascii() or "_" in text:  # int() also reads '1_0' and '٣٠٠'
                raise ValueError(text)
            value = int(text)
        except ValueError:
            raise DataError(MAX_PIXELS_ENV, f"must be a whole number of pixels, got {text!r}") from None
    if value < 1:
        raise DataError(MAX_PIXELS_ENV, f"must be at least 1, got {value}")
    return value


# Bytes a header parser may read: Pillow's JPEG and TIFF parsers seek to the markers or the
# directory they need and read only those, a few kilobytes in a normal file; a header that needs
# more (a TIFF tag claiming gigabytes) is refused rather than read.
HEADER_BUDGET = 4 * 2 ** 20
# The most bytes a channel file may hold for the size its header states: four times the raw
# pixels at 8 bytes a pixel (16-bit RGBA, the widest pixel any accepted file can hold), plus 16 MiB
# for metadata (ICC profiles, EXIF, text chunks). Compressed images are smaller than their raw
# pixels, and even stored (uncompressed) PNG blocks, TIFF strips and quality-100 JPEGs stay well
# inside this; a larger file (a sparse 6 GB file behind a 64x64 header) is refused before its body
# is read.
BYTES_PER_PIXEL_BOUND = 4 * 8
METADATA_ALLOWANCE = 16 * 2 ** 20


def max_file_bytes(width, height):
    """The byte size a channel file whose header says ``width`` x ``height`` may have."""
    return BYTES_PER_PIXEL_BOUND * width * height + METADATA_ALLOWANCE


class _OverBudget(Exception):
    pass


class _HeaderView:
    """A read-only view of an open file for a header parser: it may seek anywhere, but all its
    reads together get at most ``budget`` bytes (more raises _OverBudget)."""

    def __init__(self, handle, budget):
        self._handle, self._left = handle, budget

    def read(self, n=-1):
        if n is None or n < 0 or n > self._left:
            raise _OverBudget()
        data = self._handle.read(n)
        self._left -= len(data)
        return data

    def seek(self, offset, whence=os.SEEK_SET):
        return self._handle.seek(offset, whence)

    def tell(self):
        return self._handle.tell()


def header_size(source, path):
    """(width, height) from an encoded image's header, decoding no pixels. ``source``: the file's
    bytes, or a file descriptor open on it (then at most HEADER_BUDGET bytes are read)."""
    fd = source if isinstance(source, int) else None
    head = os.pread(fd, 24, 0) if fd is not None else bytes(source[:24])
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) == 24:
        # The PNG spec puts IHDR first, width and height at fixed offsets: read directly, as
        # Pillow would, at 1 us instead of ~36 us a file (a sixth of decoding a 128-px demo PNG).
        return struct.unpack(">II", head[16:24])
    opener = next((cls for magic, cls in _HEADERS if head.startswith(magic)), None)
    if opener is None:
        raise DataError(path, "unreadable image (not a PNG, JPEG or TIFF file)")
    handle = os.fdopen(fd, "rb", closefd=False) if fd is not None else io.BytesIO(bytes(source))
    try:
        with handle, opener(_HeaderView(handle, HEADER_BUDGET)) as image:
            return image.size
    except _OverBudget:
        raise DataError(path, f"unreadable image header (needs more than {HEADER_BUDGET} bytes; not read)") from None
    except Exception as err:  # Pillow raises many types for a damaged header; all mean this file
        raise DataError(path, f"unreadable or truncated image header ({first_line(err)})") from None


def _read_all(fd, size):
    """``size`` bytes of ``fd`` from its start (the size from fstat: a file grown since is read no
    further; one that shrank gives fewer bytes)."""
    data = os.pread(fd, size, 0)  # one call for a regular file, unless it shrank
    if len(data) == size or not data:
        return data
    parts, got = [data], len(data)
    while got < size:
        part = os.pread(fd, size - got, got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _read_checked(fd, size, path, max_pixels):
    """The whole file's bytes, returned only after its header's size and its byte size pass; a
    file's body is read only after them, except a file of at most METADATA_ALLOWANCE bytes. Such
    a file passes the byte-size check whatever its header says (``max_file_bytes`` is at least
    that), so it is read in one call and its header checked on the bytes read: the same checks,
    one system call less, and at most 16 MiB held before the decoded-size check refuses it. Bytes,
    not an array: Wuffs takes them as they are and OpenCV through a zero-copy np.frombuffer."""
    if size <= METADATA_ALLOWANCE:
        data = _read_all(fd, size)
        width, height = header_size(data, path)
    else:
        data = None
        width, height = header_size(fd, path)
    if width * height > max_pixels:
        raise DataError(path, f"{width}x{height} pixels is over the decoded-size limit of {max_pixels} "
                              f"per channel (raise it with {MAX_PIXELS_ENV} or --max-pixels)")
    if size > max_file_bytes(width, height):
        raise DataError(path, f"{size} bytes is more than a {width}x{height} image can hold "
                              f"(at most {max_file_bytes(width, height)}); not read")
    return _read_all(fd, size) if data is None else data


def decode_channel(path, max_pixels=DEFAULT_MAX_PIXELS, decoder="auto", lstat_result=None):
    """Decode one grayscale channel file to a 2-D uint8 array (``decoder``: runtime.decoders). Nothing but a regular file is
    opened (runtime.regular), and nothing of it over 16 MiB is read into memory beyond its header
    before its header's width and height and its byte size (from stat) are checked; no pixel is
    decoded before. ``lstat_result``: the caller's fresh ``os.lstat(path)`` (runtime.regular)."""
    try:
        fd, st = open_regular_fd(path, lstat_result)
    except FileNotFoundError:
        raise DataError(path, "missing file") from None
    except NotRegularFile as err:
        raise DataError(path, f"cannot read: {err.reason}") from None
    except OSError as err:
        raise DataError(path, f"cannot read ({err.strerror})") from None
    try:
        if st.st_size == 0:
            raise DataError(path, "empty file (0 bytes)")
        data = _read_checked(fd, st.st_size, path, max_pixels)
    except OSError as err:
        raise DataError(path, f"cannot read ({err.strerror})") from None
    finally:
        os.close(fd)
    if not data:
        raise DataError(path, "empty file (0 bytes)")
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


def _spellings(ext):
    """Every upper/lower-case spelling of ``ext``: lower case first, then upper case, then the
    mixed ones in sorted order (a fixed order, so the choice among several files is too)."""
    mixed = {"".join(chars) for chars in itertools.product(*({c.lower(), c.upper()} for c in ext))}
    first = [ext.lower(), ext.upper()]
    return first + sorted(mixed - set(first))


# Extensions are accepted in any case (``x_red.PNG``), by the folder scan and by the lookup alike.
# When several files of one channel exist, the lookup takes the first in this order: EXTENSIONS'
# order (PNG first), and for each, lower case before upper case before mixed case.
SUFFIXES = tuple(spelling for ext in EXTENSIONS for spelling in _spellings(ext))


def find_channel_file(folder, sample_id, channel):
    """The path of one channel file: the first of SUFFIXES that exists (an lstat each: a dangling
    link or a FIFO is found here and refused by the reader with its reason); the ``.png`` path when
    none does. A name the OS refuses (too long, say) raises DataError naming it."""
    return Path(_lookup(os.path.join(folder, f"{sample_id}_{channel}"))[0])


def _lookup(stem):
    """(path, its os.lstat result) for find_channel_file, as strings (no Path on the reader's
    path); (the ``.png`` path, None) when no spelling exists."""
    for suffix in SUFFIXES:
        try:
            return stem + suffix, os.lstat(stem + suffix)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as err:
            raise DataError(stem + suffix, f"cannot read ({err.strerror})") from None
    return stem + ".png", None


def _channel_name(name):
    """(Id, channel) when ``name`` is a channel file's name (extension in any case), else None."""
    stem, ext = os.path.splitext(name)
    if ext.lower() in EXTENSIONS and "_" in stem:
        sample_id, channel = stem.rsplit("_", 1)
        if channel in CHANNELS:
            return sample_id, channel
    return None


def channel_files(folder):
    """(Id, channel, file name) for every channel image directly in ``folder`` that is a regular
    file (or a link to one)."""
    for entry in os.scandir(folder):
        found = _channel_name(entry.name)
        if found and _is_file(entry):
            yield *found, entry.name


def _is_file(entry):
    try:
        return entry.is_file()
    except OSError:  # a symlink loop: listed, so reading it reports the error for its sample
        return True


def _shown(sample_id):
    """``sample_id`` with the bytes of a non-UTF-8 file name (which os.scandir gives as surrogate
    escapes, and which no UTF-8 file can hold) as ``\\xff`` escapes: such an Id is never safe, and
    errors.csv must still be able to list it."""
    return os.fsencode(sample_id).decode("utf-8", "backslashreplace")


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
        self._root_text = str(self.root)
        self._subdir = {}
        manifest = self.root / self.MANIFEST
        if manifest.exists():
            from runtime.labels import read_manifest

            self._subdir = read_manifest(manifest)

    def folder_of(self, sample_id):
        return Path(self._folder_text(sample_id))

    def _folder_text(self, sample_id):
        """folder_of as a string (the reader's path: no Path built for each sample)."""
        sub = self._subdir.get(sample_id) if self._subdir else None
        return os.path.join(self._root_text, sub) if sub else self._root_text

    def channel_path(self, sample_id, channel):
        check_id(sample_id, self.root)
        return find_channel_file(self.folder_of(sample_id), sample_id, channel)

    def check_inside(self, path, lstat_result=None):
        """DataError when ``path`` (ROOT/[sub-folder/]file) is a symlink, or in a sub-folder that
        is one, whose real path leads out of the image folder. Only links are resolved (one lstat
        for a plain file, none when ``lstat_result``, the lookup's fresh ``os.lstat(path)``, is
        given), since nothing below the root but they can lead out."""
        parent = os.path.dirname(path)  # a string: no Path built for each of a sample's four files
        is_link = os.path.islink(path) if lstat_result is None else stat.S_ISLNK(lstat_result.st_mode)
        if is_link or (parent != self._root_text and os.path.islink(parent)):
            real = os.path.realpath(path)
            if os.path.commonpath([real, self._real_root]) != self._real_root:
                raise DataError(path, f"a symlink to {real}, outside the image folder {self.root} (not read)")
        return path

    def _decode(self, path, lstat_result=None):
        return decode_channel(self.check_inside(path, lstat_result), self.max_pixels, self.decoder, lstat_result)

    def read(self, sample_id):
        """The sample as uint8 (H, W, 4) in CHANNELS order. Every failure, an OSError included
        (a name too long, a permission, a link loop), is a DataError naming the file: that
        sample's error, never the run's."""
        return np.stack(self.read_planes(sample_id), axis=-1)

    def read_planes(self, sample_id):
        """The sample's four channels as 2-D uint8 arrays of the red channel's size, in CHANNELS
        order (``read`` without interleaving them: the inference pipeline resizes each plane
        straight into its batch). Failures as ``read``."""
        paths, planes = [], []
        try:
            check_id(sample_id, self.root)
            folder = self._folder_text(sample_id)
            for ch in CHANNELS:
                path, lstat_result = _lookup(os.path.join(folder, f"{sample_id}_{ch}"))
                paths.append(path)
                # A missing file (no lstat) is checked and refused as before: "missing file".
                planes.append(self._decode(path, lstat_result))
        except OSError as err:
            raise DataError(err.filename or (paths[-1] if paths else self.folder_of(sample_id)),
                            f"cannot read ({err.strerror or first_line(err)})") from None
        shape = planes[0].shape
        for i, plane in enumerate(planes[1:], start=1):
            if plane.shape != shape:
                log.warning("%s: size %s differs from red's %s; resized", paths[i], plane.shape, shape)
                planes[i] = cv2.resize(plane, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        return planes

    def fingerprint(self):
        """sha256 of what the folder holds: every channel file's path below the root, byte size and
        modification time (nanoseconds), sorted. Two folders with the same Ids but other images
        differ here, and so does a folder whose images were replaced since; a copy made with its
        times kept (``cp -p``, ``rsync -a``) or the same folder mounted elsewhere does not. Costs one
        stat per file, no read (about a second per 100,000 files on a local disk)."""
        h = hashlib.sha256()
        rows = []
        for folder in sorted({self.root} | {self.root / d for d in set(self._subdir.values())}):
            if not folder.is_dir():
                continue
            rel = os.path.relpath(folder, self.root)
            for entry in os.scandir(folder):
                if _channel_name(entry.name):
                    try:
                        st = entry.stat()
                        rows.append((rel, entry.name, st.st_size, st.st_mtime_ns))
                    except OSError:  # a dangling link or a loop: its sample's error says so
                        rows.append((rel, entry.name, -1, -1))
        for row in sorted(rows):
            h.update(os.fsencode("\0".join(map(str, row))) + b"\n")
        return h.hexdigest()

    def _scan(self):
        seen = {}
        folders = {self.root} | {self.root / d for d in set(self._subdir.values())}
        for folder in folders:
            if folder.is_dir():
                # Every entry with a channel file's name counts, whatever it is (a FIFO, a folder, a
                # dangling link), as find_channel_file's lookup finds it: the sample is then tried
                # and its errors.csv row says what the entry is, rather than "missing".
                for entry in os.scandir(folder):
                    found = _channel_name(entry.name)
                    if found:
                        seen.setdefault(found[0], set()).add(found[1])
        return seen

    def listing(self):
        """(Ids, problems): every Id with all four channel files and a safe name, sorted; and
        {Id: reason} for every other Id the scan finds (channel files missing, or a name that is
        not a safe Id), sorted. A run lists each problem in its errors.csv (the Id's files are
        tried, and fail with that reason), so no sample ever vanishes without a word."""
        ids, problems = [], {}
        for sample_id, chans in sorted(self._scan().items()):
            shown = _shown(sample_id)
            if shown != sample_id:
                problems[shown] = "file name is not UTF-8 (its bytes shown as \\x escapes); not a safe Id"
            elif not is_safe_id(sample_id):
                problems[sample_id] = _id_problem(sample_id)
            elif len(chans) < len(CHANNELS):
                problems[sample_id] = "missing " + ", ".join(c for c in CHANNELS if c not in chans)
            else:
                ids.append(sample_id)
        return ids, problems

    def ids(self):
        """Every Id with all four channel files present and a safe name, sorted."""
        return self.listing()[0]
