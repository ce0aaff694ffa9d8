"""The pixel size a TIFF file records, for the scale bar.

Read, in this order, with Pillow's TIFF reader (headers only, no pixels):

- an OME-TIFF description: ``PhysicalSizeX`` (and ``PhysicalSizeXUnit``, micrometres by default);
- an ImageJ description (``ImageJ=...``, ``unit=micron``): XResolution is pixels per that unit;
- XResolution with ResolutionUnit centimetre or inch (TIFF's own calibration).

*Decisions*:
- A resolution in whole dots per inch up to 1200 (72, 96, 300 ... : what image editors write
  by default) is a print resolution, not a calibration, and so is any result outside
  0.001..50 um per pixel: microscope pixels are 0.01 to a few micrometres. Neither draws a bar.
- Only TIFF: HPA's Kaggle PNGs carry no calibration and a PNG's pHYs is a print setting.
- Only the first 4 MiB of a file are read (runtime.reader's header budget): a file whose tags
  lie beyond that (rare: ImageJ, tifffile and Pillow write them first) counts as uncalibrated.
- The size is of one pixel of the field as the viewer shows it: every channel is shown at the
  red file's size (runtime.reader resizes the others), so a size read from another channel is
  scaled by that file's width over the shown width.
"""

import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import TiffImagePlugin

from runtime.reader import HEADER_BUDGET
from runtime.regular import open_regular_fd

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
PLAUSIBLE_UM = (0.001, 50.0)
UNITS_UM = {"m": 1e6, "cm": 1e4, "mm": 1e3, "um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0,
            "micrometer": 1.0, "micrometre": 1.0, "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3}
RESOLUTION_UNIT_UM = {2: 25400.0, 3: 10000.0}   # TIFF ResolutionUnit: 2 inch, 3 centimetre
_OME_SIZE = re.compile(r'PhysicalSizeX="([^"]+)"')
_OME_UNIT = re.compile(r'PhysicalSizeXUnit="([^"]+)"')


@dataclass(frozen=True)
class PixelSize:
    um: float        # one pixel of the field as shown, in micrometres
    source: str      # where it was read, for the tooltip: "A_red.tif (ImageJ description)"


def tiff_pixel_size(path):
    """(um per pixel, file width in pixels, how it was recorded) from a TIFF's header, or None
    when the file records no usable calibration (or cannot be read: the image reader reports that)."""
    try:
        fd, _st = open_regular_fd(path)
    except OSError:
        return None
    try:
        head = os.pread(fd, HEADER_BUDGET, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        with TiffImagePlugin.TiffImageFile(io.BytesIO(head)) as image:
            tags = dict(image.tag_v2)
            width = image.size[0]
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for a damaged header
        log.debug("%s: no TIFF tags read (%s)", path, err)
        return None
    found = _from_tags(tags)
    if found is None:
        return None
    um, how = found
    return (um, width, how) if PLAUSIBLE_UM[0] <= um <= PLAUSIBLE_UM[1] else None


def _from_tags(tags):
    description = tags.get(270, "")
    description = description if isinstance(description, str) else ""
    if "<OME" in description:
        size = _OME_SIZE.search(description)
        unit = _OME_UNIT.search(description)
        scale = UNITS_UM.get(unit.group(1).strip().lower() if unit else "um")
        value = _number(size.group(1)) if size else None
        if value and scale:
            return value * scale, "OME description"
    xres = _number(tags.get(282))
    if description.startswith("ImageJ="):
        fields = dict(line.split("=", 1) for line in description.splitlines() if "=" in line)
        scale = UNITS_UM.get(fields.get("unit", "").strip().lower())
        if scale and xres:
            return scale / xres, "ImageJ description"
        return None
    unit = tags.get(296, 2)  # TIFF's default ResolutionUnit is the inch
    if xres and unit in RESOLUTION_UNIT_UM:
        if unit == 2 and xres <= 1200 and float(xres).is_integer():
            return None  # a print resolution (72, 300 dpi ...), not a calibration
        return RESOLUTION_UNIT_UM[unit] / xres, "TIFF resolution tags"
    return None


def _number(value):
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if number > 0 and number == number and number != float("inf") else None


def field_pixel_size(paths, shown_width):
    """The PixelSize of a field shown ``shown_width`` pixels wide from its channel files
    (``paths``, red first): the first TIFF that records one, scaled to the shown width."""
    for path in paths:
        path = Path(path)
        if path.suffix.lower() not in TIFF_SUFFIXES:
            continue
        found = tiff_pixel_size(path)
        if found is not None:
            um, width, how = found
            return PixelSize(um * width / shown_width, f"{path.name} ({how})" + (
                f", scaled from its {width} px to the {shown_width} px shown" if width != shown_width else ""))
    return None
