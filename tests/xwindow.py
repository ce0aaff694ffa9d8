"""The real-window test pattern, written once for every ``tests/test_viewer_*_window.py``.

Each of those files is both a pytest module and a script: pytest (:func:`run_driver`) starts the
file under ``xvfb-run`` (Xvfb with its default Mesa OpenGL, as on a Linux desktop), the script
builds the window as ``python -m viewer`` does, drives it with a :class:`Driver` (real worker
threads, keys, clicks, the X pointer), saves grabs of the X screen and a ``report.json``; the
tests then check the grabs themselves (:func:`load_grab`) and the report.

By hand: ``PYTHONPATH=. xvfb-run -a -s "-screen 0 1600x1000x24" python tests/test_viewer_X_window.py
--out OUT ...`` (the file's docstring names its arguments); the grabs land in OUT.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
SCREEN = (1600, 1000)


# ---------------------------------------------------------------------- pytest side
def run_driver(script, args, out, timeout):
    """Run ``script`` (a window test file) under xvfb-run with ``args`` and ``--out out``; its
    report.json as a dict, with ``out`` added. Skips where xvfb-run is not installed; a crash or a
    failed drive fails the test with the driver's output."""
    import pytest

    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (make xvfb installs it on Debian/Ubuntu as root)")
    out = Path(out)
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "QT_XCB_GL_INTEGRATION")}
    env["PYTHONPATH"] = str(ROOT)
    cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN[0]}x{SCREEN[1]}x24", sys.executable, str(script),
           *map(str, args), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if proc.returncode in (139, -11):
        pytest.fail("the viewer crashed with a segmentation fault in a real X window:\n" + proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    report["out"] = out
    return report


def load_grab(report, name, rect=None):
    """The grab ``name`` (RGB, int), cropped to ``rect`` = [x, y, w, h] in screen pixels."""
    import cv2

    image = cv2.imread(str(Path(report["out"]) / f"{name}.png"))
    assert image is not None, f"no grab {name}.png"
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(int)
    return image if rect is None else crop(image, rect)


def crop(image, rect):
    x, y, w, h = rect
    return image[y:y + h, x:x + w]


def script_args(*names):
    """The driver's command line: ``names`` (each required) and ``--out``."""
    import argparse

    p = argparse.ArgumentParser()
    for name in (*names, "--out"):
        p.add_argument(name, required=True)
    return p


# ---------------------------------------------------------------------- xvfb side
class Driver:
    """Drives one viewer window in a real X server: waits that process events, screen grabs,
    widget rectangles in screen pixels, keys, and the X pointer."""

    def __init__(self, app, window, out, size=(1600, 1000)):
        self.app, self.window, self.out = app, window, Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        window.resize(*size)
        window.move(0, 0)
        window.show()
        # Xvfb has no window manager to give the window the keyboard focus; a desktop's would.
        window.activateWindow()
        window.raise_()

    def events(self, rounds=10):
        for _ in range(rounds):
            self.app.processEvents()
            time.sleep(0.02)

    def wait(self, condition=lambda: True, what="the window", timeout=60):
        """Process events until ``condition()``; TimeoutError saying what is on screen."""
        from PyQt5 import QtCore

        end = time.time() + timeout
        while not condition():
            if time.time() > end:
                w, cur = self.window, self.window.current
                raise TimeoutError(f"waited {timeout} s for {what}: on screen {cur.sample_id!r}, cam key {cur.cam_key}, "
                                   f"cam {'set' if cur.cam is not None else 'none'}, status "
                                   f"{w.statusBar().currentMessage()!r}, caption {w.image_panel.caption.text()!r}")
            self.app.processEvents(QtCore.QEventLoop.AllEvents, 20)
            time.sleep(0.01)
        self.events()

    def grab(self, name):
        """The whole X screen as OUT/name.png (floating docks and popup menus included)."""
        self.events()
        self.window.repaint()
        self.app.processEvents()
        pixmap = self.app.primaryScreen().grabWindow(0, 0, 0, *SCREEN)
        pixmap.save(str(self.out / f"{name}.png"))
        return pixmap

    @staticmethod
    def rect_of(widget, rect=None):
        """[x, y, w, h] of ``widget`` (or of ``rect`` in its coordinates) in screen pixels."""
        rect = rect or widget.rect()
        top_left = widget.mapToGlobal(rect.topLeft())
        return [top_left.x(), top_left.y(), rect.width(), rect.height()]

    def image_rect(self):
        """Where the composite is on screen (its part inside the view)."""
        panel = self.window.image_panel
        view_rect = panel.graphics.mapFromScene(panel.image_item.sceneBoundingRect()).boundingRect()
        return self.rect_of(panel.graphics.viewport(), view_rect.intersected(panel.graphics.viewport().rect()))

    def image_point(self, x, y):
        """The screen position of image pixel (x, y)'s centre."""
        from PyQt5 import QtCore

        panel = self.window.image_panel
        local = panel.graphics.mapFromScene(panel.image_item.mapToScene(QtCore.QPointF(x + 0.5, y + 0.5)))
        return panel.graphics.viewport().mapToGlobal(local)

    def keys(self, widget, key, modifier=None):
        """A key (with Ctrl unless told) pressed with ``widget`` focused."""
        from PyQt5 import QtCore, QtTest

        widget.setFocus()
        self.app.processEvents()
        QtTest.QTest.keyClick(widget, key, QtCore.Qt.ControlModifier if modifier is None else modifier)
        self.app.processEvents()

    def pointer(self, global_pos):
        """Move the X server's pointer (not a synthetic Qt event): X sends the enter and leave
        notifications a user's mouse would."""
        from PyQt5 import QtGui

        QtGui.QCursor.setPos(global_pos)
        self.events()
