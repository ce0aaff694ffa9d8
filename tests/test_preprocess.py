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
