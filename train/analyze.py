"""``python -m train analyze``: the figures a user looks at before and after training, as PNGs
and one self-contained ``report.html`` (images embedded)."""

import base64
import html
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from runtime.classes import CHANNELS, CLASS_NAMES, NUM_CLASSES  # noqa: E402
from runtime.composite import COLOURS, composite  # noqa: E402
from runtime.labels import multi_hot, read_labels  # noqa: E402
from runtime.reader import ImageFolder  # noqa: E402
from runtime.writeutil import atomic_write_text  # noqa: E402
from train.config import dataset_paths  # noqa: E402


def label_stats(labels):
    """(per-class counts, labels-per-image counts {k: images}, co-occurrence matrix, correlation)."""
    y = multi_hot(list(labels.values()))
    counts = y.sum(0).astype(int)
    sizes = y.sum(1).astype(int)
    per_image = {int(k): int((sizes == k).sum()) for k in np.unique(sizes)}
    co = (y.T @ y).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(y, rowvar=False)
    corr = np.nan_to_num(corr)  # a class with no images has no correlation
    return counts, per_image, co, corr


def _save(fig, path, dpi=100, tight=True):
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_label_distribution(counts, path, log=True):
    order = np.argsort(-counts)
    fig, ax = plt.subplots(figsize=(12, 5))
    ax.bar(range(NUM_CLASSES), counts[order], color="#4472c4")
    ax.set_xticks(range(NUM_CLASSES), [f"{c} {CLASS_NAMES[c]}" for c in order], rotation=70, ha="right", fontsize=8)
    ax.set_xlabel("class")
    if log:
        ax.set_yscale("log")
    for i, c in enumerate(order):
        ax.text(i, counts[c], str(counts[c]), ha="center", va="bottom", fontsize=7)
    ax.set(title=f"Images per class ({'log' if log else 'linear'} scale)", ylabel="images")
    return _save(fig, path)


def plot_labels_per_image(per_image, path):
    total = sum(per_image.values())
    ks = sorted(per_image)
    fig, ax = plt.subplots(figsize=(6, 4))
    shares = [100 * per_image[k] / total for k in ks]
    ax.bar(range(len(ks)), shares, color="#70ad47")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    for i, v in enumerate(shares):
        ax.text(i, v, f"{v:.1f} %", ha="center", va="bottom", fontsize=8)
    ax.set(title="Labels per image", xlabel="labels on the image", ylabel="share of images (%)")
    return _save(fig, path)


def plot_matrix(matrix, path, title, diverging):
    fig, ax = plt.subplots(figsize=(11, 10))
    if diverging:
        limit = max(float(np.abs(matrix - np.diag(np.diag(matrix))).max()), 1e-6)
        im = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
    else:
        im = ax.imshow(np.log1p(matrix), cmap="viridis")
    names = [f"{c} {n}" for c, n in enumerate(CLASS_NAMES)]
    ax.set_xticks(range(NUM_CLASSES), names, rotation=90, fontsize=7)
    ax.set_yticks(range(NUM_CLASSES), names, fontsize=7)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("Pearson correlation" if diverging else "log(1 + images with both)")
    ax.set_title(title)
    return _save(fig, path)


def plot_gallery(folder, labels, path, per_class=1, classes=None):
    """For every class present (or the given ones), a few Ids: the composite and each channel alone
    in its own colour."""
    classes = classes if classes is not None else [c for c in range(NUM_CLASSES)
                                                   if any(c in v for v in labels.values())]
    rows = []
    for c in classes:
        ids = [i for i, v in labels.items() if c in v][:per_class]
        rows += [(c, i) for i in ids]
    fig, axes = plt.subplots(len(rows), 5, figsize=(9, 1.9 * len(rows) + 0.6), squeeze=False)
    for r, (c, sample_id) in enumerate(rows):
        sample = folder.read(sample_id)
        axes[r, 0].imshow(composite(sample))
        axes[r, 0].set_title(f"{c} {CLASS_NAMES[c]}", fontsize=8)
        for ch in range(4):
            plane = sample[..., ch].astype(np.float32)[..., None] / 255.0 * COLOURS[ch]
            axes[r, ch + 1].imshow(np.clip(plane, 0, 1))
            axes[r, ch + 1].set_title(CHANNELS[ch], fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    height = 1.9 * len(rows) + 0.6
    fig.suptitle("RGBY gallery: composite (yellow as red+green) and each channel in its colour", fontsize=10,
                 y=1 - 0.12 / height, va="top")
    # Fixed margins instead of tight_layout, which spends seconds measuring 140 axes.
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.1 / height, top=1 - 0.55 / height, wspace=0.04, hspace=0.28)
    fig.savefig(path, dpi=55)
    plt.close(fig)
    return path


def plot_run_f1(metrics, counts, path):
    order = np.argsort(-counts)
    per = metrics["per_class"]
    f05 = np.array([per[c]["f1_0.5"] for c in order])
    tuned = np.array([per[c]["f1_tuned"] for c in order])
    thr = np.array([per[c]["threshold"] for c in order])
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    x = np.arange(NUM_CLASSES)
    ax.bar(x - 0.2, f05, 0.4, label="at 0.5", color="#a5a5a5")
    ax.bar(x + 0.2, tuned, 0.4, label="tuned threshold", color="#4472c4")
    ax.set(ylabel="F1", ylim=(0, 1), title="Per-class out-of-fold F1, classes ordered by frequency")
    ax.legend()
    ax2.bar(x, thr, color="#ed7d31")
    ax2.axhline(0.5, color="k", lw=0.8, ls="--")
    ax2.set(ylabel="threshold", ylim=(0, 1), title="Tuned threshold per class")
    ax2.set_xticks(x, [f"{c} {CLASS_NAMES[c]}" for c in order], rotation=70, ha="right", fontsize=8)
    return _save(fig, path)


def plot_pr_curves(y, probs, path):
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, axes = plt.subplots(4, 7, figsize=(16, 10), sharex=True, sharey=True)
    for c, ax in enumerate(axes.flat):
        if y[:, c].any():
            precision, recall, _ = precision_recall_curve(y[:, c], probs[:, c])
            ax.plot(recall, precision, color="#4472c4")
            ax.set_title(f"{c} {CLASS_NAMES[c][:22]}\nAP {average_precision_score(y[:, c], probs[:, c]):.2f}", fontsize=7)
        else:
            ax.set_title(f"{c} {CLASS_NAMES[c][:22]}\n(no positives)", fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("recall", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("precision", fontsize=8)
    fig.suptitle("Precision-recall per class (out-of-fold probabilities)")
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.06, top=0.9, wspace=0.08, hspace=0.42)
    return _save(fig, path, tight=False)


def _img(path, title):
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"


def analyze(data, out, run=None, log=True):
    """Write the figures and OUT/report.html; returns the list of PNG paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels_csv, image_dir = dataset_paths(data)
    labels = read_labels(labels_csv)
    counts, per_image, co, corr = label_stats(labels)
    figures = [
        (plot_label_distribution(counts, out / "label_distribution.png", log), "Label distribution"),
        (plot_labels_per_image(per_image, out / "labels_per_image.png"), "Labels per image"),
        (plot_matrix(co, out / "cooccurrence.png", "Class co-occurrence (images with both)", False), "Co-occurrence"),
        (plot_matrix(corr, out / "correlation.png", "Correlation between classes (diverging, centred on 0)", True),
         "Correlation"),
        (plot_gallery(ImageFolder(image_dir), labels, out / "gallery.png"), "RGBY gallery"),
    ]
    if run:
        from train.plots import plot_curves
        from train.run import Run

        run = Run(run)
        metrics = run.metrics()
        shutil.copy(plot_curves(run), out / "training_curves.png")
        figures.append((out / "training_curves.png", "Loss and macro-F1 per epoch per fold"))
        figures.append((plot_run_f1(metrics, counts, out / "per_class_f1.png"), "Per-class F1 and thresholds"))
        ids, probs = run.oof_table()
        y = multi_hot([labels[i] for i in ids])
        figures.append((plot_pr_curves(y, probs, out / "pr_curves.png"), "Precision-recall per class"))
    body = "".join(_img(p, t) for p, t in figures)
    summary = (f"<p>{len(labels)} images, {int(counts.sum())} labels; commonest class {CLASS_NAMES[int(np.argmax(counts))]}"
               f" ({counts.max()} images, {100 * counts.max() / len(labels):.1f} %), rarest "
               f"{CLASS_NAMES[int(np.argmin(counts))]} ({counts.min()} images).</p>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>HPA data report</title>"
            f"<style>body{{font-family:sans-serif;max-width:1300px;margin:auto}}img{{max-width:100%}}</style></head>"
            f"<body><h1>HPA data report: {html.escape(str(data))}</h1>{summary}{body}</body></html>")
    atomic_write_text(out / "report.html", page)
    return [p for p, _ in figures]
