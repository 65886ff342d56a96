"""The index folder's copies of face vectors: what `gallery repair` rebuilds a damaged shard from.

Two files can hold a face's exact float32 vector besides its shard: the re-rank file (row = face id)
and an index that stores vectors uncompressed (a flat index, or HNSW over flat storage). Compressed
codes (PQ, scalar quantisers) are approximations: no exact copy exists there, and none is taken. A
row is taken only when it is a finite unit vector (a zero, garbled or truncated row is no copy), so
a damaged re-rank file or index yields only its intact rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from gallery.errors import IndexerError
from gallery.store.shards import UNIT_TOLERANCE
from indexer.manifest import read_manifest
from indexer.vectors import VectorFile

EXACT_STORAGE = ("IndexFlat", "IndexFlatIP", "IndexFlatL2", "IndexHNSWFlat")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows that are finite unit vectors (what every stored embedding is)."""
    if x.size == 0:
        return np.zeros(x.shape[0], dtype=bool)
    finite = np.isfinite(x).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], x, 0), axis=1)
    return finite & (np.abs(norms - 1.0) <= UNIT_TOLERANCE)


def _exact_storage(index: Any) -> Any | None:
    """The id map over an uncompressed index (reconstruct gives the stored float vector), or None."""
    down = faiss.downcast_index(index)
    if not isinstance(down, faiss.IndexIDMap2):
        return None
    inner = faiss.downcast_index(down.index)
    return down if type(inner).__name__ in EXACT_STORAGE else None


class IndexCopies:
    """Exact vectors of faces from a gallery's index folder (re-rank file first, then a flat index)."""

    def __init__(self, index_dir: Path, gallery_root: Path) -> None:
        self.notes: list[str] = []
        self.vectors: VectorFile | None = None
        self.index: Any | None = None
        self._owner: Any | None = None
        try:
            manifest = read_manifest(index_dir, gallery_root)
        except IndexerError as exc:
            self.notes.append(f"no index to take vectors from ({str(exc).split('.')[0]})")
            return
        dim = int(manifest["dim"])
        rerank = manifest.get("rerank") or {}
        if rerank.get("enabled") and rerank.get("file"):
            try:
                self.vectors = VectorFile(index_dir / str(rerank["file"]), dim)
            except (OSError, ValueError) as exc:
                self.notes.append(f"re-rank file unreadable ({exc})")
        try:
            index = faiss.read_index(str(index_dir / str(manifest["index_file"])))
        except (RuntimeError, OSError):
            self.notes.append("index file unreadable")
            index = None
        if index is not None:
            self._owner = index  # the downcast view below does not own the C++ object: keep it alive
            self.index = _exact_storage(index)
            if self.index is None and self.vectors is None:
                self.notes.append(f"the index ({manifest['factory']}) holds compressed codes only and there is no "
                                  "re-rank file: no exact copy of any vector")

    def take(self, face_ids: list[int]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """({face id: vector}, {face id: "rerank" | "flat-index"}) for the faces an intact copy exists of."""
        found: dict[int, np.ndarray] = {}
        source: dict[int, str] = {}
        ids = np.asarray(sorted(set(int(i) for i in face_ids)), np.int64)
        if ids.size and self.vectors is not None:
            rows = self.vectors.take(ids)
            good = unit_rows(rows) & (ids < self.vectors.rows)
            for i, row in zip(ids[good], rows[good]):
                found[int(i)] = np.array(row, np.float32)
                source[int(i)] = "rerank"
        rest = [int(i) for i in ids if int(i) not in found]
        if rest and self.index is not None:
            for i in rest:
                try:
                    row = np.asarray(self.index.reconstruct(i), np.float32)[None, :]
                except RuntimeError:  # not in the index (deleted before the build, or never indexed)
                    continue
                if unit_rows(row)[0]:
                    found[i] = row[0]
                    source[i] = "flat-index"
        return found, source
