"""Photo formats beyond Pillow's own: HEIC/HEIF (pillow-heif), AVIF (Pillow's own plugin) and camera RAW
(rawpy/LibRaw). Each opener returns a Pillow image already turned upright, so the rest of decoding is the
same for every format; a format whose library is not installed is a `MissingLibrary`, which names the
package to install, never a silent skip.

RAW: most RAW files (DNG, CR2, CR3, NEF, ARW, ...) embed a full-size JPEG preview the camera rendered.
Decoding that preview is many times faster than demosaicing the sensor data, and it is what the
photographer saw; it is used whenever it is at least as large as detection needs (the photo's longest
side, at most `max_side`). Otherwise (no preview, or a small one) LibRaw demosaics the sensor data.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageOps

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
AVIF_EXTENSIONS = frozenset({".avif"})
RAW_EXTENSIONS = frozenset({".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf",
                            ".rw2", ".raf", ".pef", ".srw", ".x3f", ".3fr", ".erf", ".kdc", ".mrw", ".raw",
                            ".rwl", ".iiq"})
PILLOW_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
PHOTO_EXTENSIONS = PILLOW_EXTENSIONS | HEIF_EXTENSIONS | AVIF_EXTENSIONS | RAW_EXTENSIONS
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"})

INSTALL_HEIF = "pip install pillow-heif"
INSTALL_RAW = "pip install 'face-gallery[raw]'  (rawpy)"
INSTALL_AVIF = "pip install --upgrade pillow  (a Pillow built with AVIF support, 11.2 or later)"

# LibRaw's `flip` (sizes.flip) → the Pillow transpose that turns the sensor image upright.
_LIBRAW_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
_LIBRAW_FLIP_EXIF = {0: 1, 3: 3, 5: 8, 6: 6}  # the same turn as an EXIF orientation
# A preview may come out this much under the size detection needs and still be used.
PREVIEW_SLACK = 0.05


class MissingLibrary(Exception):
    """A photo of a format whose decoding library is not installed: args = (format name, install command)."""

    @property
    def detail(self) -> str:
        fmt, command = self.args
        return f"{fmt} photo: its decoder is not installed ({command})"

    @property
    def install(self) -> str:
        return self.args[1]


_heif_registered: bool | None = None


def heif_available() -> bool:
    """pillow-heif's opener registered with Pillow (once per process); False when it is not installed."""
    global _heif_registered
    if _heif_registered is None:
        try:
            import pillow_heif
        except ImportError:
            _heif_registered = False
        else:
            pillow_heif.register_heif_opener()
            _heif_registered = True
    return _heif_registered


def avif_available() -> bool:
    from PIL import features

    return bool(features.check("avif"))


def sniff_isobmff_brand(data: bytes) -> str | None:
    """The major brand of an ISO base media file (`heic`, `avif`, `mif1`, ...), or None."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return data[8:12].decode("ascii", "replace").strip()
    return None


def check_library(path: str, data: bytes) -> None:
    """Raise MissingLibrary when this photo's format needs a library that is not installed."""
    suffix = Path(path).suffix.lower()
    brand = sniff_isobmff_brand(data)
    is_avif = suffix in AVIF_EXTENSIONS or brand in ("avif", "avis")
    if is_avif:
        if not avif_available() and not heif_available():
            raise MissingLibrary("AVIF", INSTALL_AVIF)
        return
    if suffix in HEIF_EXTENSIONS or brand in ("heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1"):
        if not heif_available():
            raise MissingLibrary("HEIC/HEIF", INSTALL_HEIF)
        return
    if suffix in RAW_EXTENSIONS:
        try:
            import rawpy  # noqa: F401
        except ImportError:
            raise MissingLibrary("RAW", INSTALL_RAW) from None


def is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_raw(path: str) -> bool:
    return Path(path).suffix.lower() in RAW_EXTENSIONS


def open_raw(data: bytes, max_side: int) -> tuple[Image.Image, int, int, int]:
    """(the upright image, the photo's upright full width and height, the orientation applied as an EXIF
    orientation) of a camera RAW file.

    The embedded preview when it is large enough for detection, else LibRaw's demosaic (half size when
    even that is larger than detection needs). Raises ValueError for a file LibRaw cannot read."""
    import rawpy

    try:
        raw = rawpy.imread(io.BytesIO(data))
    except (rawpy.LibRawError, OSError) as exc:
        raise ValueError(f"not a readable RAW file ({type(exc).__name__}: {exc})") from None
    with raw:
        sizes = raw.sizes
        turned = sizes.flip in (5, 6)
        full_w, full_h = (sizes.height, sizes.width) if turned else (sizes.width, sizes.height)
        needed = min(max_side, max(full_w, full_h)) * (1 - PREVIEW_SLACK)
        preview = _raw_preview(raw, sizes.flip, needed)
        if preview is not None and max(preview.size) >= needed:
            return preview, full_w, full_h, _LIBRAW_FLIP_EXIF.get(sizes.flip, 1)
        half = max(full_w, full_h) / 2 >= max_side  # half size: 4x less work, still enough pixels
        try:
            rgb = raw.postprocess(use_camera_wb=True, half_size=half, output_bps=8)
        except rawpy.LibRawError as exc:
            raise ValueError(f"RAW sensor data could not be decoded ({type(exc).__name__}: {exc})") from None
        return Image.fromarray(rgb), full_w, full_h, _LIBRAW_FLIP_EXIF.get(sizes.flip, 1)


def _raw_preview(raw, flip: int, needed: float) -> Image.Image | None:  # noqa: ANN001 - rawpy.RawPy
    """The RAW file's embedded preview, upright, or None when it has none (or one that does not decode).
    A JPEG preview is decoded straight from the DCT at the smallest scale that still gives `needed`
    pixels on its longest side."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError, rawpy.LibRawError):
        return None
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            img = Image.open(io.BytesIO(thumb.data))
            longest = max(img.size)
            if longest / 2 >= needed:
                img.draft("RGB", (math.ceil(img.size[0] * needed / longest), math.ceil(img.size[1] * needed / longest)))
            img.load()
            if img.getexif().get(0x0112, 1) != 1:  # the preview says its own orientation
                return ImageOps.exif_transpose(img)
        else:
            img = Image.fromarray(thumb.data)
    except (OSError, ValueError, SyntaxError):
        return None
    transpose = _LIBRAW_FLIP.get(flip)
    return img.transpose(transpose) if transpose is not None else img
