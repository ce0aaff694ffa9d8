"""Class activation maps from the PyTorch checkpoints: the viewer's torch side.

Only this module and ``viewer/score_cam.py`` import torch; the rest of the viewer never does.

Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhyay et al. 2018) and LayerCAM (Jiang et
al. 2021) are a few lines each and are computed here rather than through the grad-cam package.
*Decision*, three reasons:

- grad-cam imports torchvision, whose ``ops`` import ``torch._dynamo`` and with it triton.
  triton's bundled LLVM segfaults against Mesa's libLLVM, which Qt's xcb GL integration loads
  into the process as soon as a window is shown (every first CAM on a Linux desktop
  with Mesa graphics would crash the viewer). Without torchvision the CAM stack never loads triton;
  ``tests/test_viewer_cam.py`` checks that in a fresh interpreter. It also makes the first CAM
  ~4 s faster (torchvision + dynamo + triton is 6 s of imports on a 2-core Xeon, torch alone 2 s).
- grad-cam's context manager returns True from ``__exit__`` on IndexError, so a bad class index
  came back as a NaN map with a printed message. Here requests are validated first and the hooks
  are owned by :class:`LayerTap`, whose ``__exit__`` removes them and never swallows anything.
- grad-cam min-max normalises each map before returning it; the viewer needs to know whether
  there was any positive evidence at all (an all-zero map is reported, not stretched).

A gradient map is computed on two residual stages' outputs (:func:`target_layers`), for the
class's logit, one target per image (a batch explains each image's own class); each stage's map
is upsampled to the model's input size and scaled to peak 1, and the two are averaged. Like the
probabilities, maps are averaged over the test-time views (each turned back onto the original
image) and over the folds, then scaled to peak 1 again.
"""

from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from runtime.errors import DataError
from runtime.tta import predict_views, views as tta_views
from train.checkpoint import model_from_checkpoint
from train.model import CBAM
from viewer.cam_request import check_cam_request

GRADIENT_METHODS = ("gradcam", "gradcam++", "layercam")


class LayerTap:
    """Keeps one module's forward output while the ``with`` block runs.

    The forward hook is registered in ``__enter__`` and removed in ``__exit__`` (which returns
    False: exceptions inside the block propagate unchanged)."""

    def __init__(self, module):
        self.module = module
        self.output = None
        self._handle = None

    def __enter__(self):
        self._handle = self.module.register_forward_hook(self._keep)
        return self

    def _keep(self, _module, _inputs, output):
        self.output = output

    def __exit__(self, *exc):
        self._handle.remove()
        self._handle = None
        self.output = None
        return False


def target_layers(model, size, min_cells=12, count=2):
    """The residual stages whose outputs the gradient CAMs explain: the ``count`` deepest whose
    maps are at least ``min_cells`` wide for this input size (their last blocks).

    At the demo's 96 pixels that is ``layer2`` (12x12) and ``layer1`` (24x24); at 256 pixels
    ``layer3`` and ``layer2``; at 512 ``layer4`` (16x16) and ``layer3``. *Decision*, from the
    pointing game on the demo model (docs/viewer.md, "Localisation"): the usual single deepest
    stage is too coarse for compartments a few pixels wide (``layer4`` is 3x3 at 96 px and points
    at a third of the field: Grad-CAM 0.29, below the image centre's 0.34), and the finest stage
    alone is less class-specific; two neighbouring stages, each map scaled to peak 1 and then
    averaged, beat either alone (Grad-CAM 0.820 against 0.733 and 0.757, with 4 views)."""
    stages = [(model.layer4, 32), (model.layer3, 16), (model.layer2, 8), (model.layer1, 4)]
    fit = [stage[-1] for stage, stride in stages if size // stride >= min_cells]
    return (fit or [model.layer1[-1]])[:count]


def gradient_cams(model, x, classes, method, layers):
    """Raw (N, h, w) maps, >= 0, one per layer on that layer's grid, for float32 tensor ``x``
    (N, 4, S, S) and one class per image; one forward and one backward pass for all layers.
    Nothing is normalised here."""
    if method not in GRADIENT_METHODS:
        raise ValueError(f"unknown gradient CAM method {method!r}; valid: {', '.join(GRADIENT_METHODS)}")
    index = torch.as_tensor(classes, dtype=torch.long)[:, None]
    with ExitStack() as hooks, torch.enable_grad():
        taps = [hooks.enter_context(LayerTap(layer)) for layer in layers]
        logits = model(x)
        activations = [tap.output for tap in taps]
        # one target per image: the sum of each image's own class logit
        grads = torch.autograd.grad(logits.gather(1, index).sum(), activations)
    return [_weigh(a.detach(), g.detach(), method) for a, g in zip(activations, grads)]


def gradient_cams_shared(model, x, classes, method, layers):
    """Raw maps of ONE image ``x`` (1, 4, S, S) for several classes: per layer a (K, h, w) tensor,
    one row per class. The forward pass is shared by every class (one forward, then one backward
    per class through the kept graph), so K maps cost one forward and K backwards instead of K of
    each. Row k equals ``gradient_cams(model, x, [classes[k]], ...)``."""
    if method not in GRADIENT_METHODS:
        raise ValueError(f"unknown gradient CAM method {method!r}; valid: {', '.join(GRADIENT_METHODS)}")
    if len(x) != 1:
        raise ValueError(f"one image for a shared forward pass, got {len(x)}")
    per_class = []
    with ExitStack() as hooks, torch.enable_grad():
        taps = [hooks.enter_context(LayerTap(layer)) for layer in layers]
        logits = model(x)
        activations = [tap.output for tap in taps]
        for k, c in enumerate(classes):
            grads = torch.autograd.grad(logits[0, int(c)], activations, retain_graph=k < len(classes) - 1)
            per_class.append([_weigh(a.detach(), g.detach(), method) for a, g in zip(activations, grads)])
    return [torch.cat([maps[i] for maps in per_class]) for i in range(len(layers))]


def _weigh(a, g, method):
    if method == "gradcam":
        cam = (g.mean(dim=(2, 3), keepdim=True) * a).sum(1)
    elif method == "gradcam++":
        g2 = g * g
        alpha = g2 / (2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g + 1e-6)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        cam = ((F.relu(g) * alpha).sum(dim=(2, 3), keepdim=True) * a).sum(1)
    else:  # layercam
        cam = (F.relu(g) * a).sum(1)
    return F.relu(cam)


def spatial_attention(model, x):
    """The last block's CBAM spatial attention, (N, h, w) stretched to 0..1, read through a
    forward hook on its convolution (the model itself keeps no state)."""
    block = model.layer4[-1].attention
    if not isinstance(block, CBAM):
        raise ValueError("this model has no CBAM attention to show (trained with --attention none)")
    with LayerTap(block.spatial.conv) as tap, torch.inference_mode():
        model(x)
        att = torch.sigmoid(tap.output[:, 0]).clone()
    # A gate is high almost everywhere; what it shows is where it is higher: stretch to 0..1.
    low = att.flatten(1).min(1).values[:, None, None]
    high = att.flatten(1).max(1).values[:, None, None]
    return (att - low) / (high - low).clamp_min(1e-8)


def upsample_unit_peak(maps, size):
    """(N, h, w) -> (N, size, size) float32 numpy, bilinear, each map scaled so its peak is 1
    (an all-zero map stays zero)."""
    up = F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    up = up.clamp_min(0).numpy()
    peak = up.reshape(len(up), -1).max(1)[:, None, None]
    return (up / np.where(peak > 0, peak, 1)).astype(np.float32)


class CamModels:
    """The fold models of a run, loaded in ``__enter__`` and dropped in ``__exit__``.

    ``checkpoints``: ``[(path, sha256 or None), ...]`` in fold order. A sha256 (model.json's) is
    checked before the file is loaded, as the runtime's torch backend does; ``preprocess``, when
    given, must equal each checkpoint's own."""

    def __init__(self, checkpoints, preprocess=None, threads=None):
        self.checkpoints = [(Path(p), sha) for p, sha in checkpoints]
        self.expected_preprocess = preprocess
        self.threads = threads
        self.models = []
        self.preprocess = preprocess

    def __enter__(self):
        if not self.checkpoints:
            raise DataError("model", "no checkpoints to load")
        if self.threads:
            # torch's thread count is per process: the viewer caps it so that torch, ONNX Runtime
            # on the other worker and the GUI do not oversubscribe the cores (OpenMP threads
            # spin-waiting on a busy 2-core machine made one CAM 10x slower: 11 s against 1 s).
            torch.set_num_threads(self.threads)
        for path, sha in self.checkpoints:
            # checked for meaning before anything is built; with a sha256, the bytes it covers are loaded
            model, _, pp, _ = model_from_checkpoint(path, sha)
            if self.expected_preprocess is not None and pp != self.expected_preprocess:
                raise DataError(path, "checkpoint preprocessing differs from model.json")
            self.models.append(model.eval())
            self.preprocess = pp
        return self

    def __exit__(self, *exc):
        self.models = []
        return False

    @property
    def folds(self):
        return len(self.models)

    def _pick(self, fold):
        return self.models if fold == "mean" else [self.models[int(str(fold)[4:])]]

    def probabilities(self, x, fold="mean", views=1):
        """(N, 28) probabilities of float32 (N, 4, S, S) inputs, averaged over ``views``
        test-time views (runtime.tta) and over the chosen models."""
        check_cam_request([0] * len(x), "gradcam", fold, self.folds)

        def infer(batch):
            with torch.inference_mode():
                t = torch.from_numpy(np.ascontiguousarray(batch))
                return torch.stack([torch.sigmoid(m(t)) for m in self._pick(fold)]).mean(0).numpy()

        return predict_views(infer, np.asarray(x, np.float32), views)

    def cam(self, x, classes, method="gradcam", fold="mean", views=1):
        """(N, S, S) maps in 0..1 (peak 1, or all zero when the model found no positive evidence)
        for float32 (N, 4, S, S) inputs, one class per image, averaged over the chosen models and
        over ``views`` test-time views (each view's map turned back onto the original image), the
        views the probabilities were averaged over. Raises on a bad request or a non-finite
        result; never returns NaN."""
        classes = check_cam_request(classes, method, fold, self.folds)
        x = np.ascontiguousarray(x, np.float32)
        if len(classes) != len(x):
            raise ValueError(f"one class per image: {len(classes)} classes for {len(x)} images")
        return self._averaged(x, len(x), method, fold, views, gradient_cams, classes)

    def cam_classes(self, x, classes, method="gradcam", fold="mean", views=1):
        """(K, S, S) maps of ONE image (1, 4, S, S) for K classes, as :meth:`cam` would give them
        one by one, with each view's forward pass shared by the K classes
        (:func:`gradient_cams_shared`). The viewer's strip of maps uses it."""
        classes = check_cam_request(classes, method, fold, self.folds)
        x = np.ascontiguousarray(x, np.float32)
        if len(x) != 1 or not classes:
            raise ValueError(f"one image and at least one class, got {len(x)} image(s) and {len(classes)} class(es)")
        return self._averaged(x, len(classes), method, fold, views, gradient_cams_shared, classes)

    def _averaged(self, x, n, method, fold, views, gradient_fn, classes):
        size = x.shape[-1]
        total = np.zeros((n, size * size), np.float64)
        count = 0
        for view, origin in zip(tta_views(x, views), _view_origins(size, views)):
            t = torch.from_numpy(view)
            for model in self._pick(fold):
                if method == "cbam-attention":  # one class-blind map: the same for every class
                    maps = [spatial_attention(model, t).expand(n, -1, -1)]
                else:
                    maps = gradient_fn(model, t, classes, method, target_layers(model, size))
                combined = np.mean([upsample_unit_peak(m, size) for m in maps], axis=0)
                # view pixel p shows original pixel origin[p]: put each value back where it came from
                total[:, origin] += combined.reshape(n, -1)
                count += 1
        out = (total / count).reshape(n, size, size)
        peak = out.reshape(n, -1).max(1)[:, None, None]
        out = (out / np.where(peak > 0, peak, 1)).astype(np.float32)  # the averaged map's peak is 1 again
        if not np.isfinite(out).all():
            raise RuntimeError(f"{method} produced non-finite values for class(es) {classes}")
        return out


def _view_origins(size, views):
    """For each test-time view, the original flat pixel index shown at each of its pixels (the
    views themselves come from runtime.tta, applied to an image of indices)."""
    index = np.arange(size * size).reshape(1, 1, size, size)
    return [v.reshape(-1) for v in tta_views(index, views)]

