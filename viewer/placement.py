"""Where a floating window (Errors per class) opens the first time: plain rectangle arithmetic in
screen pixels, so that it is tested without a display."""

from PyQt5 import QtCore

LOWER_SHARE = 0.5  # over the image area, it takes at most its lower half (unless that is under MIN_HEIGHT)
MIN_HEIGHT = 240   # the header, the filter line and a few rows of the table


def first_place(screen, frame, inner, image_area, width):
    """The floating window's geometry (QRect): beside the main window, on the right or else on the
    left, where the ``screen`` (available geometry) has ``width`` free there, as tall as the main
    window's client area ``inner`` (``frame`` is its outer edge); otherwise over the lower part of
    ``image_area`` (the image panel, on screen), right-aligned in it, so that it covers neither the
    columns beside the image (the prediction bars) nor anything off-screen."""
    top = max(screen.top(), inner.top())
    tall = max(1, min(inner.height(), screen.bottom() + 1 - top))
    for x in (frame.right() + 1, frame.left() - width):  # beside, where all of it is on screen
        beside = QtCore.QRect(x, top, width, tall)
        if screen.contains(beside):
            return beside
    area = image_area.intersected(screen)
    if area.isEmpty():  # the main window is off-screen: the screen's bottom-right corner
        area = screen
    w = min(width, area.width())
    h = min(area.height(), max(int(area.height() * LOWER_SHARE), MIN_HEIGHT))
    return QtCore.QRect(area.right() + 1 - w, area.bottom() + 1 - h, w, h)
