"""The PyTorch reference: the run's checkpoints through ``train``, imported only when entered.

This is the one place ``runtime`` touches torch, and only inside ``_load``: importing this module
costs nothing, so a deployment box without torch never notices it. It takes the uint8 image batch
and normalises it on its device (``train.image_input.Normalize``, runtime.preprocess's formula),
so a GPU receives a quarter of float32's bytes.
"""

import numpy as np

from runtime.backends.base import Backend, BackendUnavailable
from runtime.errors import DataError


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, spec, model_file=None, device="cpu", model="ensemble"):
        super().__init__(spec, model_file, device, model)
        self.models = []
        self.normalize = None

    @property
    def description(self):
        return f"torch-{self.device} ({self.model}, fp32 checkpoints)"

    def _load(self):
        try:
            import torch

            from train.checkpoint import model_from_checkpoint
            from train.image_input import Normalize
        except ImportError as err:
            raise BackendUnavailable(f"the torch backend needs PyTorch and the train package ({err})") from None
        self.torch = torch
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        wanted = [c for c in self.spec.checkpoints if self.model in ("ensemble", f"fold{c.fold}")]
        for ckpt in wanted:
            model, _, pp, _ = model_from_checkpoint(ckpt.path, ckpt.sha256)  # loads the bytes it hashed
            if pp != self.spec.preprocess:
                raise DataError(ckpt.path, "checkpoint preprocessing differs from model.json")
            self.models.append(model.to(self.device).eval())
        self.normalize = Normalize(self.spec.preprocess).to(self.device)

    @property
    def host_normalizes(self):
        return False  # _infer normalises on the device

    def _infer(self, batch):
        torch = self.torch
        with torch.inference_mode():
            x = self.normalize(torch.from_numpy(batch).to(self.device))
            probs = torch.stack([torch.sigmoid(m(x)) for m in self.models]).mean(0)
        return probs.float().cpu().numpy().astype(np.float32)

    def _free(self):
        self.models = []
        self.normalize = None
