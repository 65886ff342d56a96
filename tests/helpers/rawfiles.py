"""Camera RAW files made in the tests: a DNG (the open RAW format) written with tifffile, holding a
Bayer mosaic of a photo and, optionally, an embedded preview, as cameras write them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

DNG_TAGS = [
    (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
    (50708, "s", 0, "Test Camera", True),  # UniqueCameraModel
]
CFA_TAGS = [
    (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
    (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
    (50717, "I", 1, 65535, True),  # WhiteLevel
    (50721, "2i", 9, (10000, 1, 0, 1, 0, 1, 0, 1, 10000, 1, 0, 1, 0, 1, 0, 1, 10000, 1), True),  # ColorMatrix1
    (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
]


def bayer_mosaic(rgb: np.ndarray) -> np.ndarray:
    """The 16-bit RGGB sensor data a camera would record for an 8-bit RGB photo."""
    h, w = rgb.shape[:2]
    cfa = np.zeros((h - h % 2, w - w % 2), np.uint16)
    cfa[0::2, 0::2] = rgb[0:h - h % 2:2, 0:w - w % 2:2, 0]
    cfa[0::2, 1::2] = rgb[0:h - h % 2:2, 1:w - w % 2:2, 1]
    cfa[1::2, 0::2] = rgb[1:h - h % 2:2, 0:w - w % 2:2, 1]
    cfa[1::2, 1::2] = rgb[1:h - h % 2:2, 1:w - w % 2:2, 2]
    return cfa * 257


def write_dng(path: Path, sensor_rgb: np.ndarray, orientation: int = 1, preview: np.ndarray | None = None) -> Path:
    """A DNG whose sensor data is the mosaic of `sensor_rgb` (stored as the camera held it), with EXIF
    `orientation`, and `preview` (8-bit RGB, same orientation as the sensor data) in IFD 0 as DNG
    writers put it, the raw image then in a SubIFD."""
    import tifffile

    orient = [(274, "H", 1, orientation, True)]
    cfa = bayer_mosaic(sensor_rgb)
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:
        if preview is None:
            tw.write(cfa, photometric=32803, compression=None, metadata=None,
                     extratags=[(254, "I", 1, 0, True), *DNG_TAGS, *orient, *CFA_TAGS])
        else:
            tw.write(preview, photometric="rgb", compression=None, metadata=None, subifds=1,
                     extratags=[(254, "I", 1, 1, True), *DNG_TAGS, *orient])
            tw.write(cfa, photometric=32803, compression=None, metadata=None,
                     extratags=[(254, "I", 1, 0, True), *CFA_TAGS])
    path.write_bytes(buf.getvalue())
    return path
