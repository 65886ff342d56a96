"""Faces of one video for the ingest: sampled frames (gallery.faces.video) → the same batched face
pipeline as photos → tracks (gallery.faces.tracks) → the rows the gallery stores.

Each track is stored as ordinary, searchable faces of the video's photo row: its best frames (at most
tracks.KEEP, by the quality measure), each with its frame's time, plus the track's template (the mean
embedding of its faces, on the box of its best frame). Every one of them carries the track's span, so
an answer can say "video X, 00:12–00:31". The main track is the longest (a folder or CSV label names
it); the others are unlabeled. Memory holds one batch of frames and each track's few best faces,
however long the video.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from gallery.faces.decode import DecodedPhoto
from gallery.faces.quality import measure_faces
from gallery.faces.tracks import Observation, Track, TrackLinker
from gallery.faces.video import SampledFrame, sample_frames

if TYPE_CHECKING:
    from gallery.faces.pipeline import FacePipeline

FRAME_BATCH = 16  # sampled frames per detection batch


@dataclass
class VideoFaces:
    """What a video gives the gallery: per stored face its arrays and columns, and the counts."""

    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    quality: list[dict] = field(default_factory=list)
    video: list[dict] = field(default_factory=list)  # t_ms, track, track_start_ms, track_end_ms, track_template
    main: int = -1  # the template face of the longest track
    tracks: int = 0
    frames: int = 0  # sampled frames
    seconds: float = 0.0  # of video read
    errors: list[str] = field(default_factory=list)  # decoding stopped part way (the faces before it stand)

    @property
    def ok(self) -> bool:
        return bool(self.boxes)


def video_faces(photo: DecodedPhoto, pipeline: FacePipeline,
                on_time: Callable[[float], None] | None = None) -> VideoFaces:
    """Sample, detect, embed and track the faces of one video (see the module docstring)."""
    spec = pipeline.spec
    template_points, size = spec.template_array(), spec.input_size
    linker = TrackLinker(spec.default_threshold)
    out = VideoFaces()
    batch: list[SampledFrame] = []

    def flush() -> None:
        found = pipeline.embed_photos([f.photo for f in batch])
        for frame, faces in zip(batch, found):
            observations = []
            if faces.ok:
                quality = measure_faces(faces.boxes, faces.scores, faces.landmarks, frame.photo.width,
                                        frame.photo.height, template_points, size, faces.sharpness)
                observations = [Observation(frame.t, faces.boxes[k], float(faces.scores[k]), faces.landmarks[k],
                                            faces.embeddings[k], quality[k].columns()) for k in range(len(faces.boxes))]
            linker.add_frame(frame.t, frame.cut, observations)
            out.frames += 1
            out.seconds = frame.t
        if on_time is not None and batch:
            on_time(batch[-1].t)
        batch.clear()

    for frame in sample_frames(photo.path, pipeline.max_side, duration=photo.duration, errors=out.errors):
        batch.append(frame)
        if len(batch) >= FRAME_BATCH:
            flush()
    if batch:
        flush()
    if photo.duration and not out.errors:
        out.seconds = max(out.seconds, photo.duration)  # read to the end
    _rows(linker.finish(), out)
    return out


def _rows(tracks: list[Track], out: VideoFaces) -> None:
    longest = max(tracks, key=lambda tr: (tr.duration, tr.count, -tr.start), default=None)
    for number, track in enumerate(tracks, start=1):
        span = {"track": number, "track_start_ms": round(track.start * 1000), "track_end_ms": round(track.end * 1000)}
        for obs in track.best:
            _add(out, obs, obs.embedding, obs.quality, {**span, "t_ms": round(obs.t * 1000), "track_template": False})
        best = track.best[0]
        if track is longest:
            out.main = len(out.boxes)
        # the template, on its best frame's box (its mean is of the faces passing the gate, if any)
        _add(out, best, track.template(), best.quality, {**span, "t_ms": round(best.t * 1000), "track_template": True})
    out.tracks = len(tracks)


def _add(out: VideoFaces, obs: Observation, embedding: np.ndarray, quality: dict, video: dict) -> None:
    out.boxes.append(np.asarray(obs.box, np.float32))
    out.scores.append(obs.score)
    out.landmarks.append(np.asarray(obs.landmarks, np.float32))
    out.embeddings.append(np.asarray(embedding, np.float32))
    out.quality.append(dict(quality))
    out.video.append(video)
