"""Videos made in the tests with PyAV: LFW faces composited into moving frames, with scene cuts."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


def encode_frames(path: Path, frames: Iterable[tuple[np.ndarray, int]], fps: int, size: tuple[int, int],
                  rotation: int = 0, codec: str = "libx264") -> Path:
    """Write RGB frames (array, pts in 1/fps units) as a video; `rotation`: display rotation metadata
    (degrees counterclockwise, as FFmpeg's display matrix)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.time_base = Fraction(1, fps)
        if rotation:
            stream.set_display_rotation(rotation)
        for pixels, pts in frames:
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = pts
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_video(path: Path, shots: list[tuple[Path | None, float, tuple[int, int, int]]], fps: int = 10,
                size: tuple[int, int] = (320, 240), face_side: int = 160) -> Path:
    """A video of `shots` (face photo or None for an empty shot, seconds, background colour): in each
    shot the face photo drifts from left to right over the background, so consecutive frames differ a
    little and a new shot a lot (a cut)."""
    width, height = size

    def frames() -> Iterable[tuple[np.ndarray, int]]:
        n = 0
        for face_path, seconds, colour in shots:
            face = (Image.open(face_path).convert("RGB").resize((face_side, face_side))
                    if face_path is not None else None)
            count = int(round(seconds * fps))
            for i in range(count):
                canvas = Image.new("RGB", (width, height), colour)
                if face is not None:
                    canvas.paste(face, (int((width - face_side) * i / max(1, count - 1)), (height - face_side) // 2))
                yield np.asarray(canvas), n
                n += 1

    return encode_frames(path, frames(), fps, size)
