"""Application set-up: pyqtgraph's global options are set here, once, where the app starts."""

import os

import pyqtgraph as pg
from PyQt5 import QtWidgets


def configure():
    pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)


def application(argv=None):
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(argv or ["hpa-viewer"])
    configure()
    return app


def headless():
    return os.environ.get("QT_QPA_PLATFORM") == "offscreen"
