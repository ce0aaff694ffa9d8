"""F1 for multilabel predictions (numpy only; training's threshold tuning builds on it)."""

import numpy as np


def f1_per_class(y_true, y_pred):
    """Per-class F1 of binary (N, C) arrays; a class with no positives and no predictions gets 0
    (scikit-learn's zero_division=0)."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp = (y_true & y_pred).sum(0)
    fp = (~y_true & y_pred).sum(0)
    fn = (y_true & ~y_pred).sum(0)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def macro_f1(y_true, probs, thresholds=0.5):
    return float(f1_per_class(y_true, np.asarray(probs) > thresholds).mean())
