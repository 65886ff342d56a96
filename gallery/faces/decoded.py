"""What decoding a photo gives: its pixels, or why it cannot be used (gallery.faces.decode reads photos,
gallery.faces.video samples video frames; both hand the face pipeline a `DecodedPhoto`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DecodedPhoto:
    """A decoded photo, or a failure with a reason code and a human-readable detail."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    pixels: np.ndarray | None = None  # (h, w, 3) uint8, possibly downsized
    scale: float = 1.0  # pixels = original * scale
    width: int = 0  # original (oriented) size
    height: int = 0
    reason: str | None = None  # unreadable | empty_file | not_an_image | truncated | too_large | ...
    detail: str | None = None
    install: str | None = None  # reason missing_library: the command that installs the decoder
    orientation: int = 1  # the EXIF orientation that was applied (face regions in XMP may need it)
    xmp: bytes | None = None  # the embedded XMP packet, if any (face regions are read from it)
    video: bool = False  # a video: no pixels here; its frames are sampled by gallery.faces.video
    duration: float = 0.0  # a video's length in seconds (0: not known)

    @property
    def ok(self) -> bool:
        return self.reason is None
