"""Where Errors per class opens the first time (viewer.placement): beside the main window where the
screen has room, else over the image's lower part, never over the columns beside it nor off-screen
(tests/test_viewer_layout_window.py checks the same in a real X window)."""

from PyQt5.QtCore import QRect

from viewer.placement import first_place

SCREEN = QRect(0, 0, 1600, 1000)


def test_beside_on_the_right_then_the_left_where_there_is_room():
    window = QRect(0, 0, 1100, 800)
    assert first_place(SCREEN, window, window, QRect(262, 80, 600, 600), 360) == QRect(1100, 0, 360, 800)
    window = QRect(500, 100, 1100, 800)
    assert first_place(SCREEN, window, window, QRect(762, 180, 600, 600), 360) == QRect(140, 100, 360, 800)


def test_over_the_lower_half_of_the_image_on_a_full_width_window():
    window, image = QRect(0, 0, 1600, 1000), QRect(262, 80, 960, 760)
    place = first_place(SCREEN, window, window, image, 360)
    assert image.contains(place) and place.right() == image.right() and place.bottom() == image.bottom()
    assert place.height() == 380 and place.width() == 360


def test_a_narrow_or_off_screen_image_area_keeps_it_on_screen():
    window = QRect(0, 0, 1600, 1000)
    place = first_place(SCREEN, window, window, QRect(262, 80, 200, 300), 360)
    assert place == QRect(262, 140, 200, 240)  # never wider than the image area; its lower 240 px
    place = first_place(SCREEN, QRect(-2000, 0, 1600, 1000), QRect(-2000, 0, 1600, 1000), QRect(-1700, 80, 900, 700),
                        360)
    assert SCREEN.contains(place)
