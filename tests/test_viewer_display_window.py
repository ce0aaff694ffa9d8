"""Display features in a real X window (Xvfb, as tests/test_viewer_window.py): a dim field opens
readable, the histograms are on screen with their limit lines, a colour change changes the screen
pixels, and the scale bar is drawn with its length. pytest runs this file as a script under
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
        for name in ("red", "green", "blue", "yellow"):
            plane = (rng.random((64, 64)) ** 2 * 25).astype(np.uint8)
            plane[16:40, 16:40] = 25
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
    assert r["lines"] == r["levels"][0]
    x = r["high_line_x"] - r["hist_rect"][0]
    assert (hist[:, x - 1:x + 2].min(-1) > 200).any(0).any()  # the white high-limit line is drawn


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
    grab("open")
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
