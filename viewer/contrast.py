"""Contrast limits the viewer opens with: per-channel percentiles of the uint8 planes.

*Decision*: 0.5 % / 99.8 % (the percentiles the viewer's Auto contrast has always used):
the low end lifts the camera's dark offset, the high end lets the brightest 0.2 % of a channel
saturate, so a dim field (values 0..40, common in HPA) fills the 0..255 display instead of
showing near black. Computed from a 256-bin bincount per channel (about a millisecond for a
512 x 512 field, see histograms()), so it runs where the sample arrives.

Modes (the "contrast" box under the channel controls):
  * "per image": recomputed for every sample shown (the default: each field readable);
  * "fixed": computed once from the first FIXED_SAMPLES samples shown (their histograms added),
    then kept while browsing, so intensities compare across fields;
  * "manual": the limits the user typed or dragged, kept while browsing. Editing a limit
    switches to manual; Auto contrast (Ctrl+Shift+A) goes back to "per image".
"""

import numpy as np

CONTRAST_MODES = ("per image", "fixed", "manual")
LOW_PCT, HIGH_PCT = 0.5, 99.8
FIXED_SAMPLES = 5


SUBSAMPLE_ABOVE = 1 << 20   # pixels; larger fields are counted on every second row and column


def histograms(sample):
    """(4, 256) int64 counts of each uint8 channel of an (H, W, 4) sample. A field over a
    megapixel (HPA's 2048 x 2048) is counted on every 2nd row and column: the percentiles move
    by at most a grey level or so and the count drops from about 44 ms to about 8 ms on the GUI
    thread (AMD EPYC, shared machine)."""
    if sample.shape[0] * sample.shape[1] > SUBSAMPLE_ABOVE:
        sample = sample[::2, ::2]
    return np.stack([np.bincount(np.ascontiguousarray(sample[..., c]).ravel(), minlength=256)[:256]
                     for c in range(sample.shape[-1])])


def levels_from_histograms(hists, low_pct=LOW_PCT, high_pct=HIGH_PCT):
    """Per channel (low, high) on 0..255 with high > low (a flat channel gets (v, v + 1))."""
    out = []
    for counts in hists:
        cum = np.cumsum(counts, dtype=np.float64)
        total = cum[-1] if len(cum) and cum[-1] > 0 else 1.0
        low = int(np.searchsorted(cum, total * low_pct / 100, side="left"))
        high = int(np.searchsorted(cum, total * high_pct / 100, side="left"))
        low = min(low, 254)
        out.append((float(low), float(max(high, low + 1))))
    return tuple(out)


def percentile_levels(sample, low_pct=LOW_PCT, high_pct=HIGH_PCT):
    return levels_from_histograms(histograms(sample), low_pct, high_pct)


class FixedLevels:
    """The "fixed for the set" limits: histograms of the first ``n`` samples added up."""

    def __init__(self, n=FIXED_SAMPLES):
        self.n, self.seen, self.total, self.levels = n, set(), None, None

    def add(self, sample_id, sample):
        """Count this sample if still collecting; returns the current limits."""
        if len(self.seen) < self.n and sample_id not in self.seen:
            self.seen.add(sample_id)
            h = histograms(sample)
            self.total = h if self.total is None else self.total + h
            self.levels = levels_from_histograms(self.total)
        return self.levels
