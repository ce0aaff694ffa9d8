"""What a folder is, told by what it holds: one function for File > Open image folder,
File > Open model and a folder dropped on the window.

- a **deployment folder**: ``model.json`` (``python -m export onnx``): predictions through runtime,
  CAMs from the checkpoints it lists;
- a **training run**: ``config.json`` (``python -m train fit``): predictions and CAMs from its
  PyTorch checkpoints;
- an **image folder**: channel files ``{Id}_red/_green/_blue/_yellow`` (or a Kaggle ``train/``
  below it).

Anything else is a one-line DataError naming the folder and what was expected. :func:`load`
also builds what the folder is (a Dataset or Models): it reads files, so the window runs it on
its worker, never on the GUI thread.
"""

from pathlib import Path

from runtime.errors import DataError

IMAGES, DEPLOYMENT, RUN = "image folder", "deployment folder", "training run"
EXPECTED = ("an image folder ({Id}_red/_green/_blue/_yellow.png, .jpg or .tif), a deployment folder "
            "(model.json, from python -m export onnx) or a training run (config.json, from python -m train fit)")
MODEL_EXPECTED = ("a deployment folder (model.json, from python -m export onnx) or a training run "
                  "(config.json and its fold checkpoints, from python -m train fit)")


def classify(path):
    """IMAGES, DEPLOYMENT or RUN for the folder ``path``; DataError for anything else."""
    from viewer.session import Dataset

    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "not a folder" if path.exists() else "folder not found")
    if (path / "model.json").is_file():
        return DEPLOYMENT
    if (path / "config.json").is_file():
        return RUN
    dataset = Dataset(path)
    if dataset.ids or dataset.problems:
        return IMAGES
    raise DataError(path, f"nothing here to open: expected {EXPECTED}")


def load(path, want=None):
    """(kind, what): (IMAGES, Dataset) or (DEPLOYMENT | RUN, Models) for the folder ``path``.
    ``want="model"`` (File > Open model) refuses an image folder, ``want="images"`` a model, each
    in one line saying which menu entry opens it."""
    from viewer.session import Dataset, Models

    kind = classify(path)
    if want == "model" and kind == IMAGES:
        raise DataError(path, f"is an image folder, not a model (File > Open image folder opens it); "
                              f"a model is {MODEL_EXPECTED}")
    if want == "images" and kind != IMAGES:
        raise DataError(path, f"is a {kind}, not an image folder (File > Open model opens it)")
    if kind == IMAGES:
        return kind, Dataset(path)
    return kind, (Models(model=path) if kind == DEPLOYMENT else Models(run=path))
