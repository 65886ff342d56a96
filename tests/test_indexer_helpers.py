"""Helpers for the indexer tests: small synthetic galleries written the way ingestion writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import insert

from gallery.store import Gallery
from gallery.store.db import Face, Image, Shard
from gallery.store.shards import ShardRows, shard_filename, write_shard


def stamp(dim: int) -> dict:
    return {"name": f"test-{dim}d", "dim": dim, "input_size": 0, "preprocessing": "test"}


def unit_vectors(n: int, dim: int, seed: int, clusters: int = 0) -> np.ndarray:
    """Unit vectors; with clusters > 0, noisy copies of `clusters` centres (a structure IVF can use)."""
    rng = np.random.default_rng(seed)
    if clusters:
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        x = centres[rng.integers(0, clusters, n)] + 0.7 * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    else:
        x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def add_shards(gallery: Gallery, vectors: np.ndarray, shard_size: int = 5000) -> np.ndarray:
    """Append `vectors` as new shards (ids continue after the highest face id); returns their ids."""
    dim = vectors.shape[1]
    gallery.stamp_model(stamp(dim))
    with gallery.session() as s:
        next_id = (s.query(Face.face_id).order_by(Face.face_id.desc()).limit(1).scalar() or 0) + 1
        next_shard = (s.query(Shard.shard_id).order_by(Shard.shard_id.desc()).limit(1).scalar() or 0) + 1
    all_ids = np.arange(next_id, next_id + len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), shard_size):
        emb = vectors[start : start + shard_size]
        ids = all_ids[start : start + shard_size]
        n = len(ids)
        rows = ShardRows(
            face_id=ids,
            image_id=ids,
            embedding=emb,
            box=np.zeros((n, 4), np.float32),
            landmarks=np.zeros((n, 5, 2), np.float32),
            det_score=np.ones(n, np.float32),
        )
        name = shard_filename(next_shard)
        size = write_shard(gallery.shards_dir / name, rows, stamp(dim))
        # plain executemany: ORM objects for tens of thousands of rows would dominate the test time
        with gallery.engine.begin() as conn:
            conn.execute(
                insert(Image),
                [
                    {
                        "image_id": int(i),
                        "sha256": f"{int(i):064x}",
                        "path": f"img/{int(i)}.jpg",
                        "status": "done",
                        "n_faces": 1,
                    }
                    for i in ids
                ],
            )
            conn.execute(
                insert(Shard),
                [
                    {
                        "shard_id": next_shard,
                        "filename": name,
                        "n_faces": n,
                        "min_face_id": int(ids[0]),
                        "max_face_id": int(ids[-1]),
                        "bytes": size,
                        "created_at": 0.0,
                    }
                ],
            )
            conn.execute(
                insert(Face),
                [
                    {
                        "face_id": int(i),
                        "image_id": int(i),
                        "shard_id": next_shard,
                        "det_score": 1.0,
                        "x1": 0.0,
                        "y1": 0.0,
                        "x2": 1.0,
                        "y2": 1.0,
                        "deleted": False,
                        "is_main": True,
                    }
                    for i in ids
                ],
            )
        next_shard += 1
    return all_ids


def make_gallery(root: Path, vectors: np.ndarray, shard_size: int = 5000) -> Gallery:
    gallery = Gallery.open_or_create(root)
    add_shards(gallery, vectors, shard_size)
    return gallery


def mark_deleted(gallery: Gallery, ids) -> None:
    with gallery.session() as s, s.begin():
        for i in ids:
            face = s.get(Face, int(i))
            face.deleted = True
