"""What a reduced-precision variant does to the model's answers, measured where they count: on the
run's out-of-fold images, averaged over the run's test-time views as the runtime does.

The FP32 reference is the run's own out-of-fold predictions (oof.npy, oof_single.npy), which the
FP32 ONNX files reproduce to 1e-4 (export's parity gate). A variant's fold files predict the
same images, each file only its own fold's validation images; its thresholds are tuned on those
predictions (with and without test-time augmentation), and the macro-F1 drop against FP32 (each
with thresholds tuned on its own predictions) decides whether ``auto`` may choose it.

Why the gate uses thresholds tuned and scored on the same predictions: both sides are equally
optimistic, so the drop measures what the precision lost and not the noise of tuning on half the
data; the cross-fitted drop (thresholds from the other folds) is reported beside it.
"""

from dataclasses import dataclass

import numpy as np

from runtime.classes import NUM_CLASSES
from runtime.onnx_session import make_session
from runtime.model_spec import INPUT_NAME, PROBS
from runtime.tta import SETTINGS, views
from train.metrics import crossfit_macro_f1, macro_f1, tune_thresholds

DEFAULT_MAX_F1_DROP = 0.01


@dataclass
class Reference:
    """The run's FP32 out-of-fold predictions on the evaluated Ids."""

    ids: list          # the evaluated Ids (a subset of folds.csv for large runs)
    folds: np.ndarray  # their folds
    y: np.ndarray      # their multi-hot labels
    tta: int           # the run's test-time views
    probs: dict        # views (1 and tta) -> (n, 28) probabilities


def reference(run, subset):
    ids, folds, y = run.targets()
    probs = {}
    for v in sorted({1, run.config.tta}):
        full = np.zeros((len(ids), NUM_CLASSES), np.float32)
        for k in range(run.config.folds):
            rows = np.flatnonzero(folds == k)
            full[rows] = run.oof(k, views=v, rows=len(rows))
        probs[v] = full[subset]
    return Reference([ids[i] for i in subset], folds[subset], y[subset], run.config.tta, probs)


def distribution(diff):
    diff = np.abs(diff)
    return {"p50": float(np.percentile(diff, 50)), "p99": float(np.percentile(diff, 99)), "max": float(diff.max()),
            "values": int(diff.size)}


def predict_oof(fold_paths, data, ref, chunk=64):
    """{views: (n, 28)} out-of-fold probabilities of one fold file per fold (``fold_paths[k]``)
    for views 1 and the run's count, averaged as runtime.tta does."""
    sessions = {k: make_session(p, "cpu") for k, p in fold_paths.items()}
    names = SETTINGS[ref.tta]
    total = np.zeros((len(ref.ids), NUM_CLASSES), np.float64)
    single = np.zeros((len(ref.ids), NUM_CLASSES), np.float32)
    for k, session in sessions.items():
        rows = np.flatnonzero(ref.folds == k)
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            batch = data.images([ref.ids[i] for i in part])
            for name, view in zip(names, views(batch, ref.tta)):
                probs = session.run([PROBS], {INPUT_NAME: view})[0]
                total[part] += probs
                if name == "identity":
                    single[part] = probs
    return {1: single, ref.tta: (total / len(names)).astype(np.float32)}


def assess(ref, probs, max_drop):
    """(thresholds {views: array}, quality dict, usable, reason) of a variant's OOF ``probs``."""
    thresholds = {v: tune_thresholds(ref.y, p) for v, p in probs.items()}
    v = ref.tta
    fp32_thresholds = tune_thresholds(ref.y, ref.probs[v])
    f1 = {"tuned": macro_f1(ref.y, probs[v], thresholds[v]), "crossfit": crossfit_macro_f1(ref.y, probs[v], ref.folds)}
    fp32 = {"tuned": macro_f1(ref.y, ref.probs[v], fp32_thresholds),
            "crossfit": crossfit_macro_f1(ref.y, ref.probs[v], ref.folds)}
    drop = fp32["tuned"] - f1["tuned"]
    usable = bool(drop <= max_drop)
    quality = {"views": v, "images": len(ref.ids), "abs_diff_vs_fp32": distribution(probs[v] - ref.probs[v]),
               "macro_f1": f1, "fp32_macro_f1": fp32, "macro_f1_drop": drop,
               "macro_f1_drop_crossfit": fp32["crossfit"] - f1["crossfit"], "max_drop": max_drop}
    reason = (f"out-of-fold macro-F1 drop {drop:+.4f} vs FP32 {'within' if usable else 'above'} the bound "
              f"{max_drop:g} ({len(ref.ids)} images, {v} view(s))")
    return thresholds, quality, usable, reason


def fp32_quality(ref, run_thresholds):
    """The FP32 variant's figures on the evaluated Ids, with the run's thresholds."""
    v = ref.tta
    return {"views": v, "images": len(ref.ids),
            "macro_f1": {"tuned": macro_f1(ref.y, ref.probs[v], run_thresholds),
                         "crossfit": crossfit_macro_f1(ref.y, ref.probs[v], ref.folds)}}


def threshold_table(tuned, tta):
    """model.json's thresholds of a variant: for every view count the runtime offers, the ones
    tuned for it (1 and the run's count), else those tuned for the run's count."""
    table = {}
    for n in SETTINGS:
        on = n if n in tuned else tta
        table[str(n)] = {"values": [float(t) for t in tuned[on]], "tuned_on_views": on}
    return table
