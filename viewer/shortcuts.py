"""Every menu action with its keys, in one table: the window builds its menus from it and
Help > Shortcuts lists it, so the two never disagree.

*Decision*: next/previous image are Ctrl+Down/Ctrl+Up, application-wide, so
they work whichever widget has the focus; plain Up/Down stay with the focused widget (they move
through the list when it has the focus, and change a spin box's value when that has it).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Shortcut:
    menu: str
    text: str
    keys: tuple
    handler: str
    args: tuple = ()


SHORTCUTS = (
    Shortcut("&File", "&Open image folder...", ("Ctrl+O",), "_open_dialog"),
    Shortcut("&File", "Open &model (deployment folder or training run)...", ("Ctrl+Shift+O",), "_open_model_dialog"),
    Shortcut("&File", "Export &view (window as shown)...", ("Ctrl+E",), "_export_view_dialog"),
    Shortcut("&File", "Export &image (own resolution, and the map alone)...", ("Ctrl+Shift+E",), "_export_image_dialog"),
    Shortcut("&File", "&Quit", ("Ctrl+Q",), "close"),
    Shortcut("&Go", "&Next image", ("Ctrl+Down",), "go", (1,)),
    Shortcut("&Go", "&Previous image", ("Ctrl+Up",), "go", (-1,)),
    Shortcut("&Go", "10 images &forward", ("Ctrl+PgDown",), "go", (10,)),
    Shortcut("&Go", "10 images &back", ("Ctrl+PgUp",), "go", (-10,)),
    Shortcut("&View", "&Reset zoom and pan", ("Ctrl+R",), "reset_view"),
    Shortcut("&View", "&Auto contrast (per image; resets manual limits)", ("Ctrl+Shift+A",), "auto_contrast"),
    Shortcut("&View", "Show/hide the CAM &overlay", ("Ctrl+H",), "toggle_overlay"),
    Shortcut("&View", "&Errors per class (filters the list)", ("Ctrl+Shift+R",), "toggle_error_summary"),
    *(Shortcut("&View", f"Show/hide {name}", (f"Ctrl+{i + 1}",), "toggle_channel", (i,))
      for i, name in enumerate(("red", "green", "blue", "yellow"))),
    Shortcut("&Help", "&Shortcuts", ("F1",), "_shortcuts_dialog"),
)

OTHER_KEYS = (
    ("Up / Down", "previous / next Id while the list has the focus"),
    ("mouse wheel, drag", "zoom and pan the image (right-drag: zoom a box)"),
    ("drag a histogram line", "set that channel's contrast limit (manual contrast)"),
)


def shortcuts_html():
    rows = [(", ".join(s.keys), s.text.replace("&", "").rstrip(".")) for s in SHORTCUTS] + list(OTHER_KEYS)
    body = "".join(f"<tr><td><b>{keys}</b></td><td>&nbsp;&nbsp;{text}</td></tr>" for keys, text in rows)
    return f"<table>{body}</table>"
