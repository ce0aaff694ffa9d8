"""Localization score: the pointing game on synthetic data, whose generator records where each
label's pattern was drawn. A (field, true class) pair is a hit when the CAM's maximum for that
class falls inside the class's pattern region."""

from pathlib import Path

import numpy as np

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from runtime.errors import DataError
from runtime.labels import read_labels
from runtime.preprocess import preprocess
from runtime.reader import ImageFolder
from train.synth import load_masks
from viewer.cam import CamModels

DEFAULT_METHODS = ("gradcam", "gradcam++", "layercam")


def pointing_game(run, data, methods=DEFAULT_METHODS, split="test", limit=None, batch_size=16):
    """{method: {"overall": accuracy, "per_class": {class: accuracy}, "pairs": n}}."""
    from train.run import Run

    data = Path(data)
    labels_csv = data / ("test_labels.csv" if split == "test" else "train.csv")
    labels = read_labels(labels_csv)
    folder = ImageFolder(data / split)
    models = CamModels(Run(run).checkpoints())
    pairs = []  # (Id, class)
    for sample_id, classes in list(labels.items())[:limit]:
        mask_file = data / "masks" / f"{sample_id}.npz"
        if not mask_file.is_file():
            raise DataError(mask_file, "no pattern masks: the pointing game needs synthetic data")
        pairs += [(sample_id, c) for c in classes]
    results = {}
    for method in methods:
        hits = np.zeros(NUM_CLASSES)
        counts = np.zeros(NUM_CLASSES)
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            samples = [folder.read(i) for i, _ in chunk]
            x = np.stack([preprocess(s, models.preprocess) for s in samples])
            cams = models.cam(x, [c for _, c in chunk], method)
            for (sample_id, c), cam, sample in zip(chunk, cams, samples):
                mask = load_masks(data / "masks" / f"{sample_id}.npz")[c]
                y, x_ = np.unravel_index(int(np.argmax(cam)), cam.shape)
                # the CAM lives on the model's grid; map its peak to the mask's pixels
                my = min(int((y + 0.5) * mask.shape[0] / cam.shape[0]), mask.shape[0] - 1)
                mx = min(int((x_ + 0.5) * mask.shape[1] / cam.shape[1]), mask.shape[1] - 1)
                hits[c] += bool(mask[my, mx])
                counts[c] += 1
        results[method] = {
            "overall": float(hits.sum() / max(counts.sum(), 1)), "pairs": int(counts.sum()),
            "per_class": {int(c): float(hits[c] / counts[c]) for c in range(NUM_CLASSES) if counts[c]},
        }
    return results


def format_scores(results):
    methods = list(results)
    lines = [f"{'class':<34}" + "".join(f"{m:>12}" for m in methods)]
    classes = sorted(set().union(*(r["per_class"] for r in results.values())))
    for c in classes:
        lines.append(f"{c:>2} {CLASS_NAMES[c]:<31}" + "".join(
            f"{results[m]['per_class'].get(c, float('nan')):>12.3f}" for m in methods))
    lines.append(f"{'overall':<34}" + "".join(f"{results[m]['overall']:>12.3f}" for m in methods)
                 + f"   ({results[methods[0]]['pairs']} field-class pairs)")
    return "\n".join(lines)
