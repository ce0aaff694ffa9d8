"""The window's file actions: File > Open image folder, File > Open model, a folder dropped on
the window, Copy Id, the provenance banner and the pixel size read from the files.

A mixin of viewer.window.MainWindow (it uses the window's session, workers, state and panels),
kept here so the window file stays about layout and data flow. What a folder is comes from
viewer.open_model; reading it runs on the images worker, so a slow disk never blocks the GUI.
"""

from pathlib import Path

from PyQt5 import QtCore, QtWidgets

from viewer import open_model
from viewer.controls import PIXEL_TIP

# where the scale bar's pixel size comes from: the files (TIFF calibration, per field), or the
# user (--pixel-size, or a value typed in the pixel box), which overrides the files
FROM_FILES, FROM_USER = "files", "user"


class FileActions:
    # ------------------------------------------------------------------ opening
    def open_path(self, path, want=None):
        """Open ``path`` as what it is (viewer.open_model): an image folder replaces the images
        and keeps the models, a deployment folder or a training run replaces the models and keeps
        the images. Read on the images worker; the result arrives in ``_got_open``, a failure is
        a dialog with one line."""
        self.statusBar().showMessage(f"opening {path}...")
        self.images.request("open", lambda: (path, *open_model.load(path, want)))

    def _got_open(self, value):
        path, kind, opened = value
        if kind == open_model.IMAGES:
            self.open_folder(dataset=opened)
        else:
            self.switch_models(opened)
        self.statusBar().showMessage(f"opened {path} ({kind})", 8000)

    def switch_models(self, models):
        """Another model on the same images: the Id on screen stays, its predictions are asked
        again, the replaced models are closed once no worker can still be using them."""
        old, keep = self.session.models, self.state.sample_id
        self.session = self.session.with_models(models)
        self.cam_controls.set_folds(models.folds)
        self.state.update(cam_fold="mean", sample_id="")
        self.show_provenance()
        self._retire(old)
        self._populate(keep)

    def _retire(self, models):
        # each worker runs its requests in order: once both have run this one, every request that
        # captured the old models is done, and closing them (ONNX sessions, torch models) is safe
        self._retiring = getattr(self, "_retiring", {})
        self._retiring[id(models)] = [models, 2]
        for worker in (self.images, self.cams):
            worker.request("retire", lambda: models, supersede=False)

    def _got_retire(self, models):
        entry = self._retiring.get(id(models))
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del self._retiring[id(models)]
                models.close()

    def _open_dialog(self):
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open image folder")
        if folder:
            self.open_path(folder, want="images")

    def _open_model_dialog(self):
        folder = QtWidgets.QFileDialog.getExistingDirectory(
            self, "Open model: a deployment folder (model.json) or a training run (config.json)")
        if folder:
            self.open_path(folder, want="model")

    # ------------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, event):  # noqa: N802 - Qt's name
        event.setAccepted(dropped_folder(event.mimeData()) is not None)

    def dragMoveEvent(self, event):  # noqa: N802
        event.setAccepted(dropped_folder(event.mimeData()) is not None)

    def dropEvent(self, event):  # noqa: N802
        folder = dropped_folder(event.mimeData())
        if folder is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_path(folder)

    # ------------------------------------------------------------------ small actions
    def copy_id(self):
        """Put the Id on screen on the clipboard (the image menu's Copy Id)."""
        if self.current.sample_id:
            QtWidgets.QApplication.clipboard().setText(self.current.sample_id)
            self.statusBar().showMessage(f"copied {self.current.sample_id}", 4000)

    def show_provenance(self):
        """The banner above the bars: shown where the model's training data is known to be synthetic."""
        text = self.models.provenance_warning()
        self.provenance_label.setText(text)
        self.provenance_label.setToolTip(_provenance_tooltip(self.models.training_data()))
        self.provenance_label.setVisible(bool(text))
        name = self.models.model_path or self.models.run_path
        name = Path(name).parent if name and Path(name).name == "model.json" else name
        self.setWindowTitle("HPA viewer" + (f" - {Path(name).name}" if name else "") +
                            (" (synthetic training data)" if text else ""))

    # ------------------------------------------------------------------ pixel size
    def set_pixel_size(self, um, source=FROM_USER):
        """The scale bar's pixel size: from the user (``--pixel-size``, the box) it overrides the
        files until set back to 0 (unknown), which returns to reading the files."""
        self.pixel_size_source = FROM_USER if um > 0 and source == FROM_USER else FROM_FILES
        self.state.update(pixel_size=float(um))
        if self.pixel_size_source == FROM_FILES and self.current.sample is not None:
            self.apply_file_pixel_size(self.current.sample_id)

    def apply_file_pixel_size(self, sample_id):
        """After a load: the calibration its TIFF files record (viewer.calibration), unless the user set one."""
        if getattr(self, "pixel_size_source", FROM_FILES) == FROM_USER:
            return
        found = self.session.dataset.pixel_sizes.get(sample_id)
        self.state.update(pixel_size=found.um if found is not None else 0.0)
        self.channel_controls.pixel.setToolTip(
            f"read from {found.source}; type a value to override" if found is not None else
            PIXEL_TIP)


def dropped_folder(mime):
    """The one local folder a drag carries, or None (files, several items, remote URLs)."""
    urls = mime.urls() if mime is not None and mime.hasUrls() else []
    if len(urls) != 1 or not urls[0].isLocalFile():
        return None
    path = urls[0].toLocalFile()
    return path if QtCore.QFileInfo(path).isDir() else None


def _provenance_tooltip(record):
    if not record:
        return ""
    return "\n".join(f"{k}: {v}" for k, v in record.items())
