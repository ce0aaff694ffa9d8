"""runtime.pipeline: batches in order, decoded ahead of the caller on a background thread, and the
thread gone when the caller stops or fails."""

import threading
import time

import cv2
import numpy as np
import pytest

from runtime.classes import CHANNELS
from runtime.pipeline import decoded_batches
from runtime.preprocess import Preprocess, image_chw
from runtime.reader import ImageFolder


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(12):
        for ch in CHANNELS:
            cv2.imwrite(str(tmp_path / f"s{k:02d}_{ch}.png"), rng.integers(0, 256, (20, 20), dtype=np.uint8))
    return ImageFolder(tmp_path, decoder="opencv")


def assembling_threads():
    return [t for t in threading.enumerate() if t.name == "assemble-batches"]


def wait_for(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_decoding_goes_on_while_the_caller_holds_a_batch(folder, monkeypatch):
    """The model runs on batch k in the caller's thread; batches k+1.. decode meanwhile."""
    read, decoded = ImageFolder.read_planes, []
    monkeypatch.setattr(ImageFolder, "read_planes", lambda self, i: (decoded.append(i), read(self, i))[1])
    ids = folder.ids()
    batches = decoded_batches(folder, ids, Preprocess(size=16), 2, workers=2, prefetch_batches=3)
    first = next(batches)
    assert first.ids == ids[:2]
    # the caller does not come back (a long model call): the batches after it decode anyway
    assert wait_for(lambda: set(ids[:8]) <= set(decoded))
    assert len(decoded) < len(ids)  # bounded: the background stops a few batches ahead
    rest = list(batches)
    assert [b.ids for b in rest] == [ids[k:k + 2] for k in range(2, 12, 2)]
    assert not assembling_threads()


def test_batches_equal_the_sequential_ones_and_carry_their_stretchs_errors(folder):
    pp = Preprocess(size=16)
    broken = folder.root / "s05_blue.png"
    broken.write_bytes(broken.read_bytes()[:30])
    ids = folder.ids()
    for workers in (0, 3):
        batches = list(decoded_batches(folder, ids, pp, 4, workers=workers))
        assert [b.ids for b in batches] == [ids[0:4], ["s04", "s06", "s07"], ids[8:12]]
        assert batches[1].errors == [("s05", str(broken), "unreadable or truncated image")]
        assert batches[1].images.shape == (3, 4, 16, 16)
        want = np.stack([image_chw(folder.read(i), pp) for i in ids if i != "s05"])
        assert np.array_equal(np.concatenate([b.images for b in batches]), want)


def test_a_failure_of_the_decode_thread_reaches_the_caller_at_its_batch(folder, monkeypatch):
    read = ImageFolder.read_planes

    def fails_on_s07(self, sample_id):
        if sample_id == "s07":
            raise MemoryError("injected")  # not a DataError: a failure of the run, not of the sample
        return read(self, sample_id)

    monkeypatch.setattr(ImageFolder, "read_planes", fails_on_s07)
    got = []
    with pytest.raises(MemoryError, match="injected"):
        for batch in decoded_batches(folder, folder.ids(), Preprocess(size=16), 4, workers=2):
            got.append(batch.ids)
    assert got == [folder.ids()[:4]]  # the batches before it, in order
    assert wait_for(lambda: not assembling_threads())


def test_a_caller_that_stops_early_stops_the_decode_thread(folder):
    batches = decoded_batches(folder, folder.ids() * 50, Preprocess(size=16), 2, workers=2)
    next(batches)
    assert assembling_threads()
    batches.close()  # what a break, an exception or Ctrl-C in the caller's loop does
    assert not assembling_threads()


@pytest.mark.parametrize("interpolation", ["area", "linear", "nearest"])
@pytest.mark.parametrize("shape,size", [((512, 512), 96), ((300, 517), 64), ((40, 40), 96), ((48, 48), 48)])
def test_resizing_each_plane_into_the_batch_is_image_chw_bit_for_bit(interpolation, shape, size):
    from runtime.preprocess import image_chw_into

    pp = Preprocess(size=size, interpolation=interpolation)
    sample = np.random.default_rng(1).integers(0, 256, (*shape, 4), dtype=np.uint8)
    batch = np.full((3, 4, size, size), 7, np.uint8)
    image_chw_into([np.ascontiguousarray(sample[..., c]) for c in range(4)], pp, batch[1])
    assert np.array_equal(batch[1], image_chw(sample, pp))
    assert (batch[0] == 7).all() and (batch[2] == 7).all()  # its own slot only
