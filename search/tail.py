"""Exact search over the faces committed after the last index build (the un-indexed tail).

An ingest is visible to the very next query: the searcher merges the index's answer with an exact
inner-product search over the live faces of the shards the index does not cover yet. `gallery index
update` folds the tail into the index; past `TAIL_WARN_FACES` the tail costs enough per query that
search says so (and an ingest folds it in: gallery.app.indexing).

Many threads may search one tail at once: a refresh swaps in the new (ids, vectors) pair whole.
"""

from __future__ import annotations

import threading

import numpy as np

from gallery.store import Gallery
from search.topk import exact_top_k

TAIL_WARN_FACES = 50_000  # 50k x 128-d is ~25 MB and a few ms per query (2-core x86 VM): time to index


class UnindexedTail:
    """The live faces of shards after `last_shard_id`, in memory, refreshed when the gallery changes."""

    def __init__(self, gallery: Gallery, last_shard_id: int, dim: int) -> None:
        self.gallery = gallery
        self.last_shard_id = last_shard_id
        self.dim = dim
        self._watch = gallery.watch_changes()
        self._loaded: set[int] = set()  # shard ids read so far
        self._lock = threading.Lock()
        self._data = (np.zeros(0, np.int64), np.zeros((0, dim), np.float32))  # (ids, vectors), swapped whole

    @property
    def ids(self) -> np.ndarray:
        return self._data[0]

    @property
    def vectors(self) -> np.ndarray:
        return self._data[1]

    @property
    def size(self) -> int:
        return int(self._data[0].size)

    def refresh(self) -> None:
        """Read shards committed since the last look and drop faces deleted since (only when SQLite
        says something changed)."""
        with self._lock:
            if not self._watch.poll():
                return
            new = [r for r in self.gallery.shard_rows(after_shard_id=self.last_shard_id)
                   if r.shard_id not in self._loaded]
            parts_ids, parts_x = [self.ids], [self.vectors]
            for ids, x in self.gallery.iter_embeddings(new):
                parts_ids.append(ids)
                parts_x.append(np.asarray(x, np.float32))
            self._loaded.update(r.shard_id for r in new)
            ids, vectors = np.concatenate(parts_ids), np.concatenate(parts_x)
            if ids.size:
                deleted = self.gallery.deleted_ids()
                keep = ~np.isin(ids, deleted) if deleted.size else np.ones(ids.size, bool)
                ids, vectors = ids[keep], vectors[keep]
            self._data = (ids, np.ascontiguousarray(vectors))

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (scores, ids) over the tail, padded with (-inf, -1)."""
        held_ids, held = self._data
        return exact_top_k(x, held, held_ids, k)

    def close(self) -> None:
        self._watch.close()


def merge_topk(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Merge two (scores, ids) result lists row by row into the best k, best first."""
    scores = np.concatenate([a[0], b[0]], axis=1)
    ids = np.concatenate([a[1], b[1]], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
