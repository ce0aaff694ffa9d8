"""The viewer's state: a small Qt-free object the widgets bind to (napari's way).

Widgets call ``update(**changes)`` and subscribe to be told what changed; tests drive the same
object without any widget. Values are checked here, so a bad one never reaches a worker.
"""

from dataclasses import dataclass, field, fields

from runtime.classes import NUM_CLASSES
from viewer.cam_request import CAM_METHODS
from viewer.colormaps import COLORMAPS, DEFAULT_COLORMAPS
from viewer.contrast import CONTRAST_MODES
from viewer.render import OVERLAY_STYLES

GAMMA_RANGE = (0.2, 5.0)


@dataclass
class ViewerState:
    sample_id: str = ""
    channels: tuple = (True, True, True, True)       # R, G, B, Y shown in the composite
    levels: tuple = ((0.0, 255.0),) * 4               # per-channel contrast (low, high), 0..255
    gammas: tuple = (1.0, 1.0, 1.0, 1.0)              # per-channel gamma, applied after the levels
    colormaps: tuple = DEFAULT_COLORMAPS               # per-channel colour (viewer.colormaps)
    contrast_mode: str = CONTRAST_MODES[0]             # how levels follow the sample (viewer.contrast)
    pixel_size: float = 0.0                            # um per displayed pixel; 0: unknown, no scale bar
    cam_class: int = -1                                # -1: auto (missed, else false positive, else top class)
    cam_method: str = CAM_METHODS[0]                   # LayerCAM: the best localiser (cam_request.py)
    cam_fold: str = "mean"                             # "mean" over folds or "fold<k>"
    cam_style: str = OVERLAY_STYLES[0]
    cam_opacity: float = 0.8
    show_cam: bool = True
    _listeners: list = field(default_factory=list, repr=False, compare=False)

    def subscribe(self, callback):
        """callback(changed: set of field names). Returns a function that unsubscribes."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def update(self, **changes):
        known = {f.name for f in fields(self) if not f.name.startswith("_")}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown viewer state field(s): {sorted(unknown)}")
        _check(changes)
        changed = {k for k, v in changes.items() if getattr(self, k) != v}
        for k in changed:
            setattr(self, k, changes[k])
        if changed:
            for callback in list(self._listeners):
                callback(changed)
        return changed

    def toggle_channel(self, index):
        channels = list(self.channels)
        channels[index] = not channels[index]
        self.update(channels=tuple(channels))

    def set_level(self, index, low, high):
        levels = list(self.levels)
        levels[index] = (float(low), float(high))
        self.update(levels=tuple(levels))

    def set_colormap(self, index, name):
        colormaps = list(self.colormaps)
        colormaps[index] = name
        self.update(colormaps=tuple(colormaps))

    def set_gamma(self, index, gamma):
        gammas = list(self.gammas)
        gammas[index] = float(gamma)
        self.update(gammas=tuple(gammas))


def _check(changes):
    if "cam_method" in changes and changes["cam_method"] not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {changes['cam_method']!r}; valid: {', '.join(CAM_METHODS)}")
    if "cam_style" in changes and changes["cam_style"] not in OVERLAY_STYLES:
        raise ValueError(f"unknown overlay style {changes['cam_style']!r}; valid: {', '.join(OVERLAY_STYLES)}")
    if "cam_class" in changes and not (isinstance(changes["cam_class"], int) and -1 <= changes["cam_class"] < NUM_CLASSES):
        raise ValueError(f"cam_class must be -1 (auto) or 0..{NUM_CLASSES - 1}, got {changes['cam_class']!r}")
    if "cam_opacity" in changes and not 0 <= changes["cam_opacity"] <= 1:
        raise ValueError(f"cam_opacity must be in 0..1, got {changes['cam_opacity']!r}")
    for name in changes.get("colormaps", ()):
        if name not in COLORMAPS:
            raise ValueError(f"unknown colormap {name!r}; valid: {', '.join(COLORMAPS)}")
    if "contrast_mode" in changes and changes["contrast_mode"] not in CONTRAST_MODES:
        raise ValueError(f"unknown contrast mode {changes['contrast_mode']!r}; valid: {', '.join(CONTRAST_MODES)}")
    pixel = changes.get("pixel_size", 0.0)
    if not (isinstance(pixel, (int, float)) and 0 <= pixel < 1e4):
        raise ValueError(f"pixel size must be a number of um >= 0 (0: unknown), got {pixel!r}")
    for low, high in changes.get("levels", ()):
        if not high > low:
            raise ValueError(f"contrast level high must exceed low, got ({low}, {high})")
    for gamma in changes.get("gammas", ()):
        if not GAMMA_RANGE[0] <= gamma <= GAMMA_RANGE[1]:
            raise ValueError(f"gamma must be in {GAMMA_RANGE[0]}..{GAMMA_RANGE[1]}, got {gamma!r}")
