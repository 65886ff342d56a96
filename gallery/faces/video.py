"""Frames of a video to look for faces in: sampled at a fixed rate plus at every scene cut, upright
(rotation metadata applied), bounded per video, streamed (memory holds one frame at a time).

Sampling: one frame every 1/SAMPLE_FPS seconds of presentation time (so variable frame rates are
sampled evenly), and the first frame after each scene cut (a cut: the mean absolute difference of two
consecutive 16x16 colour thumbnails above CUT_THRESHOLD). A video longer than MAX_SAMPLES / SAMPLE_FPS
seconds is sampled more sparsely, so that no video yields more than about MAX_SAMPLES frames (a
2-hour video: one frame every 2 s). Every frame is decoded (cuts need them all), but only sampled frames
are converted to full RGB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from gallery.faces.decoded import DecodedPhoto
from gallery.faces.formats import VIDEO_EXTENSIONS, is_video  # noqa: F401 - part of this module's API

INSTALL_VIDEO = "pip install 'face-gallery[video]'  (PyAV)"
SAMPLE_FPS = 2.0
MAX_SAMPLES = 3600
CUT_THRESHOLD = 30.0  # mean absolute difference (0-255) of consecutive 16x16 colour thumbnails


class VideoError(Exception):
    """A video that cannot be read (or not read further): args = (reason, detail)."""


@dataclass(frozen=True)
class VideoInfo:
    duration: float  # seconds (0 when the container does not say)
    width: int  # as shown (rotation applied)
    height: int
    rotation: int  # degrees the frames are turned to be shown upright
    fps: float | None  # average frame rate, when known


@dataclass
class SampledFrame:
    photo: DecodedPhoto  # the frame as a decoded photo (pixels, scale) for the face pipeline
    t: float  # presentation time in seconds
    cut: bool  # the first frame after a scene cut


def _open(path: str):  # noqa: ANN202 - av.container.InputContainer
    try:
        import av
    except ImportError:
        raise VideoError("missing_library", f"video: its decoder is not installed ({INSTALL_VIDEO})") from None
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError("not_a_video", f"not a readable video ({type(exc).__name__}: {exc})"[:500]) from None
    if not container.streams.video:
        container.close()
        raise VideoError("not_a_video", "the file holds no video stream")
    return container


def probe(path: str) -> VideoInfo:
    """Duration, shown size and rotation of a video, from its header and first frame."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        rotation = 0
        width, height = stream.codec_context.width, stream.codec_context.height
        try:
            for frame in container.decode(stream):
                rotation = _rotation(frame)
                width, height = frame.width, frame.height
                break
        except Exception as exc:  # noqa: BLE001 - FFmpeg's errors are many; the video is unreadable
            raise VideoError("decode_error", f"the first frame does not decode ({type(exc).__name__}: {exc})"[:500]) \
                from None
        if rotation in (90, 270):
            width, height = height, width
        fps = float(stream.average_rate) if stream.average_rate else None
        return VideoInfo(duration, width, height, rotation, fps)
    finally:
        container.close()


def _rotation(frame) -> int:  # noqa: ANN001 - av.VideoFrame
    """Degrees (0, 90, 180, 270) to turn the frame counterclockwise to show it upright."""
    try:
        return int(round(float(frame.rotation or 0) / 90.0)) % 4 * 90
    except (AttributeError, TypeError, ValueError):
        return 0


def sample_frames(path: str, max_side: int = 2048, sample_fps: float = SAMPLE_FPS,
                  max_samples: int = MAX_SAMPLES, duration: float = 0.0,
                  errors: list[str] | None = None) -> Iterator[SampledFrame]:
    """The sampled frames of a video, in time order (see the module docstring). A decoding error part
    way through ends the sampling there and is appended to `errors` (the frames before it stand)."""
    import av

    rate = sample_fps
    if duration > 0 and duration * rate > max_samples:
        rate = max_samples / duration
    step = 1.0 / rate
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        last_thumb: np.ndarray | None = None
        next_t = 0.0
        emitted = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is None or frame.time is None:
                    continue
                t = float(frame.time)
                thumb = frame.to_ndarray(format="rgb24", width=16, height=16).astype(np.int16)
                cut = last_thumb is not None and float(np.abs(thumb - last_thumb).mean()) > CUT_THRESHOLD
                last_thumb = thumb
                if t + 1e-6 < next_t and not cut:
                    continue
                if emitted >= max_samples * 2:  # cuts every frame (noise, a slideshow): bounded still
                    break
                next_t = t + step
                emitted += 1
                yield SampledFrame(_frame_photo(path, frame, max_side), t, bool(cut))
        except av.error.FFmpegError as exc:
            if errors is not None:
                errors.append(f"decoding stopped at {format_time(next_t)}: {type(exc).__name__}: {exc}"[:500])
    finally:
        container.close()


def _frame_photo(path: str, frame, max_side: int) -> DecodedPhoto:  # noqa: ANN001 - av.VideoFrame
    """A sampled frame as a decoded photo: upright, at most max_side on its longest side."""
    rotation = _rotation(frame)
    w, h = frame.width, frame.height
    longest = max(w, h)
    if longest > max_side:
        factor = max_side / longest
        frame = frame.reformat(width=max(2, round(w * factor)), height=max(2, round(h * factor)))
    pixels = frame.to_ndarray(format="rgb24")
    if rotation:
        pixels = np.rot90(pixels, k=rotation // 90)
    pixels = np.ascontiguousarray(pixels)
    shown_w, shown_h = (h, w) if rotation in (90, 270) else (w, h)
    return DecodedPhoto(path=path, size=0, mtime_ns=0, sha256=None, pixels=pixels,
                        scale=pixels.shape[1] / shown_w, width=shown_w, height=shown_h)


def format_time(seconds: float) -> str:
    """`00:12` or `1:02:03`: how answers and progress show a time in a video."""
    total = int(max(0.0, seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def frame_at(path: str, t: float, max_side: int = 4096) -> DecodedPhoto:
    """The upright RGB frame of a video at time `t` (seconds): the first frame at or after it (what
    `faces crop` shows for a face found in a video), at most `max_side` a side; its `scale` is the
    factor from the video's pixels (those of the faces' boxes) to the frame's."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        if stream.time_base:
            container.seek(max(0, int(t / stream.time_base) - 1), stream=stream, backward=True, any_frame=False)
        last = None
        for frame in container.decode(stream):
            last = frame
            if frame.time is not None and frame.time + 1e-3 >= t:
                break
        if last is None:
            raise VideoError("decode_error", f"no frame at {format_time(t)}")
        return _frame_photo(path, last, max_side)
    finally:
        container.close()

