"""Read and decode one photo into an RGB array, or say precisely why it cannot be used.

Runs in worker processes: it reads the bytes once, hashes them (identical files are one image),
applies EXIF orientation, converts any mode to 8-bit RGB and downsizes huge photos for detection.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import time
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gallery.faces.decoded import DecodedPhoto
from gallery.faces.formats import MissingLibrary, check_library, is_raw, is_video, open_raw
from gallery.faces.xmp import extract_packet

# We refuse anything above this; Pillow's own bomb guard is aligned to it (its default, 89 MP,
# would refuse 108 MP phone photos).
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
MAX_SIDE = 40_000
MIN_SIDE = 16
MAX_FILE_BYTES = 256 * 2**20  # default --max-file-size: larger files are refused before reading
# A JPEG may come out up to this much under max_side when that lets the decoder scale it down in the
# DCT (by 2, 4 or 8): a 12 MP phone photo (4032×3024) then decodes at 2016×1512 about 4× faster and
# needs no resize, instead of a full decode resized to 2048. Faces lose at most 5% of their pixels.
DRAFT_SLACK = 0.05


class _Refused(Exception):
    """A file that is not read: (reason, detail)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, or _Refused. Opened without blocking and
    checked on the open descriptor, so a FIFO never hangs and /dev/zero is never read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("not_a_regular_file", f"{_kind(st.st_mode)}: only regular files are read")
        if st.st_size > max_bytes:
            raise _Refused("file_too_large", f"{st.st_size:,} bytes is over the {max_bytes:,}-byte limit "
                                             "(--max-file-size)")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > max_bytes:  # grew while being read
                raise _Refused("file_too_large", f"over the {max_bytes:,}-byte limit (--max-file-size)")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white (what a viewer shows)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size else 1.0
        if top > 255:
            arr = arr * (255.0 / (65535.0 if top <= 65535 else top))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
        arr = (arr - lo) / (hi - lo if hi > lo else 1.0) * 255.0
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def content_sha256(path: str, max_bytes: int = MAX_FILE_BYTES) -> tuple[str | None, str | None]:
    """(the SHA-256 of a file's content as ingest computes it, None), or (None, why it was not read)."""
    if is_video(path):
        try:
            sha256, total = _streamed_sha256(path)
        except _Refused as refused:
            return None, refused.args[1]
        except OSError as exc:
            return None, f"{type(exc).__name__}: {exc.strerror or exc}"
        return (sha256, None) if total else (None, "an empty file")
    try:
        data = read_regular_file(path, max_bytes)
    except _Refused as refused:
        return None, refused.args[1]
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc.strerror or exc}"
    if not data:
        return None, "an empty file"
    return hashlib.sha256(data).hexdigest(), None


def draft_size(width: int, height: int, max_side: int) -> tuple[int, int] | None:
    """The size to ask a JPEG decoder for (it returns at least that, scaled by 1/2, 1/4 or 1/8), or
    None when no such scaling keeps the photo within DRAFT_SLACK of max_side."""
    longest = max(width, height)
    floor = max_side * (1 - DRAFT_SLACK)
    if longest / 2 < floor:
        return None
    return max(1, math.ceil(width * floor / longest)), max(1, math.ceil(height * floor / longest))


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise _Refused("too_large", f"{width}x{height} exceeds {MAX_SIDE} px per side or {MAX_PIXELS:,} pixels")
    if min(width, height) < MIN_SIDE:
        raise _Refused("too_small", f"{width}x{height} is below {MIN_SIDE} px")


def _open_pillow(data: bytes, max_side: int) -> tuple[Image.Image, int, int, int]:
    """(the upright RGB image, its upright full width and height, the EXIF orientation applied) of a
    format Pillow opens (with pillow-heif's opener for HEIC/HEIF); _Refused for a size we do not read."""
    img = Image.open(io.BytesIO(data))
    width, height = img.size
    _check_size(width, height)
    if img.format == "JPEG" and (target := draft_size(width, height, max_side)):
        img.draft("RGB", target)  # decode at reduced resolution straight from the DCT
    orientation = img.getexif().get(0x0112, 1)
    img.load()
    img = ImageOps.exif_transpose(img)
    # Orientations 5-8 rotate by 90 degrees: the photo as seen is height x width.
    orient_w, orient_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return _to_rgb(img), orient_w, orient_h, orientation if orientation in range(1, 9) else 1


def decode_photo(
    path: str, size: int, mtime_ns: int, max_side: int = 2048, max_file_bytes: int = MAX_FILE_BYTES,
    videos: bool = False,
) -> DecodedPhoto:
    """Decode for ingestion. Never raises for a bad photo: the reason is in the result. With `videos`
    (the ingest), a video is only hashed and probed here (its frames are streamed by the ingest);
    without, a video is refused as `not_a_photo` (a query, an upload, a crop take photos)."""
    if is_video(path):
        if not videos:
            return DecodedPhoto(path=path, size=size, mtime_ns=mtime_ns, sha256=None, reason="not_a_photo",
                                detail="a video: this takes photos (export a frame of it as a photo)")
        return _video_header(path, size, mtime_ns)
    result = DecodedPhoto(path=path, size=size, mtime_ns=mtime_ns, sha256=None)
    try:
        data = read_regular_file(path, max_file_bytes)
    except _Refused as refused:
        result.reason, result.detail = refused.args
        return result
    except OSError as exc:
        result.reason, result.detail = "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}"
        return result
    result.size = len(data)
    result.sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        result.reason, result.detail = "empty_file", "0 bytes"
        return result
    try:
        check_library(path, data)
    except MissingLibrary as missing:
        result.reason, result.detail, result.install = "missing_library", missing.detail, missing.install
        return result
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if is_raw(path):
                img, orient_w, orient_h, result.orientation = open_raw(data, max_side)
                _check_size(orient_w, orient_h)
                img = _to_rgb(img)
            else:
                img, orient_w, orient_h, result.orientation = _open_pillow(data, max_side)
    except _Refused as refused:
        result.reason, result.detail = refused.args
        return result
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        result.reason, result.detail = "too_large", f"decompression bomb: {exc}"
        return result
    except UnidentifiedImageError:
        result.reason, result.detail = "not_an_image", "not a recognised image format"
        return result
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        truncated = "truncated" in text.lower() or "broken data stream" in text.lower()
        result.reason = "truncated" if truncated else "decode_error"
        result.detail = f"{type(exc).__name__}: {text}"[:500]
        return result
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one photo must not end the run
        result.reason, result.detail = "decode_error", f"{type(exc).__name__}: {exc}"[:500]
        return result
    result.width, result.height = orient_w, orient_h
    result.xmp = extract_packet(data)
    longest = max(img.size)
    if longest > max_side:
        factor = max_side / longest
        img = img.resize((max(1, round(img.size[0] * factor)), max(1, round(img.size[1] * factor))),
                         Image.Resampling.BILINEAR, reducing_gap=2.0)
    result.pixels = np.array(img, dtype=np.uint8)  # a writable copy (torch wraps it as is)
    result.scale = result.pixels.shape[1] / orient_w
    return result


def _streamed_sha256(path: str) -> tuple[str, int]:
    """(SHA-256, size) of a regular file read in chunks (a video: never held in memory whole)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("not_a_regular_file", f"{_kind(st.st_mode)}: only regular files are read")
        total = 0
        while chunk := os.read(fd, 4 << 20):
            digest.update(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest(), total


def _video_header(path: str, size: int, mtime_ns: int) -> DecodedPhoto:
    """A video file: its content hash (streamed: videos are large, and not held in memory), its shown
    size and duration; or why it cannot be read."""
    from gallery.faces.video import VideoError, probe

    result = DecodedPhoto(path=path, size=size, mtime_ns=mtime_ns, sha256=None, video=True)
    try:
        result.sha256, total = _streamed_sha256(path)
    except _Refused as refused:
        result.reason, result.detail = refused.args
        return result
    except OSError as exc:
        result.reason, result.detail = "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}"
        return result
    result.size = total
    if total == 0:
        result.reason, result.detail = "empty_file", "0 bytes"
        return result
    try:
        info = probe(path)
    except VideoError as exc:
        result.reason, result.detail = exc.args
        if result.reason == "missing_library":
            from gallery.faces.video import INSTALL_VIDEO

            result.install = INSTALL_VIDEO
        return result
    result.width, result.height, result.duration = info.width, info.height, info.duration
    return result


def timed_decode(
    path: str, size: int, mtime_ns: int, max_side: int, max_file_bytes: int = MAX_FILE_BYTES
) -> tuple[DecodedPhoto, float]:
    """Worker-process entry point: the decode and its own duration (for per-stage figures)."""
    t0 = time.perf_counter()
    photo = decode_photo(path, size, mtime_ns, max_side, max_file_bytes, videos=True)
    return photo, time.perf_counter() - t0
