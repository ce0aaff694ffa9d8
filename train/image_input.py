"""The 8-bit image in, the network's float input out, in torch.

``Normalize`` computes what ``runtime.preprocess.normalize`` computes, step by step in float32 and
in the same order (x = float32(pixel) * float32(1/255), then (x - mean[c]) / std[c]), so a graph
that takes the image itself gives the network the same tensor, bit for bit, as the host did.
Export wraps every ONNX graph in ``ImageInput`` (model.json version 3: the graph takes the resized
uint8 image, channels first); the runtime's torch backend normalises its batches with it on its
device.
"""

import torch
from torch import nn


class Normalize(nn.Module):
    """uint8 (N, 4, S, S) -> float32 (N, 4, S, S), normalised with ``pp``'s mean and std."""

    def __init__(self, pp):
        super().__init__()
        self.register_buffer("scale", torch.tensor(1.0 / 255.0, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(pp.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(pp.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image):
        x = image.to(torch.float32) * self.scale
        return (x - self.mean) / self.std


class ImageInput(nn.Module):
    """``model`` behind ``Normalize``: the uint8 image in, ``model``'s outputs out. The ONNX
    exporter names the normalisation's nodes ``/normalize/...`` (export.onnx_export finds them
    there to keep them in float32 in the FP16 and INT8 files)."""

    def __init__(self, model, pp):
        super().__init__()
        self.normalize = Normalize(pp)
        self.model = model

    def forward(self, image):
        return self.model(self.normalize(image))
