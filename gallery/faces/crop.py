"""A face cut from its original photo, with a margin, so that a person can judge a label by eye; or
the whole photo with the face outlined, to see where it was found.

Bounded like an ingest: only a regular file is opened (a FIFO or device at the photo's path is
refused without blocking), never one over the ingest's size limit, never a photo over its pixel
limits (decompression bombs included), and the output is at most `max_side` pixels a side; a JPEG is
decoded at reduced resolution straight from the DCT when the crop is much smaller than the photo.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from gallery.errors import NotInGallery, PhotoRefused
from gallery.faces.decode import MAX_FILE_BYTES, MAX_PIXELS, MAX_SIDE, _Refused, read_regular_file
from gallery.faces.formats import INSTALL_RAW, heif_available, is_raw, is_video, open_raw

MAX_CROP_SIDE = 4096  # pixels a side of the output


def _photo_bytes(photo: Path | str, max_file_bytes: int) -> bytes:
    try:
        return read_regular_file(str(photo), max_file_bytes)
    except _Refused as refused:
        reason, detail = refused.args
        raise PhotoRefused(reason, f"The photo of this face is refused ({photo}: {detail}).") from None
    except OSError as exc:
        raise NotInGallery(
            f"The photo of this face cannot be read any more ({photo}: {exc.strerror or exc}). It may have moved or "
            "changed; `gallery sync` brings the gallery up to date with the archive."
        ) from None


def _open_scaled(photo: Path | str, scale_of: Callable[[int, int], float], max_file_bytes: int,
                 t_ms: int | None = None) -> tuple[Image.Image, float]:
    """(the photo decoded, oriented and in RGB, the factor from its pixels to the decoded image's).
    `scale_of(width, height)` says how small the caller will draw it: a JPEG much larger than that is
    decoded at reduced resolution straight from the DCT. Refuses what an ingest refuses. A video gives
    its frame at `t_ms`; a HEIC or RAW photo is decoded as the ingest decodes it."""
    if is_video(str(photo)):
        return _video_frame(photo, t_ms or 0)
    data = _photo_bytes(photo, max_file_bytes)
    if is_raw(str(photo)):
        return _raw_image(photo, data)
    heif_available()  # HEIC/HEIF: pillow-heif's opener, when installed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
                    raise PhotoRefused("too_large", f"The photo of this face is {width}x{height}: over {MAX_SIDE} px "
                                                    f"a side or {MAX_PIXELS:,} pixels ({photo}).")
                scale = scale_of(width, height)
                if img.format == "JPEG" and scale < 0.5:
                    img.draft("RGB", (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
                factor = img.size[0] / width
                return ImageOps.exif_transpose(img).convert("RGB"), factor
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoRefused("too_large", f"The photo of this face is a decompression bomb ({photo}: {exc}).") from None
    except UnidentifiedImageError:
        raise PhotoRefused("not_an_image", f"The photo of this face is not an image any more ({photo}).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise PhotoRefused("decode_error", f"The photo of this face cannot be decoded ({photo}: "
                                           f"{type(exc).__name__}).") from None


def crop_face(photo: Path | str, box: list[float], margin: float = 0.4, size: int | None = 256,
              max_side: int = MAX_CROP_SIDE, max_file_bytes: int = MAX_FILE_BYTES,
              t_ms: int | None = None) -> Image.Image:
    """The box (x1, y1, x2, y2 in the oriented photo's pixels) grown by `margin` of its size on each
    side, clipped to the photo, square-padded and resized to `size` (None: native resolution); the
    output side is at most `max_side`. A face found in a video is cut from its frame at `t_ms`."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1, 1.0) * (1 + 2 * margin)
    out_side = max(1, min(int(size) if size else round(side), max_side))
    img, factor = _open_scaled(photo, lambda width, height: out_side / side, max_file_bytes, t_ms)
    return _cut(img, factor, box, side, out_side)


def photo_with_face(photo: Path | str, box: list[float], max_side: int = 800,
                    max_file_bytes: int = MAX_FILE_BYTES, t_ms: int | None = None) -> Image.Image:
    """The whole photo, at most `max_side` pixels a side, with the face's box outlined: the face
    where it was found, among the rest of the photo (the people page's "photos" of a person); for a
    face found in a video, its frame at `t_ms`."""
    max_side = max(16, min(int(max_side), MAX_CROP_SIDE))
    img, factor = _open_scaled(photo, lambda width, height: min(1.0, max_side / max(width, height)), max_file_bytes,
                                t_ms)
    if max(img.size) > max_side:
        k = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.LANCZOS)
        factor *= k
    x1, y1, x2, y2 = (v * factor for v in box)
    width = max(2, round(max(img.size) / 200))
    ImageDraw.Draw(img).rectangle((x1, y1, x2, y2), outline=(67, 160, 71), width=width)
    return img


def _video_frame(photo: Path | str, t_ms: int) -> tuple[Image.Image, float]:
    from gallery.faces.video import VideoError, frame_at

    try:
        frame = frame_at(str(photo), t_ms / 1000, MAX_CROP_SIDE)
        return Image.fromarray(frame.pixels), frame.scale
    except VideoError as exc:
        reason, detail = exc.args
        if reason == "not_a_video" and not Path(photo).exists():
            raise NotInGallery(f"The video of this face cannot be read any more ({photo}). It may have moved or "
                               "changed; `gallery sync` brings the gallery up to date with the archive.") from None
        raise PhotoRefused(reason, f"The video of this face cannot be decoded ({photo}: {detail}).") from None


def _raw_image(photo: Path | str, data: bytes) -> tuple[Image.Image, float]:
    """A RAW photo decoded for a crop or a view: never larger than MAX_CROP_SIDE a side (the camera's
    preview when it is that large, else a half-size demosaic where that is enough), refused past the
    ingest's pixel limits."""
    try:
        img, full_w, full_h, _ = open_raw(data, MAX_CROP_SIDE)
    except ImportError:
        raise PhotoRefused("missing_library", f"The RAW photo of this face needs rawpy ({photo}: {INSTALL_RAW}).") \
            from None
    except ValueError as exc:
        raise PhotoRefused("decode_error", f"The RAW photo of this face cannot be decoded ({photo}: {exc}).") from None
    if full_w * full_h > MAX_PIXELS or max(full_w, full_h) > MAX_SIDE:
        raise PhotoRefused("too_large", f"The photo of this face is {full_w}x{full_h}: over {MAX_SIDE} px a side or "
                                        f"{MAX_PIXELS:,} pixels ({photo}).")
    if max(img.size) > MAX_CROP_SIDE:  # a preview larger than the crop can use
        k = MAX_CROP_SIDE / max(img.size)
        img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.LANCZOS)
    return img.convert("RGB"), img.size[0] / max(1, full_w)


def _cut(img: Image.Image, factor: float, box: list[float], side: float, out_side: int) -> Image.Image:
    """The square crop of `box` (photo pixels; `img` is the photo scaled by `factor`) grown to `side`."""
    x1, y1, x2, y2 = box
    s_side = side * factor
    left, top = (x1 + x2) / 2 * factor - s_side / 2, (y1 + y2) / 2 * factor - s_side / 2
    region = (max(0, round(left)), max(0, round(top)), min(img.width, round(left + s_side)),
              min(img.height, round(top + s_side)))
    square = Image.new("RGB", (out_side, out_side), (0, 0, 0))
    if region[2] > region[0] and region[3] > region[1]:
        k = out_side / s_side
        part = img.crop(region)
        part = part.resize((max(1, round(part.width * k)), max(1, round(part.height * k))), Image.Resampling.LANCZOS)
        square.paste(part, (round((region[0] - left) * k), round((region[1] - top) * k)))
    return square
