"""User-facing errors: one line that names the file and the reason.

``DataError`` is what the toolkit raises for a bad input. ``reason_of`` turns the other errors a
user can cause (a file the OS refuses, a CSV, an image or a model a library refuses, the GPU) into
the same one line, so the command-line handler (runtime/cli.py) prints ``error: <path>: <reason>``
and never a traceback for them; any other exception is a bug and keeps its traceback."""

import csv
import pickle
import sys
from contextlib import contextmanager


class DataError(Exception):
    """A bad input file or value. ``str(err)`` is the one-line message shown to the user."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # survives pickling, so a fold process's error reaches the handler intact
        return type(self), (self.path, self.reason)


def first_line(err, limit=200):
    """``Type: first line of the message`` (libraries often append pages of advice), cut at a word
    boundary with ' ...' when longer than ``limit``."""
    text = (str(err).strip().splitlines() or [""])[0]
    if len(text) > limit:
        text = text[:text.rfind(" ", 0, limit) if " " in text[:limit] else limit] + " ..."
    return f"{type(err).__name__}: {text}".rstrip(": ")


def _is(err, module, *names):
    """isinstance against a library's class without importing the library: when it is not loaded,
    the error cannot come from it (keeps runtime free of torch; see pyproject's contracts)."""
    return sys.modules.get(module) is not None and any(
        c.__module__.split(".")[0] == module and c.__name__ in names for c in type(err).__mro__)


def _cuda(err):
    """torch's CUDA errors, and the RuntimeErrors torch and the TensorRT backend raise for the GPU."""
    head = str(err).split("\n", 1)[0]
    return (_is(err, "torch", "OutOfMemoryError", "AcceleratorError")
            or (isinstance(err, RuntimeError) and ("CUDA" in head or head.startswith("TensorRT"))))


# The optional install group (pyproject.toml's extras) that brings a third-party module: a
# runtime-only install (`pip install .`) running `python -m train` is told what to install.
_EXTRA_OF = {"torch": "train", "torchvision": "train", "iterstrat": "train", "sklearn": "train",
             "matplotlib": "train", "onnx": "export", "onnxconverter_common": "export", "tritonclient": "export",
             "polygraphy": "export", "PyQt5": "viewer", "pyqtgraph": "viewer"}


def reason_of(err):
    """``(path, reason)`` for an error a user's file, option or device causes; None for a bug.
    ``path`` is None when the error does not say which file (the caller names it if it can)."""
    if isinstance(err, DataError):
        return err.path, err.reason
    if isinstance(err, OSError):
        path = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
        return path, err.strerror or first_line(err)
    if isinstance(err, ValueError) and type(err).__module__ == "builtins":
        return None, str(err)  # the toolkit's own refusals of a bad option or value
    if isinstance(err, csv.Error):
        return None, f"malformed CSV ({err})"
    if isinstance(err, pickle.UnpicklingError):
        return None, f"not a loadable checkpoint ({first_line(err)})"
    if _is(err, "cv2", "error"):
        return None, f"OpenCV cannot process it ({getattr(err, 'err', '') or first_line(err)})"
    if _is(err, "onnxruntime", "Fail", "InvalidArgument", "RuntimeException", "InvalidGraph", "InvalidProtobuf",
           "NoSuchFile", "NoModel", "NotImplemented", "ModelLoaded", "EngineError", "EPFail"):
        return None, f"ONNX Runtime refused it ({first_line(err)})"
    if _cuda(err):
        return "cuda", first_line(err)
    top = (getattr(err, "name", None) or "").split(".")[0]
    if isinstance(err, ModuleNotFoundError) and top in _EXTRA_OF:
        return None, (f"{top} is not installed; this command needs pip install 'hpa-toolkit[{_EXTRA_OF[top]}]' "
                      "(make installs everything)")
    return None


def one_line(err):
    """The message the command line prints for ``err`` (without the ``error: `` prefix), or None
    for a bug. Control characters (a newline in a file name) are escaped: always one line."""
    found = reason_of(err)
    if found is None:
        return None
    path, reason = found
    text = reason if path is None else f"{path}: {reason}"
    return text.replace("\r", "\\r").replace("\n", "\\n")


@contextmanager
def about(path):
    """Inside the block, an error ``reason_of`` knows but that names no file becomes a DataError
    naming ``path`` (the model file an ONNX Runtime error came from, the CSV a csv.Error came from)."""
    try:
        yield
    except DataError:
        raise
    except Exception as err:
        found = reason_of(err)
        if found is None or found[0] is not None:
            raise
        raise DataError(path, found[1]) from err


@contextmanager
def loading(path, what):
    """For a third-party loader that raises any type for a bad file (``torch.load`` raises
    UnpicklingError, KeyError, RuntimeError...): every exception becomes DataError(path, what (...))."""
    try:
        yield
    except DataError:
        raise
    except Exception as err:
        raise DataError(path, f"{what} ({first_line(err)})") from err
