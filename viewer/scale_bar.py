"""A scale bar from the pixel size: a round length (1, 2 or 5 x 10^k um) close to a fifth of the
field's width, drawn at the bottom right. The window draws it as a scene item in image
coordinates (it stays true at any zoom); File > Export image burns the same bar into the PNG.

The pixel size is the size of one pixel AS SHOWN: ``--pixel-size UM`` or the "pixel" box, else
the calibration the field's TIFF files record (viewer.calibration, scaled to the shown size when
a channel was resized on load), else unknown (0: no bar).
"""

import math

import cv2
import numpy as np

TARGET_FRACTION = 0.2   # the bar is the round length nearest below this share of the width
MARGIN = 0.04           # gap to the image's right and bottom edges, as a share of the width


def bar_length(pixel_size_um, width_px, fraction=TARGET_FRACTION):
    """(length in um, length in pixels) of the bar for an image ``width_px`` pixels wide, or
    None when the pixel size is unknown (<= 0)."""
    if not pixel_size_um or pixel_size_um <= 0 or width_px <= 0:
        return None
    target = fraction * width_px * pixel_size_um
    exponent = math.floor(math.log10(target))
    best = 10.0 ** exponent
    for step in (1, 2, 5):
        if step * 10.0 ** exponent <= target:
            best = step * 10.0 ** exponent
    return best, best / pixel_size_um


def label(um):
    return f"{um:g} µm"


def geometry(shape, pixel_size_um):
    """(x0, y0, length_px, thickness_px, um) of the bar in image pixels, or None."""
    h, w = shape[:2]
    found = bar_length(pixel_size_um, w)
    if found is None:
        return None
    um, length = found
    margin = MARGIN * w
    thickness = max(1.0, w / 100)
    return w - margin - length, h - margin - thickness, length, thickness, um


def draw(rgb, pixel_size_um):
    """A copy of uint8 RGB with the bar (white, dark rim) and its label burnt in."""
    g = geometry(rgb.shape, pixel_size_um)
    if g is None:
        return rgb
    x0, y0, length, thickness, um = g
    out = rgb.copy()
    p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x0 + length)) - 1, int(round(y0 + thickness)) - 1)
    cv2.rectangle(out, (p0[0] - 1, p0[1] - 1), (p1[0] + 1, p1[1] + 1), (0, 0, 0), 1)
    cv2.rectangle(out, p0, p1, (255, 255, 255), -1)
    scale = max(0.3, rgb.shape[1] / 1000)
    text = label(um).replace("µ", "u")  # OpenCV's Hershey fonts have no µ
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    org = (int(round(x0 + (length - tw) / 2)), max(th + 1, p0[1] - 3))
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.ascontiguousarray(out)
