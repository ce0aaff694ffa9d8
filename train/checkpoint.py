"""Checkpoints are plain dicts of state dicts and config, saved atomically and loaded with
``torch.load(weights_only=True)``: loading never runs code from the file."""

import pickle
from pathlib import Path

import torch

from runtime.classes import CLASS_NAMES
from runtime.errors import DataError, loading
from runtime.preprocess import Preprocess
from runtime.writeutil import atomic_path
from train.config import FitConfig
from train.model import build_model

REQUIRED = ("model", "config", "preprocess")


def save_checkpoint(path, model, cfg, pp, **extra):
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"model": state, "config": cfg.to_dict(), "preprocess": pp.to_dict(),
               "class_names": list(CLASS_NAMES), **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path):
    """The checkpoint dict; a clear DataError for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    with loading(path, "not a readable checkpoint: damaged, or not a PyTorch file"):  # torch raises many types
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # torch's own message is a page of advice about weights_only
            why = ("it holds Python objects other than tensors and plain data, which are never unpickled: a file "
                   "from another program?" if "Unsupported global" in str(err) else "not a PyTorch checkpoint file")
            raise DataError(path, f"not a readable checkpoint ({why})") from None
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED):
        raise DataError(path, f"not a toolkit checkpoint (needs keys {', '.join(REQUIRED)})")
    return payload


def model_from_checkpoint(path):
    """(model in eval mode, FitConfig, Preprocess, checkpoint dict)."""
    ckpt = load_checkpoint(path)
    cfg = FitConfig.from_dict(ckpt["config"])
    model = build_model(cfg.arch, cfg.attention, cfg.width, dropout=cfg.dropout)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise DataError(path, f"weights do not fit {cfg.arch} width {cfg.width} ({str(err).splitlines()[0][:120]})") from None
    return model.eval(), cfg, Preprocess.from_dict(ckpt["preprocess"]), ckpt
