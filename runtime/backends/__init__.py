"""Inference backends behind one contract (see base.py). Heavy imports (tensorrt, cuda, torch)
happen inside each backend's own module when it is entered, never on import of this package."""

from runtime.backends.base import Backend, BackendUnavailable, available_backends
from runtime.backends.factory import make_backend

__all__ = ["Backend", "BackendUnavailable", "available_backends", "make_backend"]
