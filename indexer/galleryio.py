"""What the indexer reads from a gallery: shards (SQLite rows), deleted ids, the model stamp, vectors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from gallery.store import Gallery
from gallery.store.db import Face, Shard
from gallery.store.shards import iter_shard_batches


@dataclass(frozen=True)
class ShardRow:
    shard_id: int
    filename: str
    n_faces: int
    min_face_id: int
    max_face_id: int


def as_gallery(gallery: Gallery | str | Path) -> tuple[Gallery, bool]:
    """(Gallery, owned): a path is opened here (and must be closed by the caller when owned)."""
    if isinstance(gallery, Gallery):
        return gallery, False
    return Gallery.open(gallery), True


def shard_rows(gallery: Gallery, after_shard_id: int = 0) -> list[ShardRow]:
    with gallery.session() as s:
        rows = s.execute(
            select(Shard.shard_id, Shard.filename, Shard.n_faces, Shard.min_face_id, Shard.max_face_id)
            .where(Shard.shard_id > after_shard_id)
            .order_by(Shard.shard_id)
        ).all()
    return [ShardRow(*r) for r in rows]


def deleted_ids(gallery: Gallery, max_face_id: int | None = None) -> np.ndarray:
    """Sorted int64 ids of faces deleted in SQLite (optionally only ids <= max_face_id)."""
    with gallery.session() as s:
        q = select(Face.face_id).where(Face.deleted.is_(True))
        if max_face_id is not None:
            q = q.where(Face.face_id <= max_face_id)
        ids = s.scalars(q.order_by(Face.face_id)).all()
    return np.asarray(ids, dtype=np.int64)


def live_faces_after(gallery: Gallery, max_face_id: int) -> int:
    with gallery.session() as s:
        return int(
            s.scalar(select(func.count()).select_from(Face).where(Face.deleted.is_(False), Face.face_id > max_face_id))
            or 0
        )


def live_faces(gallery: Gallery) -> int:
    with gallery.session() as s:
        return int(s.scalar(select(func.count()).select_from(Face).where(Face.deleted.is_(False))) or 0)


def paths_of(gallery: Gallery, rows: list[ShardRow]) -> list[Path]:
    return [gallery.shards_dir / r.filename for r in rows]


def is_deleted(ids: np.ndarray, deleted_sorted: np.ndarray) -> np.ndarray:
    """Boolean mask: ids found in the sorted `deleted_sorted` array (fast membership, any shape)."""
    if deleted_sorted.size == 0:
        return np.zeros(ids.shape, dtype=bool)
    pos = np.searchsorted(deleted_sorted, ids)
    pos = np.minimum(pos, deleted_sorted.size - 1)
    return deleted_sorted[pos] == ids


def sample_vectors(
    paths: list[Path], total_rows: int, n_sample: int, dim: int, seed: int, batch_size: int = 65536
) -> np.ndarray:
    """A seeded uniform sample of `n_sample` rows drawn across all shards, in one streaming pass.

    Only the sample (n_sample x dim float32) and one batch are in memory at any time.
    """
    rng = np.random.default_rng(seed)
    n_sample = int(min(n_sample, total_rows))
    positions = np.sort(rng.choice(total_rows, size=n_sample, replace=False)) if n_sample < total_rows else None
    out = np.empty((n_sample, dim), dtype=np.float32)
    filled = 0
    offset = 0
    for ids, x in iter_shard_batches(paths, batch_size):
        n = ids.shape[0]
        if positions is None:
            take = x[: n_sample - filled]
        else:
            lo, hi = np.searchsorted(positions, [offset, offset + n])
            take = x[positions[lo:hi] - offset]
        out[filled : filled + take.shape[0]] = take
        filled += take.shape[0]
        offset += n
        if filled >= n_sample:
            break
    return out[:filled]
