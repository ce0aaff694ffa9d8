import numpy as np
from sklearn.metrics import f1_score, precision_recall_curve

from train.metrics import best_threshold, crossfit_macro_f1, f1_per_class, macro_f1, tune_thresholds


def random_case(seed=0, n=200, c=6):
    rng = np.random.default_rng(seed)
    y = rng.random((n, c)) < np.linspace(0.05, 0.5, c)
    probs = np.clip(y * 0.35 + rng.random((n, c)) * 0.65, 0, 1)
    y[:, -1] = False  # a class with no positives
    return y, probs


def test_f1_matches_scikit_learn():
    y, probs = random_case()
    pred = probs > 0.5
    np.testing.assert_allclose(f1_per_class(y, pred), f1_score(y, pred, average=None, zero_division=0))
    assert abs(macro_f1(y, probs) - f1_score(y, pred, average="macro", zero_division=0)) < 1e-12


def test_best_threshold_matches_the_precision_recall_curve_maximum():
    y, probs = random_case(1)
    for c in range(y.shape[1] - 1):
        thr, f1 = best_threshold(y[:, c], probs[:, c])
        precision, recall, _ = precision_recall_curve(y[:, c], probs[:, c])
        with np.errstate(invalid="ignore", divide="ignore"):
            best = np.nanmax(2 * precision * recall / (precision + recall))
        assert abs(f1 - best) < 1e-9
        assert abs(f1_score(y[:, c], probs[:, c] > thr) - f1) < 1e-9


def test_tuned_thresholds_never_worse_than_half():
    y, probs = random_case(2)
    thr = tune_thresholds(y, probs)
    assert macro_f1(y, probs, thr) >= macro_f1(y, probs) - 1e-12
    assert thr[-1] == 0.5  # nothing to tune on for a class without positives


def test_crossfit_is_no_better_than_in_sample_tuning():
    y, probs = random_case(3)
    folds = np.arange(len(y)) % 3
    assert crossfit_macro_f1(y, probs, folds) <= macro_f1(y, probs, tune_thresholds(y, probs)) + 1e-12
