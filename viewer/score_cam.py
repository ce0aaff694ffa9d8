"""Localisation score: the pointing game on synthetic data, whose generator records where each
label's pattern was drawn. A (field, true class) pair is a hit when the map's maximum for that
class falls inside the class's pattern region.

The CAMs are exactly the viewer's (viewer/cam.py: same layers, same test-time views, fold mean).
Beside them, three pointers that use no model at all, so a score can be read against them:
the image centre, a random point (its expected score, the region's share of the field), and the
brightest pixel of the blurred green channel (the protein channel: where the stain is brightest).
A CAM method that does not beat the brightest-green pointer tells the user nothing the image
does not already show.
"""

from pathlib import Path

import cv2
import numpy as np

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from runtime.errors import DataError
from runtime.labels import read_labels
from runtime.preprocess import preprocess
from runtime.reader import ImageFolder
from train.synth import load_masks
from viewer.cam import CamModels

DEFAULT_METHODS = ("layercam", "gradcam", "gradcam++")
BASELINES = ("centre", "random", "green")
BASELINE_LABELS = {"centre": "centre", "random": "random", "green": "green max"}
GREEN_BLUR = 1 / 32   # sigma of the green channel's Gaussian blur, as a share of the field width


def peak_in_mask(values, mask):
    """Whether the maximum of ``values`` (any grid) lands inside ``mask`` (the field's pixels)."""
    y, x = np.unravel_index(int(np.argmax(values)), values.shape)
    my = min(int((y + 0.5) * mask.shape[0] / values.shape[0]), mask.shape[0] - 1)
    mx = min(int((x + 0.5) * mask.shape[1] / values.shape[1]), mask.shape[1] - 1)
    return bool(mask[my, mx])


def baseline_hit(name, sample, mask):
    """The no-model pointers: a hit (0/1) or, for 'random', the expected hit rate."""
    h, w = mask.shape
    if name == "centre":
        return float(mask[h // 2, w // 2])
    if name == "random":
        return float(mask.mean())
    green = cv2.GaussianBlur(sample[..., 1].astype(np.float32), (0, 0), max(1.0, GREEN_BLUR * sample.shape[1]))
    return float(peak_in_mask(green, mask))


def _pairs(data, split, limit):
    labels = read_labels(data / ("test_labels.csv" if split == "test" else "train.csv"))
    pairs = []  # (Id, class)
    for sample_id, classes in list(labels.items())[:limit]:
        if not (data / "masks" / f"{sample_id}.npz").is_file():
            raise DataError(data / "masks" / f"{sample_id}.npz", "no pattern masks: the pointing game needs synthetic data")
        pairs += [(sample_id, c) for c in classes]
    return pairs


def pointing_game(run, data, methods=DEFAULT_METHODS, split="test", limit=None, batch_size=16, views=None):
    """{name: {"overall": accuracy, "per_class": {class: accuracy}, "pairs": n}} for each CAM
    method and each no-model baseline (BASELINES). ``views``: test-time views averaged per map,
    default the run's (what the viewer shows)."""
    from train.run import Run

    data, run = Path(data), Run(run)
    views = run.config.tta if views is None else views
    folder = ImageFolder(data / split)
    pairs = _pairs(data, split, limit)
    masks = {}
    hits = {name: np.zeros(NUM_CLASSES) for name in (*methods, *BASELINES)}
    counts = np.zeros(NUM_CLASSES)
    with CamModels([(p, None) for p in run.checkpoints()]) as models:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            samples = [folder.read(i) for i, _ in chunk]
            for (sample_id, _), sample in zip(chunk, samples):
                masks.setdefault(sample_id, load_masks(data / "masks" / f"{sample_id}.npz"))
            for (sample_id, c), sample in zip(chunk, samples):
                counts[c] += 1
                for name in BASELINES:
                    hits[name][c] += baseline_hit(name, sample, masks[sample_id][c])
            x = np.stack([preprocess(s, models.preprocess) for s in samples])
            for method in methods:
                cams = models.cam(x, [c for _, c in chunk], method, views=views)
                for (sample_id, c), cam in zip(chunk, cams):
                    hits[method][c] += peak_in_mask(cam, masks[sample_id][c])
    return {name: {"overall": float(h.sum() / max(counts.sum(), 1)), "pairs": int(counts.sum()),
                   "per_class": {int(c): float(h[c] / counts[c]) for c in range(NUM_CLASSES) if counts[c]}}
            for name, h in hits.items()}


def format_scores(results):
    names = list(results)
    header = [BASELINE_LABELS.get(n, n) for n in names]
    lines = [f"{'class':<34}" + "".join(f"{h:>11}" for h in header)]
    for c in sorted(set().union(*(r["per_class"] for r in results.values()))):
        lines.append(f"{c:>2} {CLASS_NAMES[c]:<31}" + "".join(
            f"{results[n]['per_class'].get(c, float('nan')):>11.3f}" for n in names))
    lines.append(f"{'overall':<34}" + "".join(f"{results[n]['overall']:>11.3f}" for n in names)
                 + f"   ({results[names[0]]['pairs']} field-class pairs)")
    methods = [n for n in names if n not in BASELINES]
    if "green" in results and methods:
        below = [n for n in methods if results[n]["overall"] <= results["green"]["overall"]]
        lines.append("no-model pointers: centre = image centre, random = expected score of a random point, "
                     "green max = brightest pixel of the blurred green channel")
        lines.append("below the green-max pointer: " + (", ".join(below) if below else "none"))
    return "\n".join(lines)
