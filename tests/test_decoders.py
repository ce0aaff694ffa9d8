"""Wuffs and OpenCV give the reader the same channels: bit-exact on every kind of PNG the reader
accepts (written here byte by byte: every filter type, Adam7, odd sizes, many IDAT chunks,
palette, alpha, 16 bits) and on real HPA PNGs, and the same one-line outcome on damaged files
(the reliability corpus's bad bytes, every truncation and single-bit flip of small PNGs).
The Wuffs tests skip when pywuffs is not installed."""

import logging
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import decoders
from runtime.decoders import resolve_decoder, wuffs_available, wuffs_format
from runtime.errors import DataError
from runtime.reader import ImageFolder, decode_channel
from tests.test_fuzz import BAD_BYTES, GOOD

needs_wuffs = pytest.mark.skipif(not wuffs_available(), reason="pywuffs is not installed (the fast-png extra)")
CHANNELS = ("red", "green", "blue", "yellow")


# ------------------------------------------------------------------ PNG bytes, written by hand

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PLANES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _rows(img, depth):
    """(h, w, c) integers -> each row's packed bytes (PNG order: big-endian, bits MSB first)."""
    if depth == 16:
        return [row.astype(">u2").tobytes() for row in img]
    if depth == 8:
        return [row.astype(np.uint8).tobytes() for row in img]
    bits = np.unpackbits(img[..., 0].astype(np.uint8)[..., None], axis=-1)[..., 8 - depth:]
    return [np.packbits(row.reshape(-1)).tobytes() for row in bits]


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def _filtered(rows, bpp, filters):
    """Each row as filter byte + filtered bytes, the filter types taken from ``filters`` in turn."""
    out, prev = bytearray(), None
    for i, row in enumerate(rows):
        kind = filters[i % len(filters)]
        up = prev or bytes(len(row))
        out.append(kind)
        for x, value in enumerate(row):
            a = row[x - bpp] if x >= bpp else 0
            c = up[x - bpp] if x >= bpp else 0
            out.append((value - (0, a, up[x], (a + up[x]) // 2, _paeth(a, up[x], c))[kind]) & 255)
        prev = row
    return bytes(out)


def png_bytes(img, depth=8, colour=0, interlace=False, filters=(0,), idats=1, palette=None, trns=None,
              extra=(), after=()):
    """A PNG of ``img`` ((h, w) or (h, w, planes) integers, palette indices for colour type 3)."""
    img = np.asarray(img)
    img = img[..., None] if img.ndim == 2 else img
    h, w, _ = img.shape
    bpp = max(1, PLANES[colour] * depth // 8)
    if interlace:
        passes = (img[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7)
        raw = b"".join(_filtered(_rows(p, depth), bpp, filters) for p in passes if p.size)
    else:
        raw = _filtered(_rows(img, depth), bpp, filters)
    packed = zlib.compress(raw, 9)
    step = max(1, -(-len(packed) // idats))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, int(interlace)))
    out += b"".join(chunk(kind, data) for kind, data in extra)
    if palette is not None:
        out += chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes())
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += b"".join(chunk(b"IDAT", packed[i:i + step]) for i in range(0, len(packed), step))
    return out + b"".join(chunk(kind, data) for kind, data in after) + chunk(b"IEND", b"")


def _kind(rng, colour, depth, h=7, w=11, trns=False, **options):
    """PNG bytes of random pixels of one colour type and depth (with a tRNS chunk if asked)."""
    planes = PLANES[colour]
    img = rng.integers(0, 1 << depth, (h, w, planes))
    palette = rng.integers(0, 256, (1 << depth, 3)) if colour == 3 else None
    key = None
    if trns:
        key = {0: lambda: struct.pack(">H", int(img[0, 0, 0])), 2: lambda: struct.pack(">HHH", *map(int, img[0, 0])),
               3: lambda: bytes(rng.integers(0, 256, max(1, (1 << depth) // 2)).astype(np.uint8))}[colour]()
    return png_bytes(img, depth, colour, palette=palette, trns=key, **options)


ALL_FILTERS = dict(filters=(0, 1, 2, 3, 4), idats=3)
# name: (PNG bytes given a random generator, whether Wuffs decodes it (else OpenCV, by the table))
CASES = {
    **{f"gray{d}{'-adam7' if il else ''}": (lambda r, d=d, il=il: _kind(r, 0, d, interlace=il, **ALL_FILTERS), True)
       for d in (1, 2, 4, 8) for il in (False, True)},
    "gray16": (lambda r: _kind(r, 0, 16, **ALL_FILTERS), True),
    "gray16-adam7": (lambda r: _kind(r, 0, 16, interlace=True, **ALL_FILTERS), False),
    "gray8-trns": (lambda r: _kind(r, 0, 8, trns=True), False),
    "gray16-trns": (lambda r: _kind(r, 0, 16, trns=True), False),
    **{f"palette{d}{'-adam7' if il else ''}{'-trns' if t else ''}":
       (lambda r, d=d, il=il, t=t: _kind(r, 3, d, interlace=il, trns=t, **ALL_FILTERS), True)
       for d in (1, 2, 4, 8) for il in (False, True) for t in (False, True)},
    **{f"{name}{d}{'-adam7' if il else ''}":
       (lambda r, c=c, d=d, il=il: _kind(r, c, d, interlace=il, **ALL_FILTERS), True)
       for name, c in (("rgb", 2), ("gray-alpha", 4), ("rgba", 6)) for d in (8, 16) for il in (False, True)},
    "rgb8-trns": (lambda r: _kind(r, 2, 8, trns=True), False),
    **{f"gray8-{h}x{w}{'-adam7' if il else ''}":
       (lambda r, h=h, w=w, il=il: _kind(r, 0, 8, h, w, interlace=il, **ALL_FILTERS), True)
       for h, w in ((1, 1), (3, 5), (7, 1023), (1023, 7), (2, 9)) for il in (False, True)},
    **{f"gray16-{h}x{w}": (lambda r, h=h, w=w: _kind(r, 0, 16, h, w, **ALL_FILTERS), True)
       for h, w in ((1, 1), (3, 5), (7, 1023))},
    **{f"gray8-filter{f}": (lambda r, f=f: _kind(r, 0, 8, 9, 13, filters=(f,)), True) for f in range(5)},
    **{f"rgb8-filter{f}": (lambda r, f=f: _kind(r, 2, 8, 9, 13, filters=(f,)), True) for f in range(5)},
    "gray8-200-idats": (lambda r: _kind(r, 0, 8, 40, 40, filters=(1, 4), idats=200), True),
    "gray8-metadata": (lambda r: _kind(r, 0, 8, extra=[(b"gAMA", struct.pack(">I", 45455)), (b"sBIT", b"\x05"),
                                                        (b"pHYs", bytes(9)), (b"tEXt", b"Comment\0hi")],
                                       after=[(b"tIME", bytes(7))]), True),
    "gray8-private-chunk": (lambda r: _kind(r, 0, 8, extra=[(b"prVt", b"abc")]), False),
    "gray8-apng": (lambda r: _kind(r, 0, 8, extra=[(b"acTL", struct.pack(">II", 1, 0))]), False),
}


def _outcome(path, decoder):
    """decode_channel's result, or its DataError's one line (the errors.csv row)."""
    try:
        return decode_channel(path, decoder=decoder)
    except DataError as err:
        return str(err)


def _same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@needs_wuffs
@pytest.mark.parametrize("name", list(CASES))
def test_wuffs_gives_opencvs_channel_on_every_kind_of_png(name, tmp_path, caplog):
    make, by_wuffs = CASES[name]
    data = make(np.random.default_rng(sum(map(ord, name))))
    path = tmp_path / "x_red.png"
    path.write_bytes(data)
    plan = wuffs_format(np.frombuffer(data, np.uint8))
    assert (plan is not None) == by_wuffs  # the table says who decodes it...
    if by_wuffs:  # ...and Wuffs really does, without falling back
        assert decoders.wuffs_decode(data, *plan) is not None
    with caplog.at_level(logging.WARNING):
        opencv = decode_channel(path, decoder="opencv")
        warned_opencv = "colour image" in caplog.text
        caplog.clear()
        wuffs = decode_channel(path, decoder="wuffs")
        warned_wuffs = "colour image" in caplog.text
    assert wuffs.dtype == np.uint8 and wuffs.ndim == 2
    assert _same(wuffs, opencv)
    assert warned_wuffs == warned_opencv


@needs_wuffs
def test_16_bit_gray_is_rounded_not_cut_to_its_high_byte(tmp_path):
    img = np.array([[0, 127, 128, 200, 65280, 65535, 32895, 257 * 100 + 128]], np.uint16)
    (tmp_path / "x.png").write_bytes(png_bytes(img, 16))
    assert wuffs_format(np.fromfile(tmp_path / "x.png", np.uint8)) == ("Y_16LE", None)
    out = decode_channel(tmp_path / "x.png", decoder="wuffs")
    assert out.tolist() == np.round(img * (255 / 65535)).astype(np.uint8).tolist()
    assert out.tolist() != (img >> 8).tolist()


@needs_wuffs
def test_8_bit_gray_decodes_to_its_pixels(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (33, 17), dtype=np.uint8)
    for il in (False, True):
        (tmp_path / "x.png").write_bytes(png_bytes(img, interlace=il, filters=(0, 1, 2, 3, 4), idats=5))
        assert np.array_equal(decode_channel(tmp_path / "x.png", decoder="wuffs"), img)


def _real_folder():
    """shared/hpa-real/single_channel beside this checkout or beside a folder above it."""
    for parent in Path(__file__).resolve().parents[1:]:
        folder = parent / "shared" / "hpa-real" / "single_channel"
        if folder.is_dir():
            return folder
    return None


@needs_wuffs
def test_wuffs_gives_opencvs_pixels_on_real_hpa_pngs():
    folder = _real_folder()
    if folder is None:
        pytest.skip("shared/hpa-real/single_channel is not beside this checkout")
    files = sorted(folder.glob("*.png"))
    assert files
    for path in files:
        assert wuffs_format(np.fromfile(path, np.uint8)) is not None, path
        assert _same(decode_channel(path, decoder="wuffs"), decode_channel(path, decoder="opencv")), path


@needs_wuffs
@pytest.mark.parametrize("sample_id", list(BAD_BYTES))
def test_bad_bytes_give_the_same_one_line_error_with_both_decoders(sample_id, tmp_path):
    _, make, reason = BAD_BYTES[sample_id]
    path = tmp_path / f"{sample_id}_red.png"
    path.write_bytes(make(cv2.imencode(".png", GOOD)[1].tobytes()))
    outcomes = [_outcome(path, d) for d in ("opencv", "wuffs")]
    assert isinstance(outcomes[0], str) and outcomes[0] == outcomes[1]
    assert outcomes[1].startswith(f"{path}: ") and reason in outcomes[1] and "\n" not in outcomes[1]


DAMAGED = {
    "gray8": lambda r: _kind(r, 0, 8, 6, 9, filters=(1, 4), idats=2, extra=[(b"tEXt", b"k\0v")],
                             after=[(b"tEXt", b"a\0b")]),
    "palette4-trns": lambda r: _kind(r, 3, 4, 5, 7, trns=True, idats=2),
    "rgba16": lambda r: _kind(r, 6, 16, 3, 4, filters=(2, 3)),
    "gray16": lambda r: _kind(r, 0, 16, 4, 5, interlace=False, idats=2),
}


@needs_wuffs
@pytest.mark.parametrize("name", list(DAMAGED))
def test_every_truncation_and_bit_flip_has_opencvs_outcome(name, tmp_path):
    """Both decoders, same bytes: the same error line or the same pixels, for each of the
    file's truncations after IHDR and single-bit flips (bits 0 and 7 of every byte; a file cut
    inside its signature or IHDR is the header reader's, before either decoder)."""
    good = DAMAGED[name](np.random.default_rng(5))
    damaged = [good[:n] for n in range(33, len(good))]
    damaged += [good[:i] + bytes([good[i] ^ bit]) + good[i + 1:] for i in range(len(good)) for bit in (1, 128)]
    path = tmp_path / "x_red.png"
    differ, by_wuffs = [], 0
    for data in damaged:
        path.write_bytes(data)
        by_wuffs += wuffs_format(np.frombuffer(data, np.uint8)) is not None
        if not _same(_outcome(path, "opencv"), _outcome(path, "wuffs")):
            differ.append(data)
    assert not differ, f"{len(differ)} of {len(damaged)} damaged files decode differently"
    assert by_wuffs > len(damaged) // 10  # flips in pixel data and ancillary chunks do reach Wuffs


# ------------------------------------------------------------------ choosing the decoder


def test_unknown_decoder_is_refused_listing_the_valid_ones():
    with pytest.raises(ValueError, match="auto, wuffs, opencv"):
        resolve_decoder("libpng")


def test_without_pywuffs_auto_uses_opencv_and_says_so_once(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(decoders, "_wuffs_module", [None])
    monkeypatch.setattr(decoders, "_said", set())
    with caplog.at_level(logging.WARNING):
        assert resolve_decoder("auto") == "opencv"
        assert resolve_decoder("auto") == "opencv"
        for i, ch in enumerate(CHANNELS):
            cv2.imwrite(str(tmp_path / f"a1_{ch}.png"), np.full((8, 8), i, np.uint8))
        assert ImageFolder(tmp_path).read("a1")[0, 0].tolist() == [0, 1, 2, 3]
    said = [r for r in caplog.records if "pywuffs is not installed" in r.getMessage()]
    assert len(said) == 1 and "fast-png" in said[0].getMessage()
    with pytest.raises(DataError, match=r"--decoder wuffs: pywuffs is not installed .*fast-png"):
        ImageFolder(tmp_path, decoder="wuffs")


@needs_wuffs
def test_auto_decodes_pngs_with_wuffs_and_jpeg_with_opencv(tmp_path, monkeypatch):
    calls = []
    real = decoders.wuffs_decode
    monkeypatch.setattr(decoders, "wuffs_decode", lambda *a: calls.append(a[1]) or real(*a))
    img = np.random.default_rng(2).integers(0, 256, (16, 16), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a1_red.png"), img)
    cv2.imwrite(str(tmp_path / "a1_green.jpg"), img)
    assert np.array_equal(decode_channel(tmp_path / "a1_red.png"), img)
    decode_channel(tmp_path / "a1_green.jpg")
    assert calls == ["Y"]
    assert ImageFolder(tmp_path).decoder == "wuffs"


def test_cli_refuses_an_unknown_decoder_in_one_line(capsys):
    from runtime.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["infer", "--model", "m", "--images", "i", "--out", "o", "--decoder", "png"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--decoder" in err and "'png'" in err


@needs_wuffs
def test_infer_gives_the_same_files_with_either_decoder(tiny_data, tiny_deploy, tmp_path):
    from runtime.__main__ import main

    outs = {}
    for decoder in ("opencv", "wuffs"):
        out = tmp_path / decoder
        assert main(["infer", "--model", str(tiny_deploy[0]), "--images", str(tiny_data / "test"), "--tta", "1",
                     "--backend", "onnxruntime", "--precision", "fp32", "--decoder", decoder, "--out", str(out)]) == 0
        outs[decoder] = [(out / f).read_bytes() for f in ("submission.csv", "probabilities.csv", "errors.csv")]
    assert outs["opencv"] == outs["wuffs"]


# ------------------------------------------------------------------ decoding on every core


def _folder_with_a_bad_sample(root, count=10, size=24):
    rng = np.random.default_rng(4)
    for k in range(count):
        for ch in CHANNELS:
            cv2.imwrite(str(root / f"s{k:02d}_{ch}.png"), rng.integers(0, 256, (size, size), dtype=np.uint8))
    data = (root / "s03_green.png").read_bytes()
    (root / "s03_green.png").write_bytes(data[: len(data) // 2])
    return root


@pytest.mark.parametrize("decoder", ["opencv", pytest.param("wuffs", marks=needs_wuffs)])
def test_threads_and_processes_give_the_sequential_batches(decoder, tmp_path):
    from runtime.pipeline import decoded_batches
    from runtime.preprocess import Preprocess

    folder = ImageFolder(_folder_with_a_bad_sample(tmp_path), decoder=decoder)
    ids = folder.ids()
    pp = Preprocess(size=16)

    def run(**kw):
        batches = list(decoded_batches(folder, ids, pp, 4, **kw))
        return ([b.ids for b in batches], [b.errors for b in batches], np.concatenate([b.images for b in batches]))

    sequential = run(workers=0)
    assert sequential[1][0] == [("s03", str(tmp_path / "s03_green.png"), "unreadable or truncated image")]
    for kw in ({"workers": 3, "processes": False}, {"workers": 2, "processes": True}):
        got = run(**kw)
        assert got[:2] == sequential[:2] and got[2].tobytes() == sequential[2].tobytes(), kw


def test_auto_takes_processes_for_many_small_images_only(tmp_path, monkeypatch):
    from runtime import pipeline

    folder = ImageFolder(_folder_with_a_bad_sample(tmp_path, count=6), decoder="opencv")
    ids = folder.ids()
    assert pipeline.worker_kind(folder, ids, 4) == "threads"  # too few samples to pay for starting them
    monkeypatch.setattr(pipeline, "PROCESS_MIN_SAMPLES", 4)
    assert pipeline.worker_kind(folder, ids, 4) == "processes"
    assert pipeline.worker_kind(folder, ids, 1) == "threads"
    assert pipeline.worker_kind(folder, ids, 4, processes=False) == "threads"
    monkeypatch.setattr(pipeline, "PROCESS_BELOW_PIXELS", 24 * 24)  # the 24x24 images are now "large"
    assert pipeline.worker_kind(folder, ids, 4) == "threads"


def test_a_pool_holds_opencvs_threads_to_one_and_gives_them_back(tmp_path):
    from runtime.pipeline import decoded_batches
    from runtime.preprocess import Preprocess

    folder = ImageFolder(_folder_with_a_bad_sample(tmp_path, count=5), decoder="opencv")
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        seen = [cv2.getNumThreads() for _ in decoded_batches(folder, folder.ids(), Preprocess(size=16), 1, workers=2)]
        assert seen and set(seen) == {1}
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


def test_ctrl_c_while_processes_decode_is_one_line(tmp_path):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does): the parent's one line,
    exit 130, and no worker traceback."""
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    _folder_with_a_bad_sample(tmp_path, count=5)
    code = f"""
import sys
from runtime.cli import guarded
from runtime.pipeline import decoded_batches
from runtime.preprocess import Preprocess
from runtime.reader import ImageFolder

def main():
    folder = ImageFolder({str(tmp_path)!r}, decoder="opencv")
    for k, _ in enumerate(decoded_batches(folder, folder.ids() * 100000, Preprocess(size=16), 4, 2, processes=True)):
        if k == 0:
            print("decoding", flush=True)
sys.exit(guarded(main, debug=False))
"""
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, start_new_session=True)
    try:
        assert proc.stdout.readline() == b"decoding\n"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert err.decode().splitlines() == ["error: interrupted"]  # a bare guarded call has no --resume to offer


def test_decode_workers_ignore_ctrl_c_from_their_first_instruction(tmp_path):
    """A worker still starting (before the pool's initializer) used to take Python's own SIGINT
    handler from the fork server, so a Ctrl-C then printed its traceback (a rare failure of the test
    above). The pool's context starts the fork server ignoring SIGINT: every worker starts so."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = """
import signal
from runtime.pipeline import _process_context

def report(q):
    q.put(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)

if __name__ == "__main__":
    ctx = _process_context()
    q = ctx.Queue()
    p = ctx.Process(target=report, args=(q,))
    p.start()
    print(q.get(timeout=60), signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    p.join()
"""
    main = tmp_path / "probe.py"  # a file, not -c: the fork server's children import __main__
    main.write_text(code)
    out = subprocess.run([sys.executable, str(main)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.stdout.split() == ["True", "True"], out.stderr  # the worker ignores it; the parent still has it


@needs_wuffs
def test_auto_takes_opencv_for_a_large_decode_pool(caplog):
    # 16 threads decoded real 512-px samples faster with OpenCV than with Wuffs (runtime.decoders)
    from runtime.decoders import WUFFS_MAX_WORKERS

    assert resolve_decoder("auto", WUFFS_MAX_WORKERS) == "wuffs"
    assert resolve_decoder("auto") == "wuffs"  # pool size unknown (training, the viewer)
    assert resolve_decoder("auto", WUFFS_MAX_WORKERS + 1) == "opencv"
    assert resolve_decoder("wuffs", 64) == "wuffs"  # asked for by name: always
