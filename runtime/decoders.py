"""Channel decoders: Wuffs for the PNGs where its pixels equal OpenCV's, OpenCV for everything else.

``imdecode(data, path, decoder)`` returns what ``cv2.imdecode(data, cv2.IMREAD_UNCHANGED)``
returns for the same bytes (an array, or None for a file OpenCV cannot read), so the reader's
steps after it (one plane of a colour file, 16 to 8 bits) are the same for both decoders.
Wuffs (PyPI ``pywuffs``, the ``fast-png`` extra) decodes a 512-px HPA PNG in about two thirds
of OpenCV's time (docs/benchmarks.md; built for the CPU's AVX2 as the Makefile does, it skips the
CPU probing pywuffs otherwise repeats on every call) and releases the GIL; a runtime-only install
without it decodes with OpenCV.

``decoder``: ``auto`` (Wuffs when ``pywuffs`` imports, else OpenCV, said once in a warning),
``wuffs`` (refused in one line when ``pywuffs`` is missing) or ``opencv``.

Which PNGs Wuffs decodes, read from the file's chunks before decoding (:func:`wuffs_format`):

| PNG colour type | bit depth | Wuffs output | what OpenCV gives for it |
| --- | --- | --- | --- |
| gray | 1, 2, 4, 8 (also Adam7) | Y | 2-D uint8 |
| gray | 16, not interlaced | Y_16LE | 2-D uint16 |
| palette | 1-8 | BGR, or BGRA without premultiplying when it has tRNS | 3 or 4 planes |
| RGB | 8 / 16 | BGR / BGRA 16-bit, alpha dropped | 3 planes |
| gray+alpha, RGBA | 8 / 16 | BGRA / BGRA 16-bit, not premultiplied | 4 planes |

OpenCV decodes the rest: JPEG and TIFF; gray or RGB with a tRNS chunk (Wuffs applies the
transparent colour; OpenCV ignores it in gray and adds an alpha plane to RGB); 16-bit interlaced
gray (Wuffs refuses Y_16LE there); a file with an APNG or any other chunk outside the PNG spec's
still-image set (``_BEFORE_IDAT``, ``_AFTER_IDAT``); and every file whose chunks do not run complete from IHDR
to IEND, IDATs together, each type four ASCII letters. That last rule is where the two differ on
damaged files: libpng refuses a missing IEND or a chunk type that is no word, Wuffs (which stops
reading at the last IDAT) would not, so such a file goes to OpenCV and keeps OpenCV's outcome.
Wuffs checks the CRC-32 of every chunk and the zlib Adler-32 here (pywuffs ignores both unless
told), as libpng does. When Wuffs reports any error, OpenCV decodes the same bytes, so a bad
file fails with exactly OpenCV's outcome (the reader's ``unreadable or truncated image`` line)
and a file only Wuffs refuses still reads.
"""

import logging
import struct
import threading

import cv2
import numpy as np

from runtime.errors import DataError, first_line

log = logging.getLogger(__name__)

DECODERS = ("auto", "wuffs", "opencv")
DECODER_HELP = ("PNG decoder: wuffs (faster per core; the fast-png extra), opencv, or auto (wuffs when installed, "
                "opencv with more than 8 decode workers, where it scales further); "
                "JPEG, TIFF and the PNG kinds Wuffs does not decode exactly always use OpenCV")
INSTALL_HINT = "pip install 'hpa-toolkit[fast-png]'"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Chunks neither decoder turns into pixels (metadata), besides PLTE and tRNS which
# wuffs_format handles itself: the still-image chunks of the PNG spec. Anything else (APNG's
# acTL/fcTL/fdAT, private chunks, a second IHDR) sends the file to OpenCV.
_METADATA = {b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs", b"bKGD", b"hIST", b"sPLT",
             b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf"}
_BEFORE_IDAT = _METADATA | {b"PLTE", b"tRNS"}
_AFTER_IDAT = {b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf"}
_VALID_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def wuffs_format(data):
    """The Wuffs pixel format (a name of ``pywuffs.PixelFormat``) that gives OpenCV's pixels for
    this PNG, and how many planes of it to keep (None: all), read from the chunk layout; None when
    OpenCV decodes it (the module's table)."""
    n = len(data)
    if n < 45 or bytes(data[:8]) != PNG_SIGNATURE or bytes(data[8:16]) != b"\x00\x00\x00\x0dIHDR":
        return None
    _, _, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if depth not in _VALID_DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        return None
    pos, idat, after_idat, trns, plte = 33, False, False, False, False
    while True:
        if pos + 12 > n:
            return None
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > n or not kind.isalpha():
            return None
        if kind == b"IDAT":
            if after_idat:
                return None
            idat = True
        elif kind == b"IEND":
            if not idat or length:
                return None
            break
        elif idat:
            after_idat = True
            if kind not in _AFTER_IDAT:
                return None
        elif kind not in _BEFORE_IDAT or (kind == b"tRNS" and (colour != 3 or not plte)) \
                or (kind == b"PLTE" and (colour != 3 or plte or trns)):
            return None
        else:
            trns |= kind == b"tRNS"
            plte |= kind == b"PLTE"
        pos = end
    if colour == 0:
        return ("Y", None) if depth <= 8 else (None if interlace else ("Y_16LE", None))
    if colour == 3:
        return ("BGRA_NONPREMUL", None) if trns else ("BGR", None) if plte else None
    wide = "BGRA_NONPREMUL_4X16LE" if depth == 16 else "BGRA_NONPREMUL"
    if colour == 2:
        return ("BGR", None) if depth == 8 else (wide, 3)
    return wide, None


def wuffs_available():
    """Whether pywuffs imports here (looked up once)."""
    return _wuffs() is not None


_wuffs_module = []


def _wuffs():
    if not _wuffs_module:
        try:
            import pywuffs
            from pywuffs import aux
        except ImportError:
            _wuffs_module.append(None)
        else:
            _wuffs_module.append((pywuffs, aux))
    return _wuffs_module[0]


_said = set()
_said_lock = threading.Lock()


def _say_once(key, level, message, *args):
    if key in _said:  # said before: no lock taken (imdecode comes here for every channel file)
        return
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    log.log(level, message, *args)


# *Decision*: ``auto`` takes OpenCV when more than this many decode workers run. Wuffs decodes a
# real 512-px HPA channel about 1.6x faster on one thread and keeps ahead on two, but on a 16-core
# Xeon 16 threads decoded 718 samples/s with Wuffs against 850 with OpenCV (Wuffs 5.6x its one
# thread, OpenCV 9.0x; docs/benchmarks.md). The crossover between 2 and 16 was not measured: 8 is
# the middle of that range.
WUFFS_MAX_WORKERS = 8


def resolve_decoder(name="auto", workers=None):
    """``auto``, ``wuffs`` or ``opencv`` -> the decoder that runs here, ``wuffs`` or ``opencv``.
    ``auto`` without pywuffs says once that OpenCV decodes; ``wuffs`` without it is refused.
    ``workers``: the decode pool's size, when known; ``auto`` takes OpenCV above WUFFS_MAX_WORKERS."""
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; valid: {', '.join(DECODERS)}")
    if name == "opencv":
        return "opencv"
    if name == "auto" and workers is not None and workers > WUFFS_MAX_WORKERS:
        _say_once("many", logging.INFO, "%d decode workers: images decode with OpenCV, which scales further "
                  "across cores than Wuffs (--decoder wuffs to choose it)", workers)
        return "opencv"
    if wuffs_available():
        _say_once("wuffs", logging.INFO, "PNG channels decode with Wuffs (pywuffs), others with OpenCV")
        return "wuffs"
    if name == "wuffs":
        raise DataError("--decoder wuffs", f"pywuffs is not installed ({INSTALL_HINT})")
    _say_once("opencv", logging.WARNING, "pywuffs is not installed: images decode with OpenCV "
              "(%s decodes PNGs about 1.5x faster)", INSTALL_HINT)
    return "opencv"


def opencv_decode(data, path):
    """cv2.imdecode, IMREAD_UNCHANGED; its exception is a DataError naming the file."""
    try:
        return cv2.imdecode(data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8),
                            cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise DataError(path, f"cannot decode ({err.err or first_line(err)})") from None


_local = threading.local()  # a pywuffs ImageDecoder is not thread-safe: one per thread and format


def wuffs_decoder(fmt):
    """This thread's pywuffs ImageDecoder for the pixel format ``fmt`` (made on first use, then
    kept: its config is built once, and a decoder is not thread-safe)."""
    decoders = getattr(_local, "decoders", None)
    if decoders is None:
        decoders = _local.decoders = {}
    if fmt not in decoders:
        pywuffs, aux = _wuffs()
        config = aux.ImageDecoderConfig()
        config.enabled_decoders = [pywuffs.ImageDecoderType.PNG]
        config.pixel_format = getattr(pywuffs.PixelFormat, fmt)
        config.quirks = {pywuffs.ImageDecoderQuirks.IGNORE_CHECKSUM: 0}  # check CRC-32 and Adler-32
        decoders[fmt] = aux.ImageDecoder(config)
    return decoders[fmt]


def wuffs_decode(blob, fmt, planes=None):
    """Decode PNG bytes with Wuffs into ``fmt`` (a wuffs_format answer); None on any Wuffs error."""
    result = wuffs_decoder(fmt).decode(blob)
    if result.error_message:
        return None
    pixels = result.pixbuf
    if fmt.endswith("16LE"):
        pixels = pixels.view("<u2")
    if pixels.shape[2] == 1:
        return pixels[:, :, 0]
    return np.ascontiguousarray(pixels[:, :, :planes]) if planes else pixels


def imdecode(data, path, decoder="auto"):
    """One channel file's bytes (uint8 array or bytes) -> what cv2.imdecode(IMREAD_UNCHANGED)
    gives for them, decoded by ``decoder`` (auto, wuffs, opencv) where the module's table
    allows. A DataError (naming ``path``) for an exception of OpenCV; None for a file it refuses."""
    if decoder != "opencv" and resolve_decoder(decoder) == "wuffs":
        plan = wuffs_format(data)
        if plan is not None:
            blob = data if isinstance(data, bytes) else bytes(data)  # the reader's bytes: no copy
            img = wuffs_decode(blob, *plan)
            if img is not None:
                return img
            log.debug("%s: Wuffs refused it; decoding with OpenCV", path)
    return opencv_decode(data, path)
