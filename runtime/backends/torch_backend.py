"""The PyTorch reference: the run's checkpoints through ``train``, imported only when entered.

This is the one place ``runtime`` touches torch, and only inside ``_load``: importing this module
costs nothing, so a deployment box without torch never notices it.
"""

from pathlib import Path

import numpy as np

from runtime.backends.base import Backend, BackendUnavailable


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, spec, model_file=None, model="ensemble", device=None):
        super().__init__(spec, model_file)
        self.model = model
        self.device_name = device
        self.models = []

    @property
    def description(self):
        return f"torch-{self.device} ({self.model}, fp32 checkpoints)"

    def _load(self):
        try:
            import torch

            from train.checkpoint import model_from_checkpoint
        except ImportError as err:
            raise BackendUnavailable(f"the torch backend needs PyTorch and the train package ({err})") from None
        from runtime.errors import DataError
        from runtime.model_spec import sha256_of

        self.torch = torch
        self.device = self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        wanted = self.spec.data["checkpoints"]
        if self.model != "ensemble":
            wanted = [c for c in wanted if f"fold{c['fold']}" == self.model]
        for ckpt in wanted:
            path = Path(ckpt["path"])
            if not path.is_file():
                raise DataError(path, "checkpoint listed in model.json is missing")
            if sha256_of(path) != ckpt["sha256"]:
                raise DataError(path, "checkpoint sha256 does not match model.json")
            model, _, pp, _ = model_from_checkpoint(path)
            if pp != self.spec.preprocess:
                raise DataError(path, "checkpoint preprocessing differs from model.json")
            self.models.append(model.to(self.device).eval())

    def _infer(self, batch):
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            probs = torch.stack([torch.sigmoid(m(x)) for m in self.models]).mean(0)
        return probs.float().cpu().numpy().astype(np.float32)

    def _free(self):
        self.models = []
