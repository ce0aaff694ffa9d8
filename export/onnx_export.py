"""Export a training run to ONNX: one file per fold and one fold-ensemble graph, verified.

Every graph takes the resized uint8 image ``image`` (N, 4, S, S), channels first, and normalises
it in its first nodes (``train.image_input.ImageInput``: Cast, Mul by float32(1/255), Sub mean,
Div std, named ``/normalize/...``), once at the input of an ensemble too: model.json version 3.
Channels first, as the network computes: ONNX Runtime's CPU kernels take NCHW, so the uint8
input costs the CPU path nothing (docs/benchmarks.md measures it) and a GPU receives a quarter of
float32's bytes.

Every FP32 file is verified before it is listed: ``onnx.checker``, then ONNX Runtime against
PyTorch on real images from the run's data and on random inputs at several batch sizes; it must
agree to 1e-4 on probabilities or the export fails with the figures. Reduced-precision variants
are judged on the run's out-of-fold images instead (``export.quality``).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from runtime.errors import DataError
from runtime.model_spec import INPUT_NAME, PROBS, sha256_of
from runtime.onnx_session import make_session
from runtime.preprocess import image_chw
from runtime.reader import ImageFolder
from runtime.writeutil import atomic_path
from train.checkpoint import model_from_checkpoint


OPSET = 17  # fixed: supported by ONNX Runtime >= 1.14 and TensorRT 8.6-11
FP32_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 3, 8)
PRECISIONS = ("fp32", "fp16", "int8")
NORMALIZE_SCOPE = "/normalize/"  # the names of ImageInput's nodes in an exported graph


def normalization_nodes(model):
    """Names of an exported graph's normalisation nodes (ImageInput's), in graph order."""
    return [n.name for n in model.graph.node if n.name.startswith(NORMALIZE_SCOPE)]


class ExportError(Exception):
    """An export that failed verification; the message carries the figures."""


class FoldGraph(nn.Module):
    """One fold: image -> (logits, probs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        logits = self.model(image)
        return logits, torch.sigmoid(logits)


class EnsembleGraph(nn.Module):
    """All folds in one graph: image -> mean of the folds' sigmoid probabilities."""

    def __init__(self, models):
        super().__init__()
        self.folds = nn.ModuleList(models)

    def forward(self, image):
        return torch.stack([torch.sigmoid(m(image)) for m in self.folds]).mean(0)


@dataclass
class Exported:
    """One written file and what was measured about it."""

    path: Path
    kind: str
    fold: int
    variant: str
    precision: str
    target: str
    outputs: tuple
    checks: dict = field(default_factory=dict)  # parity_vs_torch (FP32) or abs_diff_vs_fp32 (the others)

    def entry(self, root):
        return {"path": self.path.relative_to(root).as_posix(), "kind": self.kind, "fold": self.fold,
                "precision": self.precision, "target": self.target, "format": "onnx", "variant": self.variant,
                "outputs": list(self.outputs), "sha256": sha256_of(self.path), "opset": OPSET,
                "bytes": self.path.stat().st_size, **self.checks}


def export_graph(module, path, size, outputs, input_dtype=torch.uint8):
    """torch -> ONNX with a dynamic batch axis, named input 'image' of ``input_dtype`` (the
    uint8 image for an ``ImageInput``; float32 for a bare network, as a version-2 file took).

    Decision: the TorchScript-based exporter (``dynamo=False``). It needs no extra package
    (the dynamo exporter needs onnxscript), exports this graph exactly (parity 1e-6) and its
    dynamic_axes API is stable; revisit when torch removes it."""
    module = module.eval()
    dummy = torch.zeros(2, 4, size, size, dtype=input_dtype)
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(module, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=list(outputs),
                          dynamic_axes={INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
        onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    return path


def torch_probs(module, x):
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return (out[1] if isinstance(out, tuple) else out).numpy()


def parity(module, path, real_images, seed=0):
    """Max and mean |p_torch - p_onnx| over real images and random uint8 images at several batch
    sizes (``module`` and the file take the uint8 image)."""
    session = make_session(path, device="cpu")
    rng = np.random.default_rng(seed)
    worst, total, count = 0.0, 0.0, 0
    for batch in PARITY_BATCHES:
        inputs = [rng.integers(0, 256, (batch, *real_images.shape[1:]), dtype=np.uint8)]
        if len(real_images):
            inputs.append(real_images[:batch])
        for x in inputs:
            diff = np.abs(torch_probs(module, x) - session.run([PROBS], {INPUT_NAME: x})[0])
            worst = max(worst, float(diff.max()))
            total += float(diff.sum())
            count += diff.size
    return {"max_abs_diff": worst, "mean_abs_diff": total / max(count, 1), "batch_sizes": list(PARITY_BATCHES),
            "real_images": int(min(len(real_images), max(PARITY_BATCHES)))}


class RunData:
    """The run's images as the exported graphs take them (resized uint8, channels first), for
    parity, calibration and evaluation; kept once read."""

    def __init__(self, run):
        self.ids, self.folds = run.split()
        _, image_dir = run.config.dataset()
        self.available = Path(image_dir).is_dir()
        self.folder = ImageFolder(image_dir) if self.available else None
        self.pp = run.preprocess
        self._cache = {}

    def images(self, ids):
        if not ids:
            return np.zeros((0, 4, self.pp.size, self.pp.size), np.uint8)
        return np.stack([self._get(i) for i in ids])

    def _get(self, sample_id):
        if sample_id not in self._cache:
            self._cache[sample_id] = image_chw(self.folder.read(sample_id), self.pp)
        return self._cache[sample_id]

    def sample_ids(self, n, seed=0):
        rng = np.random.default_rng(seed)
        return [self.ids[i] for i in sorted(rng.choice(len(self.ids), size=min(n, len(self.ids)), replace=False))]

    def calibration_ids(self, n, seed=0):
        """The images reduced precisions are calibrated on (export onnx --calib-images, --seed)."""
        return self.sample_ids(n, seed + 1)


def load_models(run):
    """The fold models of a finished run, in fold order; each must carry the run's preprocessing."""
    run.thresholds()  # a merged run: refuse early, before anything is written
    models = []
    for path in run.checkpoints():
        model, _, pp, _ = model_from_checkpoint(path)
        if pp != run.preprocess:
            raise DataError(path, "preprocessing differs from the run's config.json; folds of one run must share it")
        models.append(model)
    return models


def eval_subset(n, limit, seed=0):
    """Indices of at most ``limit`` out-of-fold images (all of them for small runs), sorted."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
