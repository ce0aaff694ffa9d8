"""Display features in a real X window (Xvfb, the pattern of tests/xwindow.py): a dim field opens
readable, the four histograms are on screen with their limit lines, "fixed for the set" keeps
its limits while browsing (a bright field in the set shows a dim one dimmer), a colour change
changes the screen pixels, and the scale bar is drawn with its length. pytest runs this file as a script under
xvfb-run and checks the grabs of the X screen it saves.

By hand: PYTHONPATH=. xvfb-run -a -s "-screen 0 1600x1000x24" python tests/test_viewer_display_window.py --data DIR --out OUT
"""

import json
import sys

import numpy as np
import pytest

from tests.xwindow import Driver, load_grab, run_driver, script_args

PIXEL_UM = 1.0   # 64 px fields: a fifth is 12.8 um, so a 10 um bar of 10 image pixels


@pytest.fixture(scope="module")
def display_report(tmp_path_factory):
    import cv2

    data = tmp_path_factory.mktemp("dim")
    rng = np.random.default_rng(5)
    for k in range(3):
        top = 75 if k == 2 else 25  # id2 three times as bright: "fixed for the set" shows id0 darker
        for name in ("red", "green", "blue", "yellow"):
            plane = (rng.random((64, 64)) ** 2 * top).astype(np.uint8)
            plane[16:40, 16:40] = top
            cv2.imwrite(str(data / f"id{k}_{name}.png"), plane)
    return run_driver(__file__, ["--data", data], tmp_path_factory.mktemp("xvfb-display"), 180)


def _grab(report, name, rect):
    return load_grab(report, name, rect)


def test_dim_field_opens_readable_on_screen(display_report):
    shown = _grab(display_report, "open", display_report["image_rect"])
    # raw values are 0..25: mapped 0..255 the composite would average under 20 on screen
    assert display_report["raw_mean"] < 20 and shown.mean() > 3 * display_report["raw_mean"]


def test_histograms_on_screen_with_their_limit_lines(display_report):
    r = display_report
    hist = _grab(r, "open", r["hist_rect"])
    assert (hist[..., 0] > 150).mean() > 0.05            # the red histogram is filled in red
    from viewer.image_panel import CHANNEL_COLOURS

    for i, rect in enumerate(r["hist_rects"]):            # and each of the four in its channel's colour
        colour = [int(CHANNEL_COLOURS[i][k:k + 2], 16) for k in (1, 3, 5)]
        plot = _grab(r, "open", rect)
        assert (np.abs(plot - colour).sum(-1) < 60).mean() > 0.05, i
    assert r["lines"] == r["levels"][0]
    x = r["high_line_x"] - r["hist_rect"][0]
    assert (hist[:, x - 1:x + 2].min(-1) > 200).any(0).any()  # the white high-limit line is drawn


def test_fixed_contrast_for_the_set_is_kept_while_browsing(display_report):
    r = display_report
    assert r["fixed_levels_back_on_id0"] == r["fixed_levels_on_id2"]   # kept, not recomputed per field
    fixed = _grab(r, "id0-fixed", r["image_rect"]).mean()
    per_image = _grab(r, "id0-per-image", r["image_rect"]).mean()
    assert fixed < 0.75 * per_image, (fixed, per_image)   # the bright field in the set: id0 shows dimmer


def test_colour_change_changes_the_screen(display_report):
    r = display_report
    green = _grab(r, "green-alone", r["image_rect"])
    magenta = _grab(r, "green-magenta", r["image_rect"])
    assert green[..., 1].mean() > 40 and green[..., 0].mean() < 5
    assert magenta[..., 1].mean() < 5 and magenta[..., 0].mean() > 40 and magenta[..., 2].mean() > 40


def test_scale_bar_visible_with_its_length(display_report):
    r = display_report
    image = _grab(r, "scale-bar", r["image_rect"])
    before = _grab(r, "green-magenta", r["image_rect"])
    white = (image.min(-1) > 240) & ~(before.min(-1) > 240)
    rows = white.sum(1)
    expected = r["image_rect"][2] * 10 / 64       # 10 of the 64 image pixels across the view
    assert abs(rows.max() - expected) <= max(3, 0.1 * expected), (rows.max(), expected)


# ---------------------------------------------------------------------- the driver (xvfb side)
def drive(args):
    from runtime.composite import composite
    from viewer.__main__ import build, parser

    app, window = build(parser().parse_args(["--data", args.data]))
    x = Driver(app, window, args.out)
    out, rect_of, grab = x.out, x.rect_of, x.grab
    report = {}

    def settle(condition=lambda: True, timeout=30):
        x.wait(condition, "the image", timeout)

    settle(lambda: window.current.sample is not None and window.image_panel.image_item.image is not None)
    report["image_rect"] = x.image_rect()
    report["raw_mean"] = float(composite(window.current.sample).mean())
    plot = window.histogram_panel.plots[0]
    report["hist_rect"] = rect_of(plot)
    report["levels"] = [list(lv) for lv in window.state.levels]
    report["lines"] = [line.value() for line in window.histogram_panel.lines[0]]
    line = window.histogram_panel.lines[0][1]
    report["high_line_x"] = rect_of(plot, plot.mapFromScene(line.sceneBoundingRect()).boundingRect())[0] + \
        int(plot.mapFromScene(line.sceneBoundingRect()).boundingRect().width() / 2)
    report["hist_rects"] = [rect_of(p) for p in window.histogram_panel.plots]
    grab("open")

    # "fixed" chosen in the mode box: limits from the fields seen, kept while browsing
    def show(sample_id):
        window.id_panel.select(sample_id)
        settle(lambda: window.current.sample_id == sample_id and window.current.sample is not None)

    first = window.state.sample_id
    window.channel_controls.mode.setCurrentText("fixed")
    for sample_id in window.session.listed_ids()[1:]:
        show(sample_id)
    report["fixed_levels_on_id2"] = [list(lv) for lv in window.state.levels]
    show(first)
    report["fixed_levels_back_on_id0"] = [list(lv) for lv in window.state.levels]
    grab("id0-fixed")
    window.channel_controls.mode.setCurrentText("per image")
    settle()
    grab("id0-per-image")

    window.state.update(channels=(False, True, False, False))
    grab("green-alone")
    window.channel_controls.cmaps[1].setCurrentText("magenta")
    grab("green-magenta")
    window.channel_controls.pixel.setValue(PIXEL_UM)
    grab("scale-bar")
    (out / "report.json").write_text(json.dumps(report))
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(drive(script_args("--data").parse_args()))
