"""The HPA colour composite: red, green and blue in their own colours, yellow as red + green."""

import numpy as np

# Each channel's RGB colour, in CHANNELS order (R, G, B, Y).
COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32)


def composite(sample, enabled=(True, True, True, True), levels=None):
    """uint8 (H, W, 4) -> uint8 (H, W, 3) RGB, additive.

    ``levels``: per channel (low, high) contrast limits on the 0..255 scale (default 0..255);
    a disabled channel contributes nothing.
    """
    x = sample.astype(np.float32)
    out = np.zeros(sample.shape[:2] + (3,), np.float32)
    for c in range(4):
        if not enabled[c]:
            continue
        low, high = levels[c] if levels is not None else (0.0, 255.0)
        plane = np.clip((x[..., c] - low) / max(high - low, 1e-6), 0, 1)
        out += plane[..., None] * COLOURS[c]
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
