"""Files, menus, provenance and scale in the viewer (offscreen, synchronous workers): File > Open
image folder / Open model and a dropped folder told apart by content (viewer.open_model), the
image views' own right-click menu (viewer.menus), the synthetic-training banner (model.json's
source.training_data), the pixel size read from TIFF tags (viewer.calibration) and the Id list's
elision. The real-window side is tests/test_viewer_files_window.py."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("PyQt5")
pytest.importorskip("pyqtgraph")

from PyQt5 import QtCore, QtGui, QtWidgets  # noqa: E402

from runtime.classes import CHANNELS  # noqa: E402
from runtime.errors import DataError  # noqa: E402
from viewer import menus, open_model  # noqa: E402
from viewer.app import configure  # noqa: E402
from viewer.calibration import field_pixel_size, tiff_pixel_size  # noqa: E402
from viewer.session import Models, Session  # noqa: E402
from viewer.window import MainWindow  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_window(qtbot):
    made = []  # referenced until pytest-qt closes them (see tests/test_viewer.py)

    def make(session):
        configure()
        win = MainWindow(session, sync=True)
        qtbot.addWidget(win)
        win.show()
        win.dialogs = []
        win.show_error = lambda title, message: win.dialogs.append((title, message))  # no modal box in tests
        made.append(win)
        return win

    yield make


def write_tiff(path, plane, **save):
    Image.fromarray(plane).save(path, format="TIFF", **save)


def tiff_field(folder, sample_id, size=64, calibrated=None, **save):
    """Four TIFF channels; ``calibrated``: the channel whose file carries ``save``'s tags (all if None)."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for name in CHANNELS:
        plane = rng.integers(0, 200, (size, size), dtype=np.uint8)
        write_tiff(folder / f"{sample_id}_{name}.tif", plane, **(save if calibrated in (None, name) else {}))


# ---------------------------------------------------------------------- TIFF calibration
@pytest.mark.parametrize("save, expected", [
    ({"resolution": 10000 / 0.65, "resolution_unit": 3}, 0.65),              # pixels per centimetre
    ({"resolution": 25400 / 0.5, "resolution_unit": 2}, 0.5),                # pixels per inch (not a print dpi)
    ({"resolution": 1 / 0.325, "resolution_unit": 1,
      "description": "ImageJ=1.54f\nunit=micron\n"}, 0.325),                  # ImageJ: pixels per micron
    ({"description": '<?xml version="1.0"?><OME><Image><Pixels PhysicalSizeX="650" '
                     'PhysicalSizeXUnit="nm" SizeX="64"/></Image></OME>'}, 0.65),
])
def test_pixel_size_read_from_tiff_tags(tmp_path, save, expected):
    path = tmp_path / "a_red.tif"
    write_tiff(path, np.zeros((64, 64), np.uint8), **save)
    um, width, _how = tiff_pixel_size(path)
    assert um == pytest.approx(expected, rel=1e-4) and width == 64


@pytest.mark.parametrize("save", [{}, {"resolution": 72, "resolution_unit": 2}, {"resolution": 300},
                                  {"resolution": 1.0, "resolution_unit": 1},
                                  {"description": "ImageJ=1.54f\nunit=pixel\n", "resolution": 3.0}])
def test_uncalibrated_or_print_resolution_gives_no_size(tmp_path, save):
    path = tmp_path / "a_red.tif"
    write_tiff(path, np.zeros((16, 16), np.uint8), **save)
    assert tiff_pixel_size(path) is None


def test_size_of_a_resized_channel_is_scaled_to_the_shown_field(tmp_path):
    # red (shown size) is 64 px and uncalibrated; green is 128 px at 0.325 um: runtime.reader shows
    # green at 64 px, where one pixel is 0.65 um
    red, green = tmp_path / "a_red.tif", tmp_path / "a_green.tif"
    write_tiff(red, np.zeros((64, 64), np.uint8))
    write_tiff(green, np.zeros((128, 128), np.uint8), resolution=10000 / 0.325, resolution_unit=3)
    found = field_pixel_size([red, green], shown_width=64)
    assert found.um == pytest.approx(0.65, rel=1e-4) and "a_green.tif" in found.source and "128 px" in found.source


def test_garbage_tiff_is_uncalibrated_not_an_error(tmp_path):
    path = tmp_path / "a_red.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 40)
    assert tiff_pixel_size(path) is None


def test_window_takes_the_pixel_size_from_the_files_unless_the_user_sets_one(make_window, tmp_path):
    tiff_field(tmp_path / "cal", "A", size=64, resolution=10000 / 0.65, resolution_unit=3)
    tiff_field(tmp_path / "cal", "B", size=64)  # no calibration
    win = make_window(Session(tmp_path / "cal"))
    assert win.current.sample_id == "A" and win.state.pixel_size == pytest.approx(0.65, rel=1e-4)
    assert win.image_panel.scale_rect.isVisible()
    assert "A_red.tif" in win.channel_controls.pixel.toolTip()
    win.go(1)
    assert win.current.sample_id == "B" and win.state.pixel_size == 0 and not win.image_panel.scale_rect.isVisible()
    win.channel_controls.pixel.setValue(2.0)  # typed: overrides the files while browsing
    win.go(-1)
    assert win.state.pixel_size == 2.0
    win.channel_controls.pixel.setValue(0)    # back to unknown: the files speak again
    assert win.state.pixel_size == pytest.approx(0.65, rel=1e-4)


def test_pixel_size_option_overrides_the_files(tmp_path):
    from viewer.__main__ import build, parser

    tiff_field(tmp_path / "cal", "A", size=64, resolution=10000 / 0.65, resolution_unit=3)
    app, win = build(parser().parse_args(["--data", str(tmp_path / "cal"), "--pixel-size", "0.2"]), sync=True)
    try:
        assert win.current.sample is not None and win.state.pixel_size == pytest.approx(0.2)
    finally:
        win.close()


# ---------------------------------------------------------------------- what a folder is
def test_folders_told_apart_by_content(tiny_data, tiny_deploy, tiny_run, tmp_path):
    assert open_model.classify(tiny_deploy[0]) == open_model.DEPLOYMENT
    assert open_model.classify(tiny_run[0]) == open_model.RUN
    assert open_model.classify(tiny_data / "test") == open_model.IMAGES
    assert open_model.classify(tiny_data) == open_model.IMAGES  # a Kaggle DATA folder with train/
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError) as err:
        open_model.classify(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "model.json" in message and "config.json" in message and "_red" in message
    with pytest.raises(DataError, match="not a model.*Open image folder"):
        open_model.load(tiny_data / "test", want="model")
    with pytest.raises(DataError, match="deployment folder, not an image folder"):
        open_model.load(tiny_deploy[0], want="images")
    with pytest.raises(DataError, match="folder not found"):
        open_model.classify(tmp_path / "missing")


def test_open_model_swaps_the_model_and_keeps_the_image(make_window, tiny_data, tiny_deploy, tiny_run, tmp_path):
    win = make_window(Session(tiny_data / "test"))
    assert not win.models.can_predict and not win.provenance_label.isVisible()
    win.go(2)
    shown = win.current.sample_id
    win.open_path(str(tiny_deploy[0]), want="model")
    assert win.models.model_path and win.current.sample_id == shown and win.current.probs is not None
    old = win.models
    win.open_path(str(tiny_run[0]), want="model")
    assert win.models.spec is None and win.models.run_path == str(tiny_run[0]) and win.current.sample_id == shown
    # the old model's answer for the kept Id, arriving late, is not taken for the new model's
    mine = win.current.probs.copy()
    win._got_probs((shown, "mean", np.full(28, 0.99, np.float32), old))
    assert np.array_equal(win.current.probs, mine) and np.array_equal(win.predictions[shown], mine)
    assert old._stack is not None and old._backends == {}  # the replaced models were closed
    win.open_path(str(tmp_path), want="model")  # neither: one line in a dialog, the model stays
    assert win.models.run_path == str(tiny_run[0])
    assert win.dialogs[-1][0] == "Open" and str(tmp_path) in win.dialogs[-1][1] and "\n" not in win.dialogs[-1][1]


def test_open_image_folder_through_the_worker(make_window, tiny_data, tiny_deploy):
    win = make_window(Session(tiny_data / "test", tiny_deploy[0]))
    win.open_path(str(tiny_data / "train"), want="images")
    assert win.session.dataset.folder.root == tiny_data / "train" and win.models.model_path
    win.open_path(str(tiny_deploy[0]), want="images")
    assert "Open model" in win.dialogs[-1][1]


def _drop(win, path, target=None):
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(path))])
    target = target or win
    pos = QtCore.QPoint(target.width() // 2, target.height() // 2)
    enter = QtGui.QDragEnterEvent(pos, QtCore.Qt.CopyAction, mime, QtCore.Qt.LeftButton, QtCore.Qt.NoModifier)
    QtWidgets.QApplication.sendEvent(target, enter)
    if not enter.isAccepted():
        return False
    drop = QtGui.QDropEvent(QtCore.QPointF(pos), QtCore.Qt.CopyAction, mime, QtCore.Qt.LeftButton, QtCore.Qt.NoModifier)
    QtWidgets.QApplication.sendEvent(target, drop)
    return True


def test_dropped_folders_open_as_what_they_are(make_window, tiny_data, tiny_deploy, tiny_run):
    win = make_window(Session(tiny_data / "test"))
    assert _drop(win, tiny_deploy[0], target=win.image_panel.graphics.viewport())  # onto the image
    assert win.models.model_path and "synthetic" in win.provenance_label.text()
    assert _drop(win, tiny_run[0]) and win.models.spec is None
    assert _drop(win, tiny_data / "train") and win.session.dataset.folder.root == tiny_data / "train"
    a_file = next((tiny_data / "test").glob("*_red.png"))
    assert not _drop(win, a_file)  # a file is not a folder: refused at the door


# ---------------------------------------------------------------------- provenance
def test_synthetic_training_data_is_recorded_and_shown(tiny_data, tiny_run, tiny_deploy, make_window):
    import jsonschema

    assert json.loads((tiny_data / "dataset.json").read_text())["kind"] == "synthetic"
    model = json.loads((tiny_deploy[0] / "model.json").read_text())
    assert model["source"]["training_data"]["kind"] == "synthetic"
    jsonschema.validate(model, json.loads((ROOT / "docs" / "model.schema.json").read_text()))
    win = make_window(Session(tiny_data / "test", tiny_deploy[0]))
    assert win.provenance_label.isVisible()
    assert "synthetic data" in win.provenance_label.text() and "not meaningful" in win.provenance_label.text()
    assert "synthetic" in win.windowTitle()


def test_model_json_without_the_record_still_loads(tiny_deploy, tmp_path):
    # a deployment folder exported before training_data existed, whose run has moved away
    deploy = tmp_path / "old"
    shutil.copytree(tiny_deploy[0], deploy)
    model = json.loads((deploy / "model.json").read_text())
    model["source"].pop("training_data")
    model["source"]["run"] = str(tmp_path / "gone")
    (deploy / "model.json").write_text(json.dumps(model))
    models = Models(deploy)
    assert models.training_data() is None and models.provenance_warning() == ""


# ---------------------------------------------------------------------- menus
def test_right_click_menu_is_the_viewers_own(make_window, tiny_data, qtbot):
    win = make_window(Session(tiny_data / "test"))
    menu = menus.image_menu(win)
    assert [a.text() for a in menu.actions()] == [text for text, _ in menus.IMAGE_ACTIONS]
    menu.actions()[0].trigger()
    assert QtWidgets.QApplication.clipboard().text() == win.current.sample_id
    win.image_panel.view.scaleBy((0.5, 0.5))
    zoomed = win.image_panel.view.viewRange()
    next(a for a in menu.actions() if a.objectName() == "reset_view").trigger()
    assert win.image_panel.view.viewRange() != zoomed
    # a right-click on the composite asks for the viewer's menu, not pyqtgraph's
    asked = []
    win.image_panel.context_menu.disconnect()
    win.image_panel.context_menu.connect(asked.append)
    viewport = win.image_panel.graphics.viewport()
    centre = win.image_panel.graphics.mapFromScene(win.image_panel.image_item.sceneBoundingRect().center())
    qtbot.mouseClick(viewport, QtCore.Qt.RightButton, pos=centre)
    assert len(asked) == 1
    assert not win.image_panel.view.menu.isVisible()


# ---------------------------------------------------------------------- rough edges
def test_every_row_is_elided_to_the_visible_width(make_window, tiny_data):
    win = make_window(Session(tiny_data / "test"))
    panel = win.id_panel
    panel.list.setFixedWidth(120)
    QtWidgets.QApplication.processEvents()
    delegate, metrics = panel.list.itemDelegate(), panel.list.fontMetrics()
    for row in (panel.list.currentRow(), panel.list.currentRow() + 1):
        option = QtWidgets.QStyleOptionViewItem()
        option.initFrom(panel.list)
        if row == panel.list.currentRow():
            option.state |= QtWidgets.QStyle.State_Selected
        delegate.initStyleOption(option, panel.list.model().index(row, 0))
        full = panel.list.item(row).text()
        assert "…" in option.text and option.text != full
        assert metrics.horizontalAdvance(option.text) <= panel.list.viewport().width()
        head, tail = option.text.split("…")
        assert full.startswith(head) and full.endswith(tail)  # the middle goes, both ends stay
    assert panel.list.horizontalScrollBar().maximum() == 0


def test_channel_names_keep_their_width_at_1400_px(make_window, tiny_data):
    win = make_window(Session(tiny_data / "test"))
    win.resize(1400, 860)
    QtWidgets.QApplication.processEvents()
    controls = win.channel_controls
    assert controls.width() >= controls.minimumSizeHint().width()  # squeezed below it, widgets overlap
    for check, low in zip(controls.checks, controls.lows):
        assert check.width() >= check.sizeHint().width(), check.text()
        assert check.geometry().right() < low.geometry().left(), check.text()  # the name is not covered
