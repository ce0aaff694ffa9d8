"""What the viewer shows on open: percentile auto contrast (per image / fixed / manual) and a
colour per channel (viewer.contrast, viewer.colormaps, viewer.render)."""

import numpy as np
import pytest

from runtime.composite import composite
from viewer import scale_bar
from viewer.app import configure
from viewer.contrast import FixedLevels, histograms, percentile_levels
from viewer.render import composite_gamma
from viewer.session import Session
from viewer.state import ViewerState
from viewer.window import MainWindow

ON = (True,) * 4


def _dim(seed=0, size=64, peak=30):
    rng = np.random.default_rng(seed)
    return rng.integers(0, peak, (size, size, 4), dtype=np.uint8)


def test_percentile_levels_match_numpy():
    sample = _dim(peak=200)
    assert histograms(sample).shape == (4, 256) and histograms(sample).sum() == 64 * 64 * 4
    for (low, high), c in zip(percentile_levels(sample), range(4)):
        lo, hi = np.percentile(sample[..., c], [0.5, 99.8])
        assert abs(low - lo) <= 1 and abs(high - hi) <= 1 and high > low


def test_flat_channel_gets_a_valid_range():
    sample = np.full((8, 8, 4), 7, np.uint8)
    assert percentile_levels(sample) == ((7.0, 8.0),) * 4
    ViewerState().update(levels=percentile_levels(np.zeros((4, 4, 4), np.uint8)))  # accepted by the state


def test_fixed_levels_collect_then_keep():
    fixed = FixedLevels(n=2)
    first = fixed.add("a", _dim(1, peak=20))
    second = fixed.add("b", _dim(2, peak=100))
    assert second != first
    assert fixed.add("c", _dim(3, peak=250)) == second  # past n: kept
    assert fixed.add("a", _dim(1, peak=20)) == second    # revisiting does not count twice


def test_colormaps_are_additive_and_yellow_is_red_plus_green():
    sample = np.zeros((2, 2, 4), np.uint8)
    sample[..., 3] = 255
    levels = ((0.0, 255.0),) * 4
    yellow = composite_gamma(sample, ON, levels, (1.0,) * 4)
    assert tuple(yellow[0, 0]) == (255, 255, 0)
    sample[..., 1] = 128
    green_only = (False, True, False, False)
    magenta = composite_gamma(sample, green_only, levels, (1.0,) * 4, ("red", "magenta", "blue", "yellow"))
    assert tuple(magenta[0, 0]) == (128, 0, 128)
    gray = composite_gamma(sample, (False, True, False, False), levels, (1.0,) * 4, ("red", "gray", "blue", "yellow"))
    assert tuple(gray[0, 0]) == (128, 128, 128)


def test_default_colours_are_runtime_composite():
    sample = _dim(peak=255)
    levels = percentile_levels(sample)
    np.testing.assert_array_equal(composite_gamma(sample, ON, levels, (1.0,) * 4, ("red", "green", "blue", "yellow")),
                                  composite(sample, ON, levels))


def test_state_rejects_unknown_colormap_and_mode():
    state = ViewerState()
    with pytest.raises(ValueError, match="colormap"):
        state.set_colormap(0, "plasma-ish")
    with pytest.raises(ValueError, match="contrast mode"):
        state.update(contrast_mode="sometimes")


# ---------------------------------------------------------------------- in the window
@pytest.fixture
def dim_folder(tmp_path):
    """Four dim fields (values 0..peak) in the Kaggle layout, as a microscope's raw export looks."""
    import cv2

    rng = np.random.default_rng(5)
    for k, peak in enumerate((20, 25, 30, 60)):
        for name in ("red", "green", "blue", "yellow"):
            plane = (rng.random((64, 64)) ** 2 * peak).astype(np.uint8)
            plane[16:40, 16:40] = peak  # a bright "cell" at the channel's peak
            cv2.imwrite(str(tmp_path / f"id{k}_{name}.png"), plane)
    return tmp_path


@pytest.fixture
def dim_window(qtbot, dim_folder):
    configure()
    win = MainWindow(Session(dim_folder), sync=True)
    qtbot.addWidget(win)
    win.show()
    return win


def test_a_dim_field_opens_readable(dim_window):
    sample = dim_window.current.sample
    assert sample.max() <= 60
    plain = composite(sample, ON).astype(float).mean()
    shown = dim_window.rendered.astype(float).mean()
    assert plain < 20 and shown > 3 * plain
    assert dim_window.state.levels == percentile_levels(sample)


def test_per_image_fixed_and_manual_modes(dim_window):
    win = dim_window
    win.go(1)
    assert win.state.levels == percentile_levels(win.current.sample)  # per image: recomputed
    win.channel_controls.mode.setCurrentText("fixed")
    fixed = win.state.levels
    for _ in range(6):
        win.go(1)
    assert win.state.contrast_mode == "fixed"
    last = win.state.levels
    win.go(1)
    assert win.state.levels == last  # past the first FIXED_SAMPLES fields: unchanged
    win.channel_controls.highs[0].setValue(200)  # typing a limit: manual, kept while browsing
    assert win.state.contrast_mode == "manual" and win.channel_controls.mode.currentText() == "manual"
    manual = win.state.levels
    win.go(1)
    assert win.state.levels == manual and manual[0][1] == 200
    win.auto_contrast()                         # the reset
    assert win.state.contrast_mode == "per image" and win.state.levels == percentile_levels(win.current.sample)
    assert fixed  # noqa: the fixed limits existed from the first field on


def test_colour_combo_changes_the_screen(dim_window):
    win = dim_window
    win.state.update(channels=(False, True, False, False))
    assert win.rendered[..., 0].max() == 0 and win.rendered[..., 1].max() > 0
    win.channel_controls.cmaps[1].setCurrentText("magenta")
    assert win.state.colormaps[1] == "magenta"
    assert win.rendered[..., 1].max() == 0 and win.rendered[..., 0].max() > 0
    np.testing.assert_array_equal(win.rendered[..., 0], win.rendered[..., 2])


# ---------------------------------------------------------------------- scale bar
@pytest.mark.parametrize("pixel, width, um",
                         [(0.1, 512, 10), (0.65, 512, 50), (0.08, 2048, 20), (1.0, 64, 10), (3.0, 100, 50)])
def test_bar_length_is_round_and_about_a_fifth(pixel, width, um):
    length_um, length_px = scale_bar.bar_length(pixel, width)
    assert length_um == um and length_px == pytest.approx(um / pixel)
    assert 0.08 * width <= length_px <= 0.2 * width + 1e-9


def test_no_pixel_size_no_bar():
    rgb = np.zeros((64, 64, 3), np.uint8)
    assert scale_bar.bar_length(0, 64) is None and scale_bar.draw(rgb, 0) is rgb


def test_scale_bar_in_window_and_export(dim_window, tmp_path):
    win = dim_window
    assert not win.image_panel.scale_rect.isVisible()
    win.channel_controls.pixel.setValue(1.0)   # 64 px of 1 um: a fifth is 12.8 um, so a 10 um bar, 10 px
    assert win.state.pixel_size == 1.0
    rect = win.image_panel.scale_rect.rect()
    assert win.image_panel.scale_rect.isVisible() and rect.width() == pytest.approx(10)
    assert win.image_panel.scale_text.textItem.toPlainText() == "10 µm"
    import cv2

    (path,) = win.export_image(tmp_path / "x.png")
    exported = cv2.imread(str(path))
    y = int(rect.y() + rect.height() / 2)
    row = (exported[y] == 255).all(axis=1)   # the bar's pixels are pure white
    assert row.sum() == pytest.approx(10, abs=1)
    win.state.update(pixel_size=0.0)
    assert not win.image_panel.scale_rect.isVisible()


def test_pixel_size_flag(dim_folder):
    from viewer.__main__ import build, parser

    app, win = build(parser().parse_args(["--data", str(dim_folder), "--pixel-size", "0.25"]), sync=True)
    try:
        assert win.state.pixel_size == 0.25 and win.channel_controls.pixel.value() == 0.25
    finally:
        win.close()
    with pytest.raises(ValueError, match="--pixel-size"):
        build(parser().parse_args(["--data", str(dim_folder), "--pixel-size", "-1"]))


# ---------------------------------------------------------------------- histograms
def test_histogram_lines_follow_and_set_the_levels(dim_window):
    win = dim_window
    panel = win.histogram_panel
    counts = histograms(win.current.sample)
    for i in range(4):
        x, y = panel.curves[i].getData()
        np.testing.assert_allclose(y, np.log1p(counts[i]))
        assert [line.value() for line in panel.lines[i]] == list(win.state.levels[i])
    panel.lines[2][1].setValue(40)          # as a drag does, then the drag's end
    panel.lines[2][1].sigPositionChangeFinished.emit(panel.lines[2][1])
    assert win.state.levels[2][1] == 40 and win.state.contrast_mode == "manual"
    assert win.channel_controls.highs[2].value() == 40
    win.state.set_level(0, 3, 90)
    assert [line.value() for line in panel.lines[0]] == [3, 90]


def test_large_field_percentiles_stay_close():
    rng = np.random.default_rng(1)
    sample = (rng.random((1100, 1100, 4)) ** 3 * 255).astype(np.uint8)
    for (low, high), c in zip(percentile_levels(sample), range(4)):
        lo, hi = np.percentile(sample[..., c], [0.5, 99.8])
        assert abs(low - lo) <= 2 and abs(high - hi) <= 2


def test_typed_pixel_size_is_kept_as_typed(qtbot):
    """Typing 0.65 into the pixel box gives 0.65 um: the box applies on Enter, so the first
    key (0, "unknown") no longer rewrites the text mid-typing (it used to end as 0.600)."""
    from PyQt5 import QtCore

    from viewer.controls import ChannelControls

    state = ViewerState()
    controls = ChannelControls(state)
    qtbot.addWidget(controls)
    controls.pixel.setFocus()
    controls.pixel.selectAll()
    qtbot.keyClicks(controls.pixel, "0.65")
    qtbot.keyClick(controls.pixel, QtCore.Qt.Key_Return)
    assert state.pixel_size == pytest.approx(0.65)


def test_opening_a_folder_replaces_the_no_folder_caption(qtbot, dim_folder):
    """Started with no arguments, then File > Open image folder: the caption over the image no
    longer tells the user to open a folder (it stayed, stale, when no model was loaded)."""
    configure()
    win = MainWindow(Session(None), sync=True)
    qtbot.addWidget(win)
    win.show()
    assert "no image folder" in win.image_panel.caption.text()
    win.open_folder(str(dim_folder))
    assert win.current.sample is not None
    assert "no image folder" not in win.image_panel.caption.text()
