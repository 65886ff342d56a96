"""Videos made in the tests with PyAV: LFW faces composited into moving frames, with scene cuts."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


def write_video(path: Path, shots: list[tuple[Path | None, float, tuple[int, int, int]]], fps: int = 10,
                size: tuple[int, int] = (320, 240), face_side: int = 160, rotation: int = 0,
                codec: str = "libx264") -> Path:
    """A video of `shots` (face photo or None for an empty shot, seconds, background colour): in each
    shot the face photo drifts from left to right over the background, so consecutive frames differ a
    little and a new shot a lot (a cut). `rotation`: display rotation metadata (degrees)."""
    import av

    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        if rotation:
            stream.set_display_rotation(rotation) if hasattr(stream, "set_display_rotation") else None
        n = 0
        for face_path, seconds, colour in shots:
            face = (Image.open(face_path).convert("RGB").resize((face_side, face_side))
                    if face_path is not None else None)
            frames = int(round(seconds * fps))
            for i in range(frames):
                canvas = Image.new("RGB", (width, height), colour)
                if face is not None:
                    travel = width - face_side
                    x = int(travel * i / max(1, frames - 1))
                    canvas.paste(face, (x, (height - face_side) // 2))
                frame = av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")
                frame.pts = n
                n += 1
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
