"""The viewer's state: a small Qt-free object the widgets bind to (napari's way).

Widgets call ``update(**changes)`` and subscribe to be told what changed; tests drive the same
object without any widget.
"""

from dataclasses import dataclass, field, fields

CAM_METHODS = ("gradcam", "gradcam++", "layercam", "cbam-attention")


@dataclass
class ViewerState:
    sample_id: str = ""
    channels: tuple = (True, True, True, True)       # R, G, B, Y shown in the composite
    levels: tuple = ((0.0, 255.0),) * 4               # per-channel contrast (low, high), 0..255
    cam_class: int = -1                                # -1: the top predicted class
    cam_method: str = "gradcam"
    cam_fold: str = "mean"                             # "mean" over folds or "fold<k>"
    cam_opacity: float = 0.5
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
        if "cam_method" in changes and changes["cam_method"] not in CAM_METHODS:
            raise ValueError(f"unknown CAM method {changes['cam_method']!r}; valid: {', '.join(CAM_METHODS)}")
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
