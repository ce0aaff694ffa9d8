"""Per-class threshold tuning for multilabel F1 (numpy only)."""

import numpy as np

from runtime.metrics import f1_per_class, macro_f1  # noqa: F401  (re-exported for training code)


def best_threshold(y_true, probs):
    """The threshold that maximises F1 for one class, and that F1.

    Every distinct cut of the sorted probabilities is tried; the threshold is the midpoint
    between the last positive-predicted and the first negative-predicted probability. A class
    with no positives gets 0.5 (nothing to tune on).
    """
    y_true = np.asarray(y_true, bool)
    probs = np.asarray(probs, np.float64)
    positives = int(y_true.sum())
    if positives == 0:
        return 0.5, 0.0
    order = np.argsort(-probs, kind="stable")
    p, t = probs[order], y_true[order]
    tp = np.cumsum(t)
    predicted = np.arange(1, len(p) + 1)
    last_of_tie = np.r_[p[1:] != p[:-1], True]  # a cut must not split equal probabilities
    f1 = np.where(last_of_tie, 2 * tp / (predicted + positives), -1.0)
    k = int(np.argmax(f1))
    below = p[k + 1] if k + 1 < len(p) else 0.0
    return float((p[k] + below) / 2), float(f1[k])


def tune_thresholds(y_true, probs):
    """Per-class thresholds maximising F1 on (N, C) probabilities."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    return np.array([best_threshold(y_true[:, c], probs[:, c])[0] for c in range(y_true.shape[1])])


def crossfit_macro_f1(y_true, probs, folds):
    """Macro-F1 where each fold is scored with thresholds tuned on the other folds only: an honest
    estimate of the tuned thresholds' F1 on unseen data (tuning and scoring on the same
    out-of-fold predictions is optimistic, most of all for rare classes)."""
    y_true, probs, folds = np.asarray(y_true), np.asarray(probs), np.asarray(folds)
    pred = np.zeros_like(y_true, dtype=bool)
    for k in np.unique(folds):
        held = folds == k
        if held.all():
            return macro_f1(y_true, probs, tune_thresholds(y_true, probs))
        thr = tune_thresholds(y_true[~held], probs[~held])
        pred[held] = probs[held] > thr
    return float(f1_per_class(y_true, pred).mean())
