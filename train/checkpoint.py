"""Checkpoints are plain dicts of state dicts and config, saved atomically and loaded with
``torch.load(weights_only=True)``: loading never runs code from the file.

``model_from_checkpoint`` checks a checkpoint for meaning before it builds anything from it: the
config's and preprocessing's types and ranges, the class names, and that the state dict has
exactly the tensors, shapes and dtypes of the model its config describes (that model is built on
PyTorch's ``meta`` device first, which allocates no memory, see ``_ShapesOnly``). Every fault is one DataError naming
the checkpoint, never a TypeError, an allocator error or a NaN prediction later."""

import io
import pickle
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from runtime.classes import CLASS_NAMES
from runtime.errors import DataError, loading
from runtime.model_spec import read_verified
from runtime.preprocess import Preprocess
from runtime.regular import open_regular
from runtime.writeutil import atomic_path
from train.config import FitConfig
from train.model import ARCHS, ATTENTIONS, build_model

REQUIRED = ("model", "config", "preprocess")

def save_checkpoint(path, model, cfg, pp, **extra):
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"model": state, "config": cfg.to_dict(), "preprocess": pp.to_dict(),
               "class_names": list(CLASS_NAMES), **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path, sha256=None):
    """The checkpoint dict; a clear DataError for a missing, corrupt or foreign file. With
    ``sha256`` (model.json's), the file is read once, checked, and those very bytes are loaded."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "checkpoint not found")
    if sha256 is not None:
        source = io.BytesIO(read_verified(path, sha256))
    else:  # a FIFO or a device never blocks or floods the read (runtime.regular)
        handle, _ = open_regular(path)
        with handle:
            source = io.BytesIO(handle.read())
    with loading(path, "not a readable checkpoint: damaged, or not a PyTorch file"):  # torch raises many types
        try:
            payload = torch.load(source, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # torch's own message is a page of advice about weights_only
            why = ("it holds Python objects other than tensors and plain data, which are never unpickled: a file "
                   "from another program?" if "Unsupported global" in str(err) else "not a PyTorch checkpoint file")
            raise DataError(path, f"not a readable checkpoint ({why})") from None
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED):
        raise DataError(path, f"not a toolkit checkpoint (needs keys {', '.join(REQUIRED)})")
    return payload


def checked_settings(path, ckpt):
    """(FitConfig, Preprocess) of a loaded checkpoint, after checking their types and the ranges
    that building the model depends on (FitConfig and Preprocess check theirs when made);
    DataError naming ``path`` otherwise."""
    try:
        cfg = FitConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as err:
        raise DataError(path, str(err) if str(err).startswith("config") else f"config: {err}") from None
    try:
        pp = Preprocess.from_dict(ckpt["preprocess"])
    except (TypeError, ValueError) as err:
        raise DataError(path, f"preprocess: {err}") from None
    for name, valid in (("arch", ARCHS), ("attention", ATTENTIONS)):
        if getattr(cfg, name) not in valid:
            raise DataError(path, f"config.{name} {getattr(cfg, name)!r:.60} is not one of {', '.join(valid)}")
    if "class_names" in ckpt and ckpt["class_names"] != list(CLASS_NAMES):
        raise DataError(path, f"class_names differ from the {len(CLASS_NAMES)} HPA classes this toolkit predicts")
    return cfg, pp


def check_state(path, state, expected):
    """Refuse a state dict that is not exactly ``expected``'s keys with tensors of their shapes,
    finite floating-point weights where the model has them."""
    if not isinstance(state, dict):
        raise DataError(path, f"model is {type(state).__name__}, expected a state dict of tensors")
    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    if missing or unexpected:
        what = f"lacks {missing[0]!r}" if missing else f"has {unexpected[0][:60]!r}"
        raise DataError(path, f"weights do not fit the model its config describes: the state dict {what} "
                              f"({len(missing)} missing, {len(unexpected)} unexpected)")
    for key, want in expected.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or got.layout != torch.strided:
            raise DataError(path, f"model[{key!r}] is {type(got).__name__}, expected a dense tensor")
        if tuple(got.shape) != tuple(want.shape):
            raise DataError(path, f"model[{key!r}] has shape {tuple(got.shape)}, the model its config describes "
                                  f"{tuple(want.shape)}")
        if got.is_floating_point() != want.is_floating_point() or got.is_complex():
            raise DataError(path, f"model[{key!r}] holds {got.dtype}, expected {want.dtype}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise DataError(path, f"model[{key!r}] holds NaN or infinite values")


class _ShapesOnly(TorchFunctionMode):
    """Inside ``with torch.device("meta"), _ShapesOnly():`` a model is built as shapes only:
    no memory, and random initialisation skipped. *Decision*: on meta tensors ``normal_`` runs
    PyTorch's Python reference kernel, which imports torch._dynamo and with it triton, the import
    the viewer's CAM stack must never make (viewer/cam.py says why); initial values are
    meaningless here anyway."""

    _RANDOM = (torch.Tensor.normal_, torch.Tensor.uniform_)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._RANDOM:
            return args[0]
        return func(*args, **(kwargs or {}))


def model_from_checkpoint(path, sha256=None):
    """(model in eval mode, FitConfig, Preprocess, checkpoint dict). With ``sha256``, the bytes
    loaded are the ones checked against it."""
    ckpt = load_checkpoint(path, sha256)
    cfg, pp = checked_settings(path, ckpt)
    with torch.device("meta"), _ShapesOnly():  # nothing is allocated before the weights are known to fit
        expected = build_model(cfg.arch, cfg.attention, cfg.width, dropout=cfg.dropout).state_dict()
    check_state(path, ckpt["model"], expected)
    model = build_model(cfg.arch, cfg.attention, cfg.width, dropout=cfg.dropout)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise DataError(path, f"weights do not fit {cfg.arch} width {cfg.width} ({str(err).splitlines()[0][:120]})") from None
    return model.eval(), cfg, pp, ckpt
