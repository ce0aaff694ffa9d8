import pickle
import tracemalloc

import numpy as np
import pytest
import torch

from runtime.preprocess import Preprocess, channel_stats, normalize, resize
from runtime.reader import ImageFolder
from train.data import Collate, FoldDataset, Samples


def _traced_peak(fn):
    """(fn(), the peak of the memory Python and numpy allocated while it ran, in bytes)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _cached(tiny_data, tmp_path, size=32):
    return Samples(tiny_data / "train.csv", tiny_data / "train", Preprocess(size=size), progress=False,
                   cache_dir=tmp_path / "c")


def test_samples_statistics_read_one_sample_at_a_time_from_the_cache(tiny_data, tmp_path):
    samples = _cached(tiny_data, tmp_path, size=64)
    assert len(samples.ids) == 48
    expect = channel_stats(np.stack([samples.get(i) for i in range(len(samples.ids))]))
    stats, peak = _traced_peak(lambda: samples.channel_stats(limit=len(samples.ids)))
    assert stats == expect
    # the set is 48 x 64 x 64 x 4 = 768 KiB of uint8 (6 MiB as float64): a sample is 16 KiB
    assert peak < samples.images.nbytes / 4, peak


def test_samples_in_ram_hold_the_resized_images_and_leave_out_unreadable_ones(tiny_data, tmp_path):
    ids = (tiny_data / "train.csv").read_text().splitlines()
    labels = tmp_path / "train.csv"
    labels.write_text("\n".join(ids[:6] + ["missing-id,0"] + ids[6:10]) + "\n")
    pp = Preprocess(size=32)
    samples = Samples(labels, tiny_data / "train", pp, threads=2, progress=False)
    assert samples.cached and [e[0] for e in samples.errors] == ["missing-id"]
    assert samples.images.shape == (9, 32, 32, 4) and len(samples.ids) == 9
    folder = ImageFolder(tiny_data / "train")
    for row, sample_id in enumerate(samples.ids):
        assert np.array_equal(samples.images[row], resize(folder.read(sample_id), pp))


def test_loader_workers_started_by_spawn_batch_as_the_training_process(tiny_data, tmp_path):
    samples = _cached(tiny_data, tmp_path)
    samples.pp = Preprocess(size=32, mean=(0.1, 0.2, 0.1, 0.2), std=(0.3, 0.2, 0.3, 0.2))
    dataset = FoldDataset(samples, np.arange(12), augment=True, seed=5)
    pickle.dumps(Collate(samples.pp))  # what a spawned worker receives
    here = list(torch.utils.data.DataLoader(dataset, 4, collate_fn=Collate(samples.pp)))
    spawned = list(torch.utils.data.DataLoader(dataset, 4, collate_fn=Collate(samples.pp), num_workers=1,
                                               multiprocessing_context="spawn"))
    assert len(spawned) == len(here) == 3
    for (x, y), (x2, y2) in zip(here, spawned):
        assert x.dtype == torch.float32 and x.shape == (4, 4, 32, 32)
        assert torch.equal(x, x2) and torch.equal(y, y2)
    first = [dataset[i][0] for i in range(4)]
    assert torch.equal(here[0][0], torch.from_numpy(normalize(np.stack(first), samples.pp)))


def test_channel_stats_of_a_memory_map_reads_it_row_by_row(tmp_path):
    rng = np.random.default_rng(0)
    images = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(32, 64, 64, 4))
    images[:] = rng.integers(0, 256, images.shape, dtype=np.uint8)
    images.flush()
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    stats, peak = _traced_peak(lambda: channel_stats(mapped))
    assert stats == channel_stats(np.array(mapped))
    assert peak < mapped.nbytes / 4, peak


def test_bad_samples_for_channel_stats_are_one_clear_error():
    with pytest.raises(ValueError, match="uint8"):
        channel_stats(np.zeros((2, 8, 8, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 4\)"):
        channel_stats([np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="at least one sample"):
        channel_stats([])
