"""The PyTorch reference: the run's checkpoints through ``train``, imported only when entered.

This is the one place ``runtime`` touches torch, and only inside ``_load``: importing this module
costs nothing, so a deployment box without torch never notices it. It takes the uint8 image batch
and normalises it on its device (``train.image_input.Normalize``, runtime.preprocess's formula),
so a GPU receives a quarter of float32's bytes.

On CUDA (what docs/gpu.md measured fastest for PyTorch, issue 23):
- each batch is copied into a pinned (page-locked) host buffer the backend keeps and reuses, then
  to the device with ``non_blocking=True`` on the current stream, and normalised there;
- the models and the input run channels_last (NHWC), which cuDNN's tensor-core convolutions prefer;
- ``--precision fp16`` runs them under ``torch.autocast(float16)`` (the weights stay FP32; the
  sigmoid and the mean over folds are taken in FP32).
On the CPU it runs FP32, NCHW, as the checkpoints were trained: ``fp16`` is refused there (autocast
on a CPU means bfloat16, which no part of the toolkit validates).
"""

import numpy as np

from runtime.backends.base import Backend, BackendUnavailable
from runtime.errors import DataError

PRECISIONS = ("fp32", "fp16")


class TorchBackend(Backend):
    name = "torch"
    options = ("channels_last",)

    def __init__(self, spec, model_file=None, device="cpu", model="ensemble", precision=None, channels_last=None):
        """``precision``: fp32 or fp16 (None: make_backend's choice, else fp32). ``channels_last``:
        None runs channels_last on CUDA and NCHW on the CPU; True or False forces it."""
        super().__init__(spec, model_file, device, model)
        if precision not in (None, *PRECISIONS):
            raise ValueError(f"the torch backend runs {' or '.join(PRECISIONS)}, not {precision}")
        self._precision = precision
        self.channels_last = channels_last
        self.models = []
        self.normalize = None
        self.pinned = None

    @property
    def precision(self):
        """fp32 or fp16: given to the constructor, else what make_backend's choice asked for."""
        return self._precision or getattr(self.choice, "precision", None) or "fp32"

    @property
    def description(self):
        what = "fp16 autocast" if self.precision == "fp16" else "fp32"
        if self.channels_last:
            what += ", channels_last"
        return f"torch-{self.device} ({self.model}, checkpoints, {what})"

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
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("the torch backend was asked for CUDA, and PyTorch sees no GPU here")
        if self.precision == "fp16" and self.device != "cuda":
            raise BackendUnavailable("--precision fp16 runs the torch backend on CUDA only (FP16 autocast); "
                                     "on the CPU it runs fp32")
        if self.channels_last is None:
            self.channels_last = self.device == "cuda"
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        wanted = [c for c in self.spec.checkpoints if self.model in ("ensemble", f"fold{c.fold}")]
        for ckpt in wanted:
            model, _, pp, _ = model_from_checkpoint(ckpt.path, ckpt.sha256)  # loads the bytes it hashed
            if pp != self.spec.preprocess:
                raise DataError(ckpt.path, "checkpoint preprocessing differs from model.json")
            self.models.append(model.to(self.device, memory_format=memory_format).eval())
        self.normalize = Normalize(self.spec.preprocess).to(self.device)
        self.memory_format = memory_format

    @property
    def host_normalizes(self):
        return False  # _infer normalises on the device

    def _to_device(self, batch):
        """The uint8 batch as a tensor on the device: through a reused pinned buffer on CUDA."""
        torch = self.torch
        host = torch.from_numpy(batch)
        if self.device != "cuda":
            return host
        if self.pinned is None or self.pinned.shape[0] < len(batch) or self.pinned.shape[1:] != host.shape[1:]:
            self.pinned = torch.empty(host.shape, dtype=torch.uint8).pin_memory()
        staged = self.pinned[:len(batch)]
        staged.copy_(host)
        # The copy is queued on the current stream; the next batch's copy into the same pinned
        # buffer happens after this call's results are read back (.cpu() below synchronises).
        return staged.to(self.device, non_blocking=True)

    def _infer(self, batch):
        torch = self.torch
        with torch.inference_mode():
            # NHWC on the uint8 image (a quarter of the bytes); normalising keeps the layout
            x = self.normalize(self._to_device(batch).contiguous(memory_format=self.memory_format))
            with torch.autocast(self.device, dtype=torch.float16, enabled=self.precision == "fp16"):
                logits = [m(x) for m in self.models]
            probs = torch.stack([torch.sigmoid(z.float()) for z in logits]).mean(0)
        return probs.cpu().numpy().astype(np.float32)

    def _free(self):
        self.models = []
        self.normalize = None
        self.pinned = None
