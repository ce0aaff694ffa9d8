"""Class activation maps from the PyTorch checkpoints (the only viewer module that imports torch).

Grad-CAM, Grad-CAM++ and LayerCAM come from the grad-cam package with one target per image and
class (its issue #328: a single target silently explains only the first image of a batch). The
hooks are owned by the package's context manager and released on exit. The model's own CBAM
spatial attention of the last block is offered as a second map.
"""

import numpy as np
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from train.checkpoint import model_from_checkpoint

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM}


def target_layer(model, size, min_cells=8):
    """The deepest residual stage whose map is at least ``min_cells`` wide for this input size.

    At 256 pixels and up that is ``layer4`` (the usual Grad-CAM layer, 8x8); at the CPU demo's 64
    pixels ``layer4`` is 2x2 and could only point at a quadrant, so ``layer2`` (8x8) is used."""
    stages = [(model.layer4, 32), (model.layer3, 16), (model.layer2, 8), (model.layer1, 4)]
    for stage, stride in stages:
        if size // stride >= min_cells:
            return stage[-1]
    return model.layer1[-1]


class CamModels:
    """The fold models of a run (or the checkpoints listed in a model.json)."""

    def __init__(self, checkpoint_paths):
        self.models, self.preprocess = [], None
        for path in checkpoint_paths:
            model, _, pp, _ = model_from_checkpoint(path)
            self.models.append(model.eval())
            self.preprocess = pp

    def _pick(self, fold):
        if fold == "mean":
            return self.models
        k = int(str(fold).replace("fold", ""))
        return [self.models[k]]

    def probabilities(self, x, fold="mean"):
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x))
            return torch.stack([torch.sigmoid(m(t)) for m in self._pick(fold)]).mean(0).numpy()

    def cam(self, x, classes, method="gradcam", fold="mean"):
        """(N, S, S) maps in 0..1 for float32 (N, 4, S, S) inputs, one class per image."""
        x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        maps = []
        for model in self._pick(fold):
            if method == "cbam-attention":
                maps.append(self._attention(model, x))
                continue
            if method not in METHODS:
                raise ValueError(f"unknown CAM method {method!r}; valid: {', '.join([*METHODS, 'cbam-attention'])}")
            targets = [ClassifierOutputTarget(int(c)) for c in classes]  # one per image
            with METHODS[method](model=model, target_layers=[target_layer(model, x.shape[-1])]) as cam:
                maps.append(cam(input_tensor=x.clone(), targets=targets))
        out = np.mean(maps, axis=0).astype(np.float32)
        return out

    @staticmethod
    def _attention(model, x):
        with torch.inference_mode():
            model(x)
            att = model.attention_map()
            if att is None:
                raise ValueError("this model has no CBAM attention to show")
            att = torch.nn.functional.interpolate(att, size=x.shape[-2:], mode="bilinear", align_corners=False)
        att = att[:, 0].numpy()
        low = att.reshape(len(att), -1).min(1)[:, None, None]
        high = att.reshape(len(att), -1).max(1)[:, None, None]
        return (att - low) / np.maximum(high - low, 1e-8)
