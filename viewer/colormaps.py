"""A colour per channel. The composite is additive: each channel, after its limits and gamma,
is multiplied by its colour and the four are added (then clipped), so yellow is drawn as true
yellow (red + green light) and two channels overlapping mix as light does.

*Decision*: the defaults are HPA's red, green, blue, yellow; "gray" is there for a channel
inspected alone; cyan, magenta, orange for colour-blind friendly pairings (e.g. green->magenta).
A channel shown alone (the other three off) is drawn in its own colour, as in the composite, so
switching channels on and off never changes a colour; pick "gray" for a neutral solo view.
"""

COLORMAPS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "gray": (1.0, 1.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "orange": (1.0, 0.5, 0.0),
}
DEFAULT_COLORMAPS = ("red", "green", "blue", "yellow")
