"""Rebuilding a damaged shard without losing what can be recovered (the store's side of `gallery repair`).

A shard holds what never changes about a face (its vector, box, landmarks, detection score); SQLite
holds what the user made of it (label, ignore mark, clusters, rejections). When a shard file is lost
or damaged its faces' rows stay: SQLite still has every face's photo, box and detection score, and the
vectors usually exist elsewhere (the index's re-rank file or a flat index; failing that, the photo
itself, embedded again). `LostFace` is what SQLite knows of each face of a damaged shard;
`rebuild_shard` writes the shard again, under the same id and file name, from the vectors that were
recovered, so every face keeps its id and with it every curation. Only the faces nothing could
restore are dropped (recorded as a pending erasure, so that the index sheds them too), each with the
reason, and a photo left with no face is forgotten so that the next ingest reads it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, select, update

from gallery.store.clusters import forget_faces_in_clusters
from gallery.store.erase import begin_pending
from gallery.store.schema import Face, Image, Shard, SourceFile, keep_high_water
from gallery.store.shards import ShardRows, write_shard

if TYPE_CHECKING:
    from gallery.store.gallery import Gallery

log = logging.getLogger(__name__)


@dataclass
class LostFace:
    """A face of a damaged shard, as SQLite records it (everything but its vector and landmarks)."""

    face_id: int
    image_id: int
    box: tuple[float, float, float, float]
    det_score: float
    deleted: bool
    photo_sha256: str
    photo_paths: list[str]  # the photo's recorded path first, then every other file holding its content


@dataclass
class Recovered:
    """Vectors found for lost faces, and where from; `reasons` says why each other face was not."""

    embeddings: dict[int, np.ndarray] = field(default_factory=dict)
    landmarks: dict[int, np.ndarray] = field(default_factory=dict)  # (5, 2) from a re-detection
    sources: dict[int, str] = field(default_factory=dict)  # face id -> rerank | flat-index | photo
    reasons: dict[int, str] = field(default_factory=dict)  # face id -> why nothing restored it

    def add(self, face_id: int, embedding: np.ndarray, source: str, landmarks: np.ndarray | None = None) -> None:
        self.embeddings[int(face_id)] = np.asarray(embedding, np.float32)
        self.sources[int(face_id)] = source
        self.reasons.pop(int(face_id), None)
        if landmarks is not None:
            self.landmarks[int(face_id)] = np.asarray(landmarks, np.float32).reshape(5, 2)


def lost_faces(gallery: Gallery, shard_id: int) -> list[LostFace]:
    """Every face row SQLite gives the shard (deleted ones too: an ignore mark is curation)."""
    with gallery.session() as s:
        rows = s.execute(
            select(Face.face_id, Face.image_id, Face.x1, Face.y1, Face.x2, Face.y2, Face.det_score, Face.deleted,
                   Image.sha256, Image.path)
            .join(Image, Image.image_id == Face.image_id).where(Face.shard_id == shard_id).order_by(Face.face_id)
        ).all()
        images = {r.image_id for r in rows}
        others: dict[int, list[str]] = {}
        for image_id, path in s.execute(select(SourceFile.image_id, SourceFile.path)
                                        .where(SourceFile.image_id.in_(images)).order_by(SourceFile.path)):
            others.setdefault(int(image_id), []).append(path)
    out = []
    for r in rows:
        paths = [r.path] + [p for p in others.get(int(r.image_id), []) if p != r.path]
        out.append(LostFace(int(r.face_id), int(r.image_id), (r.x1, r.y1, r.x2, r.y2), float(r.det_score),
                            bool(r.deleted), r.sha256, paths))
    return out


def salvage_landmarks(path: Path) -> dict[int, np.ndarray]:
    """The landmarks column of a damaged shard where it still reads as finite numbers (they are not
    kept anywhere else); {} when the file or the column cannot be read."""
    import pyarrow.parquet as pq

    from gallery.store.shards import embeddings_from_column

    try:
        table = pq.read_table(path, columns=["face_id", "landmarks"])
        ids = table.column("face_id").to_numpy()
        marks = embeddings_from_column(table.column("landmarks"), 10).reshape(-1, 5, 2)
    except Exception:  # noqa: BLE001 - any parse error: nothing to salvage
        return {}
    ok = np.isfinite(marks).all(axis=(1, 2)) & (np.abs(marks) < 1e6).all(axis=(1, 2))
    return {int(i): m for i, m, good in zip(ids, marks, ok) if good}


def rebuild_shard(gallery: Gallery, shard_id: int, faces: list[LostFace], recovered: Recovered,
                  landmarks: dict[int, np.ndarray]) -> dict[str, int]:
    """Write the shard again from the recovered vectors (same id and file name: every face keeps its
    id, label, ignore mark, clusters and rejections) and drop the faces nothing restored, in one
    transaction with the shard's new size and checksum. A crash before the commit leaves a file whose
    checksum disagrees with SQLite: `gallery check` names it again and the next repair redoes this.
    Returns counts for the report."""
    with gallery.session() as s:
        row = s.get(Shard, shard_id)
        filename = row.filename
    keep = [f for f in faces if f.face_id in recovered.embeddings]
    lost = [f for f in faces if f.face_id not in recovered.embeddings]
    path = gallery.shards_dir / filename
    size = sha = None
    if keep:
        stamp = gallery.model_stamp
        rows = ShardRows(
            face_id=np.asarray([f.face_id for f in keep], np.int64),
            image_id=np.asarray([f.image_id for f in keep], np.int64),
            embedding=np.stack([recovered.embeddings[f.face_id] for f in keep]).astype(np.float32),
            box=np.asarray([f.box for f in keep], np.float32),
            landmarks=np.stack([recovered.landmarks.get(f.face_id, landmarks.get(f.face_id, np.zeros((5, 2))))
                                for f in keep]).astype(np.float32),
            det_score=np.asarray([f.det_score for f in keep], np.float32),
        )
        size, sha = write_shard(path, rows, stamp)
    dropped_images: set[int] = set()
    with gallery.session() as s, s.begin():
        keep_high_water(s)
        if lost:
            ids = [f.face_id for f in lost]
            begin_pending(s, "repair", ids)
            forget_faces_in_clusters(s, ids)
            s.execute(delete(Face).where(Face.face_id.in_(ids)))
            # a photo left with no face is forgotten, so that the next ingest reads it again
            images = {f.image_id for f in lost}
            still = set(s.scalars(select(Face.image_id).where(Face.image_id.in_(images))))
            dropped_images = images - still
            if dropped_images:
                s.execute(delete(SourceFile).where(SourceFile.image_id.in_(dropped_images)))
                s.execute(delete(Image).where(Image.image_id.in_(dropped_images)))
        if keep:
            ids = [f.face_id for f in keep]
            s.execute(update(Shard).where(Shard.shard_id == shard_id).values(
                n_faces=len(keep), min_face_id=min(ids), max_face_id=max(ids), bytes=size, sha256=sha))
        else:
            s.execute(delete(Shard).where(Shard.shard_id == shard_id))
    if not keep:
        path.unlink(missing_ok=True)
    gallery._verified = {k for k in gallery._verified if k[0] != filename}
    return {"faces_restored": len(keep), "faces_dropped": len(lost), "photos_to_reingest": len(dropped_images)}
