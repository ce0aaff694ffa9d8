"""Once every fold is trained: collect the out-of-fold predictions, tune thresholds, write the
metrics and print the F1 report (``python -m train merge``; ``train fit`` calls it at the end)."""

import numpy as np

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from train.metrics import crossfit_macro_f1, f1_per_class, macro_f1, tune_thresholds
from train.run import Run, Thresholds

NOTES = ("macro_f1 and per_class: out-of-fold predictions averaged over `tta` dihedral views "
         "(single_view_macro_f1: without). tuned: thresholds tuned and scored on the same out-of-fold "
         "predictions (the usual Kaggle figure, optimistic for rare classes); tuned_crossfit: each fold "
         "scored with thresholds tuned on the other folds (an honest estimate).")


def _scores(y, probs, thresholds, folds):
    return {"at_0.5": macro_f1(y, probs), "tuned": macro_f1(y, probs, thresholds),
            "tuned_crossfit": crossfit_macro_f1(y, probs, folds)}


def merge(run):
    """Tune thresholds on the out-of-fold predictions and write thresholds.json, oof.csv,
    metrics.json and curves.png; returns the metrics dict.

    Thresholds are tuned on the test-time-augmented predictions (what the runtime applies by
    default) and on the single-view ones (``runtime infer --tta 1``), over all folds and on each
    fold alone (what one fold's model is compared with in the viewer)."""
    run = Run(run)
    cfg = run.config
    ids, folds, y = run.targets()
    probs = np.zeros((len(ids), NUM_CLASSES), np.float32)
    single = np.zeros_like(probs)
    per_fold, fold_thresholds = [], []
    for k in range(cfg.folds):
        idx = np.flatnonzero(folds == k)
        probs[idx] = run.oof(k, views=cfg.tta, rows=len(idx))
        single[idx] = run.oof(k, views=1, rows=len(idx))
        tuned_k, single_k = tune_thresholds(y[idx], probs[idx]), tune_thresholds(y[idx], single[idx])
        fold_thresholds.append((tuned_k, single_k))
        per_fold.append({"fold": k, "images": int(len(idx)), "best_epoch": run.history(k)["best"]["epoch"] + 1,
                         "macro_f1_0.5": macro_f1(y[idx], probs[idx]),
                         "macro_f1_tuned_on_fold": macro_f1(y[idx], probs[idx], tuned_k),
                         "single_view_macro_f1_tuned_on_fold": macro_f1(y[idx], single[idx], single_k)})

    thresholds = Thresholds(tune_thresholds(y, probs), cfg.tta, tune_thresholds(y, single), tuple(fold_thresholds))
    f1_05 = f1_per_class(y, probs > 0.5)
    f1_tuned = f1_per_class(y, probs > thresholds.tuned)
    metrics = {
        "images": len(ids),
        "tta": cfg.tta,
        "macro_f1": _scores(y, probs, thresholds.tuned, folds),
        "single_view_macro_f1": _scores(y, single, thresholds.single_view, folds),
        "per_fold": per_fold,
        "per_class": [
            {"class": c, "name": CLASS_NAMES[c], "support": int(y[:, c].sum()), "f1_0.5": float(f1_05[c]),
             "f1_tuned": float(f1_tuned[c]), "threshold": float(thresholds.tuned[c])}
            for c in range(NUM_CLASSES)
        ],
        "notes": NOTES,
    }
    run.write_thresholds(thresholds)
    run.write_oof_csv(ids, folds, probs)
    run.write_metrics(metrics)
    from train.plots import plot_curves

    plot_curves(run)
    return metrics


def format_report(metrics):
    """The F1 report printed at the end of a run."""
    m, views = metrics["macro_f1"], metrics["tta"]
    lines = [f"out-of-fold macro-F1 over {metrics['images']} images"
             + (f", {views} test-time views" if views > 1 else "")
             + f": {m['at_0.5']:.4f} at 0.5, {m['tuned']:.4f} with tuned thresholds ({m['tuned_crossfit']:.4f} cross-fitted)"]
    if views > 1:
        s = metrics["single_view_macro_f1"]
        lines.append(f"  single view: {s['at_0.5']:.4f} at 0.5, {s['tuned']:.4f} tuned ({s['tuned_crossfit']:.4f} cross-fitted)")
    for f in metrics["per_fold"]:
        lines.append(f"  fold {f['fold']}: best epoch {f['best_epoch']}, macro-F1 {f['macro_f1_0.5']:.4f} at 0.5, "
                     f"{f['macro_f1_tuned_on_fold']:.4f} tuned on the fold")
    lines.append(f"  {'class':<32}{'support':>8}{'F1@0.5':>8}{'F1 tuned':>9}{'thr':>6}")
    for c in metrics["per_class"]:
        lines.append(f"  {c['class']:>2} {c['name']:<29}{c['support']:>8}{c['f1_0.5']:>8.3f}{c['f1_tuned']:>9.3f}"
                     f"{c['threshold']:>6.2f}")
    return "\n".join(lines)
