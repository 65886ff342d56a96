"""Small synthetic galleries for indexer, search and bench tests, written through the store's own API."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gallery.store import Gallery, append_embedded_faces


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
    parts = [
        append_embedded_faces(gallery, stamp(vectors.shape[1]), vectors[start : start + shard_size], photo_prefix="img")
        for start in range(0, len(vectors), shard_size)
    ]
    return np.concatenate(parts)


def make_gallery(root: Path, vectors: np.ndarray, shard_size: int = 5000) -> Gallery:
    gallery = Gallery.open_or_create(root)
    add_shards(gallery, vectors, shard_size)
    return gallery


def mark_deleted(gallery: Gallery, ids) -> None:
    gallery.mark_deleted([int(i) for i in ids])
