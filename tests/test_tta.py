"""Test-time augmentation: the views, the averaging, and the thresholds that go with them."""

import json
import re

import numpy as np
import pytest

from runtime.tta import SETTINGS, TRANSFORMS, dihedral, predict_views, views


def test_the_eight_views_are_the_flips_and_quarter_turns():
    batch = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    eight = list(views(batch, 8))
    assert len({v.tobytes() for v in eight}) == 8  # all distinct
    for k in range(4):
        np.testing.assert_array_equal(eight[k], np.rot90(batch, k, (2, 3)))
        np.testing.assert_array_equal(eight[4 + k], np.rot90(batch[..., ::-1], k, (2, 3)))
    assert all(v.flags.c_contiguous for v in eight)
    assert [v.tobytes() for v in views(batch, 4)] == [v.tobytes() for v in eight[:4]]
    assert [v.tobytes() for v in views(batch, 2)] == [eight[0].tobytes(), eight[4].tobytes()]


def test_training_augmentation_uses_the_same_views_on_hwc_samples():
    sample = np.random.default_rng(0).integers(0, 255, (5, 5, 4)).astype(np.uint8)
    nchw = sample.transpose(2, 0, 1)[None]
    for k in range(8):
        np.testing.assert_array_equal(dihedral(sample, k).transpose(2, 0, 1)[None], dihedral(nchw, k, (2, 3)))


def test_predict_views_averages_the_model_over_views():
    batch = np.random.default_rng(1).standard_normal((3, 4, 6, 6)).astype(np.float32)

    def corner(x):  # not rotation invariant: the top-left pixel of each channel
        return x[:, :, 0, 0].repeat(7, axis=1)

    want = np.mean([corner(np.rot90(batch, k, (2, 3))) for k in range(4)], axis=0)
    np.testing.assert_allclose(predict_views(corner, batch, 4), want, rtol=1e-6)
    np.testing.assert_array_equal(predict_views(corner, batch, 1), corner(batch))
    with pytest.raises(ValueError, match="1, 2, 4, 8 views, got 3"):
        predict_views(corner, batch, 3)


def test_each_named_view_is_the_index_formula_model_json_states():
    size = 5
    image = np.arange(size * size).reshape(size, size)
    for name, (k, rule) in TRANSFORMS.items():
        rows, cols = re.search(r"out\[i, j\] = in\[([^,\]]+), ([^\]]+)\]", rule).groups()
        i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        env = {"i": i, "j": j, "S": size}
        np.testing.assert_array_equal(dihedral(image, k), image[eval(rows, {}, env), eval(cols, {}, env)], err_msg=name)
    assert SETTINGS[4] == ("identity", "rot90", "rot180", "rot270") and SETTINGS[2] == ("identity", "flip")


def test_model_json_picks_the_thresholds_tuned_for_the_views_and_the_file(tiny_deploy, tiny_run):
    deploy, spec = tiny_deploy
    tuned = json.loads((tiny_run[0] / "thresholds.json").read_text())
    assert spec.tta == tuned["tta"] == 4
    for count, key, exact in ((4, "thresholds", True), (1, "single_view_thresholds", True),
                              (8, "thresholds", False)):  # none tuned for 8 views: the default stands in
        thresholds, is_exact = spec.thresholds_for(count)
        np.testing.assert_allclose(thresholds, tuned[key], rtol=1e-6)
        assert is_exact == exact
    assert np.abs(np.subtract(tuned["thresholds"], tuned["single_view_thresholds"])).max() > 1e-3
    int8 = spec.find("ensemble", "int8", "cpu")
    assert spec.thresholds_for(4, int8)[0] == spec.variants[int8.variant].thresholds[4][0] != spec.thresholds_for(4)[0]
