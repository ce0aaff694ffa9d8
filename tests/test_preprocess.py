import numpy as np
import pytest

from runtime.preprocess import Preprocess, normalize, preprocess, resize


def test_preprocess_shapes_order_and_values():
    pp = Preprocess(size=8, mean=(0.1, 0.2, 0.3, 0.4), std=(0.5, 0.5, 0.5, 0.5))
    sample = np.zeros((16, 16, 4), np.uint8)
    sample[..., 2] = 255  # blue
    x = preprocess(sample, pp)
    assert x.shape == (4, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], [(0 - 0.1) / 0.5, (0 - 0.2) / 0.5, (1 - 0.3) / 0.5, (0 - 0.4) / 0.5], rtol=1e-6)


def test_batch_normalize_equals_per_sample():
    pp = Preprocess(size=4, mean=(0.1,) * 4, std=(0.2,) * 4)
    batch = np.random.default_rng(0).integers(0, 255, (3, 4, 4, 4), dtype=np.uint8)
    out = normalize(batch, pp)
    assert out.shape == (3, 4, 4, 4)
    np.testing.assert_array_equal(out[1], normalize(batch[1], pp))


def test_resize_keeps_uint8_and_round_trips_json():
    pp = Preprocess(size=5)
    assert resize(np.zeros((9, 9, 4), np.uint8), pp).shape == (5, 5, 4)
    assert Preprocess.from_dict(pp.to_dict()) == pp


def test_channel_order_is_fixed():
    with pytest.raises(ValueError, match="channel order"):
        Preprocess(channels=("blue", "green", "red", "yellow"))


def _float64_stats(samples):
    """The statistics as computed before they were streamed: float64 mean and std of the whole set."""
    x = np.asarray(samples).astype(np.float64) / 255.0
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


def test_channel_stats_are_the_float64_statistics_of_the_whole_set():
    from runtime.preprocess import channel_stats

    rng = np.random.default_rng(1)
    samples = rng.integers(0, 256, (16, 48, 48, 4), dtype=np.uint8)
    samples[..., 1] //= 8  # dim channels like the real yellow and red
    samples[..., 3] = rng.binomial(255, 0.05, samples.shape[:3])
    mean, std = channel_stats(samples)
    pixels = samples.reshape(-1, 4).astype(np.int64)
    n = len(pixels)
    assert mean == tuple(int(s) / (255 * n) for s in pixels.sum(0))  # the exact mean, correctly rounded
    exact_var = [(n * int(q) - int(s) ** 2) / (255 * n) ** 2 for s, q in zip(pixels.sum(0), (pixels ** 2).sum(0))]
    np.testing.assert_allclose(std, np.sqrt(exact_var), rtol=1e-15, atol=0)
    old_mean, old_std = _float64_stats(samples)
    np.testing.assert_allclose(mean, old_mean, rtol=1e-12, atol=0)
    np.testing.assert_allclose(std, old_std, rtol=1e-12, atol=0)
    assert all(type(v) is float for v in mean + std)


def test_channel_stats_do_not_depend_on_the_order_or_grouping_of_the_samples():
    from runtime.preprocess import channel_stats

    samples = np.random.default_rng(2).integers(0, 256, (9, 20, 20, 4), dtype=np.uint8)
    stats = channel_stats(samples)
    assert channel_stats(samples[::-1]) == stats
    assert channel_stats(iter(list(samples[4:]) + list(samples[:4]))) == stats


def test_channel_stats_floor_the_std_of_a_flat_channel():
    from runtime.preprocess import channel_stats

    samples = np.full((3, 8, 8, 4), 51, np.uint8)
    mean, std = channel_stats(samples)
    assert mean == (0.2,) * 4 and std == (1e-3,) * 4
