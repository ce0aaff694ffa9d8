"""What the viewer draws, as numpy arrays (Qt-free): the composite with per-channel gamma, the CAM
overlay, and the images File > Export image writes. The screen and the exported file go through
the same functions, so an export shows what the window shows."""

from pathlib import Path

import cv2
import numpy as np

from runtime.composite import composite
from viewer import scale_bar
from viewer.colormaps import COLORMAPS, DEFAULT_COLORMAPS

# *Decision*: the CAM overlay must leave the cells readable and must not look
# like a channel. The composite is additive red, green, blue and yellow, so any saturated hue can
# appear in it; what cannot is structure. "contours" draws white isolines with a dark rim at 25,
# 50 and 75 % of the map's peak (thicker for higher levels) over an untouched composite; "heat"
# adds a fill whose low end is fully transparent (nothing is darkened) and whose colour runs from
# violet through magenta to white, hues the four channels never produce alone, with the same
# contours on top.
OVERLAY_STYLES = ("contours", "heat")
CONTOUR_LEVELS = (0.25, 0.5, 0.75)
HEAT_STOPS = np.array([[0.20, 0x7b, 0x2c, 0xbf], [0.60, 0xff, 0x4f, 0xd8], [1.00, 0xff, 0xff, 0xff]], np.float32)
HEAT_FLOOR = 0.2     # map values below this are fully transparent
HEAT_ALPHA = 0.7     # alpha of the fill at the peak (before the opacity slider)


def _tables(levels, gammas):
    """Per channel, a 256-entry float table: level-normalise to 0..1, then apply the gamma."""
    values = np.arange(256, dtype=np.float32)
    return [np.clip((values - low) / max(high - low, 1e-6), 0, 1) ** gamma for (low, high), gamma in zip(levels, gammas)]


def composite_gamma(sample, channels, levels, gammas, colormaps=DEFAULT_COLORMAPS):
    """runtime.composite with a per-channel gamma applied after the contrast levels (napari's
    order) and a colour per channel (viewer.colormaps), added. Gamma 1 everywhere with the HPA
    colours is exactly runtime.composite."""
    if all(g == 1.0 for g in gammas) and tuple(colormaps) == DEFAULT_COLORMAPS:
        return composite(sample, channels, levels)
    out = np.zeros(sample.shape[:2] + (3,), np.float32)
    for c, table in enumerate(_tables(levels, gammas)):
        if not channels[c]:
            continue
        plane = table[sample[..., c]]
        out += plane[..., None] * np.asarray(COLORMAPS[colormaps[c]], np.float32)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def channel_planes(sample, levels, gammas):
    """The four channels as the strip shows them: uint8 planes with each channel's levels and gamma."""
    return [(255.0 * table + 0.5).astype(np.uint8)[sample[..., c]] for c, table in enumerate(_tables(levels, gammas))]


def display_scale(shape, target=768):
    """Overlays are drawn at an integer multiple of the image size, so contours stay smooth when
    a small field (128 px) fills the window."""
    return max(1, int(np.ceil(target / max(shape[:2]))))


def overlay_rgba(cam, style="contours", scale=1):
    """uint8 (H*scale, W*scale, 4) overlay of a 0..1 map at the image's resolution. An all-zero
    map gives a fully transparent overlay."""
    if style not in OVERLAY_STYLES:
        raise ValueError(f"unknown overlay style {style!r}; valid: {', '.join(OVERLAY_STYLES)}")
    h, w = cam.shape
    big = cv2.resize(cam.astype(np.float32), (w * scale, h * scale), interpolation=cv2.INTER_LINEAR) if scale > 1 else cam
    out = np.zeros(big.shape + (4,), np.uint8)
    if style == "heat":
        out[:] = _heat(big)
    _draw_contours(out, big, scale)
    return out


def _heat(values):
    rgba = np.zeros(values.shape + (4,), np.float32)
    for c in range(3):
        rgba[..., c] = np.interp(values, HEAT_STOPS[:, 0], HEAT_STOPS[:, c + 1])
    rgba[..., 3] = 255 * HEAT_ALPHA * np.clip((values - HEAT_FLOOR) / (1 - HEAT_FLOOR), 0, 1)
    return rgba.astype(np.uint8)


def _draw_contours(out, values, scale):
    pad = 2 + scale
    for i, level in enumerate(CONTOUR_LEVELS):
        # a region that reaches the image's edge continues past it (replicated border), so its
        # contour runs outside the canvas there instead of drawing a line along the edge
        mask = cv2.copyMakeBorder((values >= level).astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE, offset=(-pad, -pad))
        if not contours:
            continue
        # thicker for higher levels, 1-3 screen pixels whatever the image size (the overlay is
        # drawn ``scale`` times larger than the image and shown at about that size), with a dark
        # rim that keeps them visible where the composite is bright
        base = max(1.0, scale / 4)
        width = max(1, int(base * (1 + 0.5 * i)))
        cv2.drawContours(out, contours, -1, (0, 0, 0, 160), width + max(1, round(base)), cv2.LINE_AA)
        cv2.drawContours(out, contours, -1, (255, 255, 255, 255), width, cv2.LINE_AA)


def blend(rgb, rgba, opacity=1.0):
    """uint8 RGB under a uint8 RGBA overlay of the same size (alpha times ``opacity``)."""
    if rgba.shape[:2] != rgb.shape[:2]:
        rgba = cv2.resize(rgba, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_AREA)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0 * float(opacity)
    out = rgb.astype(np.float32) * (1 - alpha) + rgba[..., :3].astype(np.float32) * alpha
    return (out + 0.5).astype(np.uint8)


def write_png(path, rgb):
    """Write an RGB or grayscale uint8 array as PNG; OSError (with the system's reason) on failure."""
    path = Path(path)
    array = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"{path}: could not encode the PNG")
    path.write_bytes(data.tobytes())
    return path


def export_image(path, rgb, cam=None, style="contours", opacity=1.0, pixel_size=0.0):
    """File > Export image: ``path`` (the composite at the image's own resolution, with the overlay
    as shown when a CAM is given, and the scale bar when the pixel size is known) and ``<stem>-cam.png`` (the map alone, 0..1 as 0..255 gray).
    Returns the paths written."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_name(path.name + ".png")
    if cam is None:
        return [write_png(path, scale_bar.draw(rgb, pixel_size))]
    shown = scale_bar.draw(blend(rgb, overlay_rgba(cam, style), opacity), pixel_size)
    gray = np.clip(cam * 255 + 0.5, 0, 255).astype(np.uint8)
    return [write_png(path, shown), write_png(path.with_name(path.stem + "-cam.png"), gray)]
