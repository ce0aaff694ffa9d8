"""Synthetic HPA fields in the Kaggle layout: the embedded default dataset.

Each field holds a few cells, each with a nucleus (blue), a microtubule network (red, radiating
from a centrosome beside the nucleus) and endoplasmic reticulum densest around the nucleus
(yellow). Green carries one spatial pattern per present class, each in its own compartment;
a multi-label field superimposes them. Labels are drawn to follow the real 2018 training set
(per-class counts and labels per image), with a guaranteed minimum per class.

Output (``python -m train synth --out DIR``)::

    DIR/train.csv                  Id,Target
    DIR/train/{Id}_{red,green,blue,yellow}.png
    DIR/masks/{Id}.npz             one boolean array per present class ("c{k}"): where its
                                   pattern was drawn (scored against Grad-CAM by the viewer)
    DIR/dataset.json               the provenance record: {"kind": "synthetic", "generator": ...,
                                   the arguments}; ``train fit`` copies it into the run's
                                   config.json, ``export onnx`` into model.json's source, and the
                                   viewer warns that such a model says nothing about real cells

With ``--test-images N`` it also writes a held-out set: ``DIR/test/``, ``DIR/sample_submission.csv``
(Kaggle's test format) and ``DIR/test_labels.csv`` (the answers, for scoring a submission).
Everything is a function of the seed: the same arguments give byte-identical files.
"""

import json
import logging
import math
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from runtime.classes import CHANNELS, NUM_CLASSES, REAL_CLASS_COUNTS, REAL_LABELS_PER_IMAGE
from runtime.labels import format_target
from runtime.writeutil import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)
DATASET_RECORD = "dataset.json"   # the provenance record of a generated dataset (see the module)


def dataset_record(data):
    """What ``train fit`` records about the data it trains on: ``{"path": DATA}`` plus
    DATA/dataset.json's record when there is one (``kind: synthetic`` for this generator's
    output). A garbled record is logged and left out: provenance never stops a fit."""
    from runtime.errors import DataError
    from runtime.jsonfile import read_json

    record = {"path": str(Path(data).resolve())}
    path = Path(data) / DATASET_RECORD
    if path.is_file():
        try:
            marker = read_json(path)
        except DataError as err:
            log.warning("%s", err)
        else:
            if isinstance(marker, dict):
                record.update({k: v for k, v in marker.items() if k != "path"})
    return record

# --------------------------------------------------------------------------- labels


def _label_weights(iterations=20, n=31072, seed=0):
    """Class weights for top-k Gumbel sampling whose marginals match the real class counts."""
    rng = np.random.default_rng(seed)
    target = np.asarray(REAL_CLASS_COUNTS, dtype=np.float64)
    target = target / target.sum()
    k = _draw_label_counts(rng, n)
    gumbel = rng.gumbel(size=(n, NUM_CLASSES))
    weights = target.copy()
    for _ in range(iterations):
        chosen = _top_k(np.log(weights) + gumbel, k)
        observed = chosen.sum(0) / chosen.sum()
        weights *= target / np.maximum(observed, 1e-9)
        weights /= weights.sum()
    return weights


def _draw_label_counts(rng, n):
    sizes = np.array(list(REAL_LABELS_PER_IMAGE), dtype=np.int64)
    probs = np.array(list(REAL_LABELS_PER_IMAGE.values()), dtype=np.float64)
    return rng.choice(sizes, size=n, p=probs / probs.sum())


def _top_k(keys, k):
    order = np.argsort(-keys, axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(keys.shape[1])[None, :].repeat(len(keys), 0), axis=1)
    return ranks < k[:, None]


def sample_labels(n, rng, min_per_class=25):
    """n label sets with the real per-class frequencies and labels-per-image, then every class
    raised to ``min_per_class`` images (at most n/20) so a small set still contains every class.

    A class is raised by adding it to random images that lack it and carry at most three labels.
    Decision: adding keeps every other class's count (and so the imbalance) as in the real set;
    the price is a few more two- and three-label images than the real 49/40/10 % split."""
    weights = _label_weights()
    k = _draw_label_counts(rng, n)
    chosen = _top_k(np.log(weights) + rng.gumbel(size=(n, NUM_CLASSES)), k)
    floor = min(min_per_class, max(1, n // 20))
    for c in np.argsort(chosen.sum(0), kind="stable"):
        missing = floor - int(chosen[:, c].sum())
        if missing > 0:
            pool = np.flatnonzero(~chosen[:, c] & (chosen.sum(1) <= 3))
            chosen[rng.choice(pool, size=min(missing, len(pool)), replace=False), c] = True
    return [sorted(np.flatnonzero(row).tolist()) for row in chosen]


# --------------------------------------------------------------------------- geometry



class Field:
    """Cell geometry of one field: per-pixel cell index, nuclei, cytoplasm and landmarks."""

    def __init__(self, rng, size, zoom=1.0):
        self.rng = rng
        self.size = size
        # Feature sizes below are given for a 256-pixel field at zoom 1, where a field holds 3 to 7
        # cells like a real HPA crop. A larger zoom magnifies the field: fewer, larger cells (the CPU
        # demo uses small, zoomed fields so the patterns survive downscaling at low cost).
        self.zoom = zoom
        self.scale = size / 256.0 * zoom
        self.cells = self._place_cells(rng, size)
        cell_d = np.stack([self._shape_distance(size, c["center"], c["radius"], c["angle"], c["aspect"], c["harm"])
                           for c in self.cells])
        nuc_d = np.stack([self._shape_distance(size, c["nuc_center"], c["nuc_radius"], c["angle"], c["nuc_aspect"],
                                               c["nuc_harm"]) for c in self.cells])
        owner = np.argmin(cell_d, axis=0)
        inside = np.take_along_axis(cell_d, owner[None], 0)[0] < 1.0
        self.cell_id = np.where(inside, owner, -1).astype(np.int32)
        self.dist = np.take_along_axis(cell_d, owner[None], 0)[0]  # 0 at centre, 1 at the outline
        self.nucleus = np.zeros((size, size), bool)
        for i in range(len(self.cells)):
            self.nucleus |= (self.cell_id == i) & (nuc_d[i] < 1.0)
        self.nuc_dist = np.min(np.where(self.cell_id[None] == np.arange(len(self.cells))[:, None, None], nuc_d, 9), 0)
        self.cell = self.cell_id >= 0
        self.cyto = self.cell & ~self.nucleus
        k = max(3, int(round(3 * self.scale)) | 1)
        edges = cv2.morphologyEx(self.cell_id.astype(np.float32), cv2.MORPH_GRADIENT, np.ones((k, k), np.uint8)) > 0
        self.outline = edges & self.cell
        self.junction = edges & (cv2.erode(self.cell.astype(np.uint8), np.ones((k, k), np.uint8)) > 0)
        ring = cv2.morphologyEx(self.nucleus.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((k, k), np.uint8)) > 0
        self.nuc_rim = ring & self.cell

    def _place_cells(self, rng, size):
        low, high = max(1, round(3 / self.zoom ** 2)), max(2, round(7 / self.zoom ** 2))
        count = int(rng.integers(low, high + 1))
        cells, tries = [], 0
        while len(cells) < count and tries < 400:
            tries += 1
            radius = size * rng.uniform(0.14, 0.2) * self.zoom
            # Keep the nucleus and most of the cell in view: a label whose pattern lies outside the
            # field would be label noise (it matters for zoomed fields, where a cell fills the view).
            margin = min(0.45 * size, max(0.08 * size, 0.6 * radius))
            center = rng.uniform(margin, size - margin, 2)
            if any(np.hypot(*(center - c["center"])) < 1.2 * max(radius, c["radius"]) for c in cells):
                continue
            angle = rng.uniform(0, math.pi)
            nuc_radius = radius * rng.uniform(0.38, 0.5)
            offset = rng.normal(0, 0.08 * radius, 2)
            cells.append(dict(
                center=center, radius=radius, angle=angle, aspect=rng.uniform(1.0, 1.6),
                harm=rng.normal(0, 0.07, (3, 2)),
                nuc_center=center + offset, nuc_radius=nuc_radius, nuc_aspect=rng.uniform(1.0, 1.35),
                nuc_harm=rng.normal(0, 0.04, (3, 2)),
                gain=rng.uniform(0.65, 1.0),
            ))
        for c in cells:
            # Centrosome: just outside the nucleus, on a random side.
            phi = rng.uniform(0, 2 * math.pi)
            c["centrosome"] = c["nuc_center"] + 1.25 * c["nuc_radius"] * np.array([math.cos(phi), math.sin(phi)])
            c["golgi_dir"] = phi
        return cells

    @staticmethod
    def _shape_distance(size, center, radius, angle, aspect, harm):
        """Normalised distance to a wobbly ellipse (1 on its outline), computed in its bounding box
        only; 9 elsewhere."""
        out = np.full((size, size), 9.0, np.float32)
        reach = radius * aspect * 1.5
        x0, y0 = (max(0, int(center[i] - reach)) for i in (0, 1))
        x1, y1 = (min(size, int(center[i] + reach) + 1) for i in (0, 1))
        if x0 >= x1 or y0 >= y1:
            return out
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - center[0], yy - center[1]
        ca, sa = math.cos(angle), math.sin(angle)
        u = (dx * ca + dy * sa) / aspect
        v = -dx * sa + dy * ca
        phi = np.arctan2(v, u)
        wobble = 1.0 + sum(a * np.cos((j + 2) * phi) + b * np.sin((j + 2) * phi) for j, (a, b) in enumerate(harm))
        out[y0:y1, x0:x1] = np.sqrt(u * u + v * v) / (radius * wobble)
        return out

    # ---- helpers that draw into float canvases

    def px(self, value):
        """A length given for a 256-pixel field, in this field's pixels (at least 1)."""
        return max(1, int(round(value * self.scale)))

    def sample_points(self, region, count):
        ys, xs = np.nonzero(region)
        if len(xs) == 0:
            return np.zeros((0, 2), np.float32)
        idx = self.rng.integers(0, len(xs), count)
        return np.stack([xs[idx], ys[idx]], 1).astype(np.float32)

    def cell_region(self, i, region):
        return region & (self.cell_id == i)

    def blob_noise(self, sigma):
        noise = self.rng.normal(0, 1, (self.size, self.size)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), max(0.5, sigma * self.scale))
        return (noise - noise.min()) / (np.ptp(noise) + 1e-6)


def _dots(field, canvas, region_per_cell, count, radius, value=1.0):
    r = field.px(radius)
    for i in range(len(field.cells)):
        n = int(field.rng.poisson(count)) if count > 3 else int(count)
        for x, y in field.sample_points(field.cell_region(i, region_per_cell), max(n, 1)):
            cv2.circle(canvas, (int(x), int(y)), r, value * field.rng.uniform(0.75, 1.0), -1, cv2.LINE_AA)


def _polyline(canvas, points, value, thickness):
    pts = np.round(points).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], False, value, thickness, cv2.LINE_AA)


def _microtubules(field, lines=22, max_steps=200):
    """Red network: curved lines from each centrosome to the cell edge (all lines of a cell are
    grown together). Returns the canvas and the line tips."""
    canvas = np.zeros((field.size, field.size), np.float32)
    tips = []
    step = 2.0 * field.scale
    for i, c in enumerate(field.cells):
        phi = field.rng.uniform(0, 2 * math.pi, lines)
        pos = np.repeat(np.asarray(c["centrosome"], np.float64)[None], lines, 0)
        paths = [pos.copy()]
        alive = np.ones(lines, bool)
        length = np.ones(lines, int)
        for _ in range(max_steps):
            phi = phi + field.rng.normal(0, 0.05, lines)
            nxt = pos + step * np.stack([np.cos(phi), np.sin(phi)], 1)
            x, y = nxt[:, 0].astype(int), nxt[:, 1].astype(int)
            ok = (x >= 0) & (x < field.size) & (y >= 0) & (y < field.size)
            xc, yc = np.clip(x, 0, field.size - 1), np.clip(y, 0, field.size - 1)
            ok &= (field.cell_id[yc, xc] == i) & (field.dist[yc, xc] <= 0.96)
            alive &= ok
            if not alive.any():
                break
            pos = np.where(alive[:, None], nxt, pos)
            length += alive
            paths.append(pos.copy())
        paths = np.stack(paths, 1)  # (lines, steps, 2)
        for line, n in zip(paths, length):
            if n > 3:
                _polyline(canvas, line[:n], 1.0, 1)
                tips.append(line[n - 1])
    return canvas, np.array(tips, np.float32).reshape(-1, 2)


def _reticulum(field):
    """Yellow ER: a reticular texture in the cytoplasm, densest around the nucleus."""
    net = field.blob_noise(0.9)
    net = np.clip((net - 0.5) * 5, 0, 1)
    falloff = np.clip(1.5 - field.dist, 0, 1) ** 2
    return (0.25 + 0.75 * net) * falloff * field.cyto + 0.3 * field.nuc_rim


# Each pattern: (field, context) -> float canvas in [0, ~1]. Fills are dimmer than structures so
# that a structure stays visible on top of a fill in a multi-label field.

def _p_nucleoplasm(f, ctx):
    return 0.4 * f.nucleus * (0.7 + 0.3 * f.blob_noise(3)) * ~ctx["nucleoli_region"]


def _p_nuclear_membrane(f, ctx):
    return 1.0 * f.nuc_rim


def _p_nucleoli(f, ctx):
    # Dimmer than the fibrillar-centre ring so that the ring stays visible on top of it.
    return 0.7 * ctx["nucleoli"]


def _p_fibrillar_center(f, ctx):
    """The rim of each nucleolus: a small bright ring inside the nucleus."""
    canvas = np.zeros_like(ctx["nucleoli"])
    for x, y, r in ctx["nucleoli_centres"]:
        cv2.circle(canvas, (int(x), int(y)), int(round(0.9 * r)), 1.0, f.px(2.0), cv2.LINE_AA)
    return canvas


def _p_speckles(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    inner = f.nucleus & (f.nuc_dist < 0.85)
    _dots(f, canvas, inner, 20, 1.8, 0.9)
    return canvas


def _p_nuclear_bodies(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    ring = f.nucleus & (f.nuc_dist > 0.5) & (f.nuc_dist < 0.85)
    _dots(f, canvas, ring, 4, 3.2)
    return canvas


def _p_er(f, ctx):
    return 0.9 * ctx["yellow"]


def _p_golgi(f, ctx):
    """A thick crescent hugging one side of the nucleus."""
    canvas = np.zeros_like(ctx["nucleoli"])
    for c in f.cells:
        centre = (int(c["nuc_center"][0]), int(c["nuc_center"][1]))
        r = int(c["nuc_radius"] * 1.25)
        start = math.degrees(c["golgi_dir"]) - 50
        cv2.ellipse(canvas, centre, (r, r), 0, start, start + 100, 1.0, f.px(4.0), cv2.LINE_AA)
    return canvas * f.cyto


def _p_peroxisomes(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    _dots(f, canvas, f.cyto, 90, 1.4, 0.8)
    return canvas


def _p_endosomes(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    _dots(f, canvas, f.cyto & (f.nuc_dist > 1.4) & (f.dist < 0.75), 16, 3.0)
    return canvas


def _p_lysosomes(f, ctx):
    """Hollow vesicles (bold small rings) in a band around the nucleus."""
    canvas = np.zeros_like(ctx["nucleoli"])
    band = f.cyto & (f.nuc_dist > 1.15) & (f.nuc_dist < 1.8)
    for i in range(len(f.cells)):
        for x, y in f.sample_points(f.cell_region(i, band), int(f.rng.integers(5, 8))):
            cv2.circle(canvas, (int(x), int(y)), f.px(4.2), 1.0, f.px(1.6), cv2.LINE_AA)
            cv2.circle(canvas, (int(x), int(y)), f.px(1.4), 1.0, -1, cv2.LINE_AA)  # a dense core
    return canvas


def _p_intermediate_filaments(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    for i, c in enumerate(f.cells):
        for _ in range(7):
            a = f.rng.uniform(0, 2 * math.pi)
            r = c["nuc_radius"] * f.rng.uniform(1.15, 1.6)
            arc = np.linspace(a, a + f.rng.uniform(2.0, 4.0), 40)
            wob = 1 + 0.12 * np.sin(arc * f.rng.uniform(2, 4))
            pts = c["nuc_center"] + (r * wob)[:, None] * np.stack([np.cos(arc), np.sin(arc)], 1)
            _polyline(canvas, pts, 1.0, f.px(2.0))
    return canvas * f.cyto


def _p_actin(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    for i, c in enumerate(f.cells):
        d = np.array([math.cos(c["angle"]), math.sin(c["angle"])])
        n = np.array([-d[1], d[0]])
        for off in np.linspace(-0.8, 0.8, 7):
            mid = c["center"] + off * c["radius"] * n
            pts = np.stack([mid - 1.5 * c["radius"] * d, mid + 1.5 * c["radius"] * d])
            _polyline(canvas, pts, 1.0, f.px(2.0))
        canvas *= ~((f.cell_id == i) & f.nucleus) | (f.cell_id != i)
    return canvas * f.cell


def _p_focal_adhesions(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    for i, c in enumerate(f.cells):
        for x, y in f.sample_points(f.cell_region(i, (f.dist > 0.85) & (f.dist < 0.95)), 10):
            d = np.array([x, y]) - c["center"]
            d = d / (np.linalg.norm(d) + 1e-6) * 8.0 * f.scale
            _polyline(canvas, np.stack([(x, y) - d, (x, y) + d]), 1.0, f.px(4.0))
    return canvas * f.cell


def _p_microtubules(f, ctx):
    return 0.9 * ctx["red"]


def _p_microtubule_ends(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    for x, y in ctx["tips"]:
        cv2.circle(canvas, (int(x), int(y)), f.px(3.6), 1.0, -1, cv2.LINE_AA)
    return canvas


def _p_cytokinetic_bridge(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    ca, cb, _ = ctx["pair"]
    mid, d = (ca + cb) / 2, (cb - ca) / (np.linalg.norm(cb - ca) + 1e-6)
    half = 0.35 * np.linalg.norm(cb - ca)
    _polyline(canvas, np.stack([mid - half * d, mid + half * d]), 1.0, f.px(5.0))
    cv2.circle(canvas, (int(mid[0]), int(mid[1])), f.px(6.0), 1.0, -1, cv2.LINE_AA)
    return canvas


def _p_mitotic_spindle(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    c = f.cells[ctx["mitotic"]]
    d = np.array([math.cos(c["angle"]), math.sin(c["angle"])])
    n = np.array([-d[1], d[0]])
    p1, p2 = c["center"] - 0.7 * c["radius"] * d, c["center"] + 0.7 * c["radius"] * d
    for t in np.linspace(-1, 1, 9):
        mid = c["center"] + t * 0.45 * c["radius"] * n
        _polyline(canvas, np.stack([p1, mid, p2]), 1.0, f.px(1.6))
    for p in (p1, p2):
        cv2.circle(canvas, (int(p[0]), int(p[1])), f.px(2.5), 1.0, -1, cv2.LINE_AA)
    return canvas


def _p_mtoc(f, ctx):
    """A bright dot at the centrosome with short spokes radiating from it (an aster)."""
    canvas = np.zeros_like(ctx["nucleoli"])
    for c in f.cells:
        x, y = c["centrosome"]
        for a in np.linspace(0, 2 * math.pi, 8, endpoint=False) + f.rng.uniform(0, 1):
            d = 18.0 * f.scale * np.array([math.cos(a), math.sin(a)])
            _polyline(canvas, np.stack([(x, y), (x, y) + d]), 1.0, f.px(2.4))
        cv2.circle(canvas, (int(x), int(y)), f.px(4.5), 1.0, -1, cv2.LINE_AA)
    return canvas * f.cell


def _p_centrosome(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    for c in f.cells:
        d = f.rng.normal(0, 1, 2)
        d = d / (np.linalg.norm(d) + 1e-6) * 6.0 * f.scale
        for p in (c["centrosome"] - d, c["centrosome"] + d):
            cv2.circle(canvas, (int(p[0]), int(p[1])), f.px(4.2), 1.0, -1, cv2.LINE_AA)
    return canvas


def _p_lipid_droplets(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    for i in range(len(f.cells)):
        for x, y in f.sample_points(f.cell_region(i, f.cyto & (f.dist < 0.85)), 6):
            cv2.circle(canvas, (int(x), int(y)), f.px(6.5), 1.0, f.px(2.6), cv2.LINE_AA)
    return canvas


def _p_plasma_membrane(f, ctx):
    return 1.0 * f.outline


def _p_cell_junctions(f, ctx):
    """Bright where two cells touch; a contact line between the closest pair when none do."""
    if f.junction.any():
        k = f.px(3.5)
        return 1.0 * cv2.dilate(f.junction.astype(np.uint8), np.ones((k, k), np.uint8))
    canvas = np.zeros_like(ctx["nucleoli"])
    ca, cb, radius = ctx["pair"]
    mid, d = (ca + cb) / 2, (cb - ca) / (np.linalg.norm(cb - ca) + 1e-6)
    n = np.array([-d[1], d[0]]) * 0.5 * radius
    _polyline(canvas, np.stack([mid - n, mid + n]), 1.0, f.px(4.0))
    return canvas


def _p_mitochondria(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    for i in range(len(f.cells)):
        for x, y in f.sample_points(f.cell_region(i, f.cyto), 16):
            a = f.rng.uniform(0, 2 * math.pi)
            t = np.linspace(-1, 1, 9)[:, None]
            bend = f.rng.normal(0, 0.5)
            d = np.array([math.cos(a), math.sin(a)])
            n = np.array([-d[1], d[0]])
            pts = np.array([x, y]) + 9.0 * f.scale * (t * d + bend * (t ** 2) * n)
            _polyline(canvas, pts, 0.9, f.px(1.5))
    return canvas * f.cyto


def _p_aggresome(f, ctx):
    """One large, very bright round body beside the nucleus in each cell."""
    canvas = np.zeros_like(ctx["nucleoli"])
    for c in f.cells:
        phi = c["golgi_dir"] + math.pi
        base = c["nuc_center"] + (c["nuc_radius"] + f.px(9.0)) * np.array([math.cos(phi), math.sin(phi)])
        axes = (f.px(14.0), f.px(10.0))
        cv2.ellipse(canvas, (int(base[0]), int(base[1])), axes, math.degrees(phi) + 90, 0, 360, 1.0, -1, cv2.LINE_AA)
    return canvas * f.cell


def _p_cytosol(f, ctx):
    return 0.35 * f.cyto * (0.8 + 0.2 * f.blob_noise(4))


def _p_cytoplasmic_bodies(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    _dots(f, canvas, f.cyto & (f.nuc_dist > 1.4) & (f.dist < 0.8), 2, 6.5)
    return canvas


def _p_rods_rings(f, ctx):
    canvas = np.zeros_like(ctx["nucleoli"])
    for i in range(len(f.cells)):
        # A ring threaded on a rod: the two shapes together, unlike any other class's.
        for x, y in f.sample_points(f.cell_region(i, f.cyto & (f.dist < 0.7)), 1):
            a = f.rng.uniform(0, math.pi)
            d = 15.0 * f.scale * np.array([math.cos(a), math.sin(a)])
            _polyline(canvas, np.stack([(x, y) - d, (x, y) + d]), 1.0, f.px(3.5))
            cv2.circle(canvas, (int(x), int(y)), f.px(8.0), 1.0, f.px(3.0), cv2.LINE_AA)
    return canvas


PATTERNS = (
    _p_nucleoplasm, _p_nuclear_membrane, _p_nucleoli, _p_fibrillar_center, _p_speckles, _p_nuclear_bodies,
    _p_er, _p_golgi, _p_peroxisomes, _p_endosomes, _p_lysosomes, _p_intermediate_filaments, _p_actin,
    _p_focal_adhesions, _p_microtubules, _p_microtubule_ends, _p_cytokinetic_bridge, _p_mitotic_spindle,
    _p_mtoc, _p_centrosome, _p_lipid_droplets, _p_plasma_membrane, _p_cell_junctions, _p_mitochondria,
    _p_aggresome, _p_cytosol, _p_cytoplasmic_bodies, _p_rods_rings,
)
assert len(PATTERNS) == NUM_CLASSES


def _nucleoli(f, rng):
    """Two nucleoli per nucleus: (their map, [(x, y, radius)])."""
    nucleoli = np.zeros((f.size, f.size), np.float32)
    centres = []
    for i in range(len(f.cells)):
        for x, y in f.sample_points(f.cell_region(i, f.nucleus & (f.nuc_dist < 0.5)), 2):
            r = f.px(5.5) * rng.uniform(0.85, 1.1)
            cv2.circle(nucleoli, (int(x), int(y)), int(round(r)), 1.0, -1, cv2.LINE_AA)
            centres.append((x, y, r))
    return nucleoli * f.nucleus, centres


def _partner_cells(f):
    """(centre, partner centre, radius) of the two closest cells, for a bridge or a junction."""
    centers = np.array([c["center"] for c in f.cells])
    if len(f.cells) > 1:
        dists = np.linalg.norm(centers[:, None] - centers[None], axis=-1) + np.eye(len(centers)) * 1e9
        a = int(np.argmin(dists.min(1)))
        b = int(np.argmin(dists[a]))
        return centers[a], centers[b], min(f.cells[a]["radius"], f.cells[b]["radius"])
    # A lone cell (zoomed fields): its partner lies beyond the field's edge, on the side of the
    # cell that faces the field's centre.
    c = f.cells[0]
    towards = np.array([f.size / 2, f.size / 2]) - c["center"]
    norm = np.linalg.norm(towards)
    towards = towards / norm if norm > 1 else np.array([1.0, 0.0])
    return c["center"], c["center"] + 2.2 * c["radius"] * towards, c["radius"]


def render_field(rng, size, labels, zoom=1.0):
    """One synthetic field: (uint8 (size, size, 4) in CHANNELS order, {class: bool mask})."""
    f = Field(rng, size, zoom)
    red, tips = _microtubules(f)
    yellow = _reticulum(f)
    nucleoli, centres = _nucleoli(f, rng)
    pair = _partner_cells(f)
    ctx = dict(red=cv2.GaussianBlur(red, (0, 0), 0.6 * f.scale + 0.3), yellow=yellow, tips=tips,
               nucleoli=nucleoli, nucleoli_region=nucleoli > 0.3, nucleoli_centres=centres, pair=pair,
               mitotic=int(rng.integers(len(f.cells))))

    green = np.zeros((size, size), np.float32)
    masks = {}
    grow = np.ones((f.px(2.0) * 2 + 1,) * 2, np.uint8)
    for c in labels:
        pattern = PATTERNS[c](f, ctx).astype(np.float32)
        pattern = cv2.GaussianBlur(pattern, (0, 0), 0.5 * f.scale + 0.2)
        green = np.maximum(green, pattern * rng.uniform(0.8, 1.0))
        masks[c] = cv2.dilate((pattern > 0.2 * max(pattern.max(), 1e-6)).astype(np.uint8), grow) > 0

    gain = np.zeros((size, size), np.float32)
    for i, c in enumerate(f.cells):
        gain[f.cell_id == i] = c["gain"]
    blue = f.nucleus * (0.55 + 0.45 * f.blob_noise(2.5)) * (1 - 0.5 * (ctx["nucleoli"] > 0.3))
    planes = {
        "red": 0.85 * ctx["red"] * gain + 0.12 * f.cyto * gain,
        "green": green * np.maximum(gain, 0.8),
        "blue": cv2.GaussianBlur(blue.astype(np.float32), (0, 0), 0.8 * f.scale) * gain,
        "yellow": 0.7 * cv2.GaussianBlur(yellow.astype(np.float32), (0, 0), 0.5 * f.scale) * gain,
    }
    out = []
    for name in CHANNELS:
        level = rng.uniform(170, 240)
        noisy = planes[name] * level + rng.normal(0, 3.0, (size, size)) + rng.uniform(0, 6)
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return np.stack(out, -1), masks


# --------------------------------------------------------------------------- writing


def synthetic_id(rng):
    """A Kaggle-style UUID Id, drawn from the generator's own random stream."""
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def write_sample(folder, sample_id, sample):
    for i, name in enumerate(CHANNELS):
        path = Path(folder) / f"{sample_id}_{name}.png"
        ok, buf = cv2.imencode(".png", sample[..., i])
        if not ok:
            raise OSError(f"{path}: PNG encoding failed")
        atomic_write_bytes(path, buf.tobytes())


def _render_and_write(job):
    sample_id, seed, classes, size, zoom, folder, mask_dir = job
    sample, masks = render_field(np.random.default_rng(seed), size, classes, zoom)
    write_sample(folder, sample_id, sample)
    np.savez_compressed(mask_dir / f"{sample_id}.npz", **{f"c{c}": m for c, m in masks.items()})


def _write_split(out, split, n, size, zoom, rng, min_per_class, progress, workers):
    labels = sample_labels(n, rng, min_per_class)
    folder, mask_dir = out / split, out / "masks"
    folder.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    # Ids and per-field seeds are drawn in order from one stream, so the files do not depend
    # on how many processes render them.
    jobs = [(synthetic_id(rng), int(rng.integers(2 ** 63)), classes, size, zoom, folder, mask_dir) for classes in labels]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(progress(pool.map(_render_and_write, jobs, chunksize=8), total=n, desc=f"synth {split}", unit="img"))
    else:
        for job in progress(jobs, desc=f"synth {split}", unit="img"):
            _render_and_write(job)
    return [(job[0], format_target(job[2])) for job in jobs]


def generate(out, images, size=512, seed=0, min_per_class=25, test_images=0, progress=None, workers=None, zoom=1.0):
    """Write a synthetic dataset; returns the train rows [(Id, Target)]."""
    progress = progress or (lambda it, **_: it)
    workers = workers or os.cpu_count() or 1
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = _write_split(out, "train", images, size, zoom, rng, min_per_class, progress, workers)
    record = {"kind": "synthetic", "generator": "python -m train synth", "images": images, "test_images": test_images,
              "size": size, "zoom": zoom, "seed": seed, "min_per_class": min_per_class}
    atomic_write_text(out / DATASET_RECORD, json.dumps(record, indent=1) + "\n")
    atomic_write_text(out / "train.csv", "Id,Target\n" + "".join(f"{i},{t}\n" for i, t in rows))
    if test_images:
        test_rng = np.random.default_rng([seed, 1])
        test_rows = _write_split(out, "test", test_images, size, zoom, test_rng, min_per_class, progress, workers)
        atomic_write_text(out / "test_labels.csv", "Id,Target\n" + "".join(f"{i},{t}\n" for i, t in test_rows))
        atomic_write_text(out / "sample_submission.csv", "Id,Predicted\n" + "".join(f"{i},0\n" for i, _ in test_rows))
    return rows


def load_masks(path):
    """{class: bool mask} from a synthetic mask file."""
    with np.load(path) as data:
        return {int(k[1:]): data[k] for k in data.files}


def gallery(out, size=128, zoom=2.4, seed=0):
    """A PNG with one synthetic field per class: the HPA composite and the green channel alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.classes import CLASS_NAMES
    from runtime.composite import composite

    fig, axes = plt.subplots(8, 7, figsize=(14, 17))
    for c in range(NUM_CLASSES):
        sample, _ = render_field(np.random.default_rng([seed, c]), size, [c], zoom)
        row, col = 2 * (c // 7), c % 7
        axes[row, col].imshow(composite(sample))
        axes[row + 1, col].imshow(sample[..., 1], cmap="gray", vmin=0, vmax=255)
        axes[row, col].set_title(f"{c} {CLASS_NAMES[c]}", fontsize=8)
        axes[row + 1, col].set_title("green", fontsize=7, color="green")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Synthetic fields, one class each: RGBY composite (yellow as red+green) and the green channel", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(out, dpi=65)
    plt.close(fig)
    return out
