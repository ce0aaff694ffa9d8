"""Desktop viewer (PyQt5 + pyqtgraph): RGBY channels, predictions against thresholds, Grad-CAM."""
