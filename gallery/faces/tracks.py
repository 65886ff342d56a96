"""Faces across the sampled frames of a video linked into tracks: one person's continuous presence in
one shot. Pure logic over boxes, embeddings and quality; no decoding, no torch.

Linking, frame by frame: a face continues an open track when its box overlaps the track's last box
(IoU at least LINK_IOU) and its embedding is not clearly another person's (cosine with the track's mean
at least 2 s - 1, with s the model's 1:1 same-person threshold), or, when the person moved too fast for
the boxes to overlap, when the embeddings alone say "same person" (cosine at least s). Cosine scales
differ between models (dlib-resnet: same-person LFW A-J pairs at 0.955 median, different people at
0.837 median; s = 0.91 keeps 99.4% of the first and 2% of the second), hence thresholds from the model;
a model without a published threshold links by box overlap only. Pairs are taken best first, each face
and each track once. A scene cut
closes every open track (a track never spans two shots); a track not seen for MAX_GAP seconds closes.

What a track keeps: its first and last time, the running sum of its embeddings (its template: the
renormalised mean), and its KEEP best observations by the quality measure (faces passing the quality
gate first, then the larger and more frontal), which are what the gallery stores and shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

LINK_IOU = 0.3
MAX_GAP = 2.0  # seconds
KEEP = 3


@dataclass
class Observation:
    """One face in one sampled frame."""

    t: float
    box: np.ndarray  # (4,) x1 y1 x2 y2, original frame pixels
    score: float
    landmarks: np.ndarray  # (5, 2)
    embedding: np.ndarray  # (D,) unit
    quality: dict  # the store's quality columns (q_size, q_inside, q_sharpness, q_pose, quality_issue)

    def rank(self) -> tuple[bool, float]:
        q = self.quality
        pose = q.get("q_pose") or 0.0
        return q.get("quality_issue") is None, float(q.get("q_size") or 0.0) * max(0.0, 1.0 - pose)


@dataclass
class Track:
    number: int
    start: float
    end: float
    last_box: np.ndarray
    total: np.ndarray  # sum of the embeddings
    count: int = 0
    good_total: np.ndarray | None = None  # sum of the embeddings of faces passing the quality gate
    good_count: int = 0
    best: list[Observation] = field(default_factory=list)

    def add(self, obs: Observation) -> None:
        self.end = max(self.end, obs.t)
        self.last_box = obs.box
        self.total = self.total + obs.embedding
        self.count += 1
        if obs.quality.get("quality_issue") is None:
            self.good_total = obs.embedding.copy() if self.good_total is None else self.good_total + obs.embedding
            self.good_count += 1
        self.best.append(obs)
        self.best.sort(key=Observation.rank, reverse=True)
        del self.best[KEEP:]

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(1e-12, float(np.linalg.norm(self.total)))

    def template(self) -> np.ndarray:
        """The track's template: the renormalised mean of its faces that pass the quality gate (of all
        its faces when none does)."""
        total = self.good_total if self.good_total is not None else self.total
        return (total / max(1e-12, float(np.linalg.norm(total)))).astype(np.float32)

    @property
    def duration(self) -> float:
        return self.end - self.start


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class TrackLinker:
    """Feed it each sampled frame's faces in time order; `finish()` gives every track."""

    def __init__(self, same_person: float) -> None:
        """`same_person`: the model's 1:1 cosine threshold (above 1: none; link by box overlap only)."""
        self.jump_sim = same_person if same_person <= 1.0 else math.inf
        self.link_sim = 2 * same_person - 1 if same_person <= 1.0 else -math.inf
        self.open: list[Track] = []
        self.closed: list[Track] = []
        self._next = 1

    def add_frame(self, t: float, cut: bool, faces: list[Observation]) -> None:
        if cut:
            self._close(lambda _track: True)
        else:
            self._close(lambda track: t - track.end > MAX_GAP)
        pairs = []
        for i, track in enumerate(self.open):
            mean = track.mean
            for j, obs in enumerate(faces):
                sim = float(mean @ obs.embedding)
                overlap = box_iou(track.last_box, obs.box)
                if (overlap >= LINK_IOU and sim >= self.link_sim) or sim >= self.jump_sim:
                    pairs.append((overlap + sim, i, j))
        pairs.sort(reverse=True)
        used_tracks: set[int] = set()
        used_faces: set[int] = set()
        for _, i, j in pairs:
            if i in used_tracks or j in used_faces:
                continue
            used_tracks.add(i)
            used_faces.add(j)
            self.open[i].add(faces[j])
        for j, obs in enumerate(faces):
            if j not in used_faces:
                track = Track(self._next, obs.t, obs.t, obs.box, np.zeros_like(obs.embedding))
                self._next += 1
                track.add(obs)
                self.open.append(track)

    def _close(self, done) -> None:  # noqa: ANN001 - Callable[[Track], bool]
        still = []
        for track in self.open:
            (self.closed if done(track) else still).append(track)
        self.open = still

    def finish(self) -> list[Track]:
        self._close(lambda _track: True)
        return sorted(self.closed, key=lambda track: (track.start, track.number))
