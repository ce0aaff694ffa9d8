import numpy as np

from runtime.labels import multi_hot
from train.folds import assign_folds
from train.synth import sample_labels


def test_every_class_is_spread_across_folds():
    labels = sample_labels(300, np.random.default_rng(0), min_per_class=9)
    y = multi_hot(labels)
    folds = assign_folds(y, k=3, seed=0)
    assert np.ptp(np.bincount(folds)) <= 0.1 * len(y)  # folds of about equal size
    for c in range(28):
        per_fold = np.array([y[folds == k, c].sum() for k in range(3)])
        assert per_fold.min() >= 1, f"class {c} missing from a fold: {per_fold}"
        assert per_fold.max() - per_fold.min() <= max(2, 0.2 * per_fold.sum())


def test_folds_are_deterministic_for_a_seed():
    y = multi_hot(sample_labels(120, np.random.default_rng(1), min_per_class=6))
    np.testing.assert_array_equal(assign_folds(y, 3, 5), assign_folds(y, 3, 5))
    assert not np.array_equal(assign_folds(y, 3, 5), assign_folds(y, 3, 6))
