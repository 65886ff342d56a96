"""The exact float vectors for re-ranking: one raw float32 file, row r = vector id r, memory-mapped.

Why a file and not faiss' IndexRefineFlat: a refine index keeps every float vector in RAM (2 KiB per
512-d face: 200 GiB at 100M faces). Here the vectors stay on disk and the page cache holds only the
rows that searches touch; a search reads `candidates` rows per query (100 x 2 KiB by default). Ids are
dense integers from 1 (SQLite primary keys, never reused), so addressing by id wastes only the rows of
ids that no longer exist (zeros, and sparse on disk where the filesystem allows).

The file is append-only between full builds: `update` writes rows past the old end, which readers that
mapped the old size never see; a full build writes a new file and the manifest switches to it.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DTYPE = np.float32


class VectorFileWriter:
    """Writes (ids, vectors) rows at offset id * dim * 4, without going through a memory map."""

    def __init__(self, path: Path, dim: int, create: bool) -> None:
        self.path = Path(path)
        self.dim = dim
        self.row_bytes = dim * np.dtype(DTYPE).itemsize
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        self.fd = os.open(self.path, flags, 0o644)
        self.max_id = (os.fstat(self.fd).st_size // self.row_bytes) - 1

    def write(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if ids.size == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=DTYPE)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vector dimension {vectors.shape[1]} != {self.dim}")
        # split into runs of consecutive ids: one pwrite per run (usually one per batch)
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [ids.size]])
        for s, e in zip(starts, ends):
            os.pwrite(self.fd, vectors[s:e].tobytes(), int(ids[s]) * self.row_bytes)
        self.max_id = max(self.max_id, int(ids.max()))

    def close(self, fsync: bool = True) -> None:
        if self.fd < 0:
            return
        # make the file cover every id up to max_id even if the last ids were missing (sparse tail)
        os.ftruncate(self.fd, max(os.fstat(self.fd).st_size, (self.max_id + 1) * self.row_bytes))
        if fsync:
            os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> VectorFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(fsync=exc[0] is None)


class VectorFile:
    """Read side: a read-only np.memmap of (rows, dim) float32; `take(ids)` gathers rows by id."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = Path(path)
        self.dim = dim
        size = self.path.stat().st_size
        self.rows = size // (dim * np.dtype(DTYPE).itemsize)
        self.array = np.memmap(self.path, dtype=DTYPE, mode="r", shape=(self.rows, dim))
        self._plain = self.array.view(np.ndarray)  # same pages, without np.memmap's per-index overhead
        advise = getattr(mmap, "MADV_RANDOM", None)
        if advise is not None and getattr(self.array, "_mmap", None) is not None:
            # rows are read at random: no read-ahead around each fault (halves the cost of a cold read)
            self.array._mmap.madvise(advise)

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Rows for `ids` (any shape); ids < 0 or past the end give zero vectors."""
        flat = ids.reshape(-1)
        bad = (flat < 0) | (flat >= self.rows)
        if not bad.any():
            if flat.size > 4096:
                # big batches: read in id order (neighbouring rows share pages, the disk reads ahead)
                order = np.argsort(flat, kind="stable")
                out = np.empty((flat.size, self.dim), dtype=DTYPE)
                out[order] = self._plain[flat[order]]
            else:
                out = self._plain[flat]
        else:
            out = self._plain[np.where(bad, 0, flat)]
            out[bad] = 0.0
        return out.reshape(*ids.shape, self.dim)


def is_deleted(ids: np.ndarray, deleted_sorted: np.ndarray) -> np.ndarray:
    """Boolean mask: ids found in the sorted `deleted_sorted` array (fast membership, any shape)."""
    if deleted_sorted.size == 0:
        return np.zeros(ids.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(deleted_sorted, ids), deleted_sorted.size - 1)
    return deleted_sorted[pos] == ids


def sample_vectors(
    batches: Iterator[tuple[np.ndarray, np.ndarray]], total_rows: int, n_sample: int, dim: int, seed: int
) -> np.ndarray:
    """A seeded uniform sample of `n_sample` rows drawn across streamed (ids, vectors) batches, in one
    pass. Only the sample (n_sample x dim float32) and one batch are in memory at any time."""
    rng = np.random.default_rng(seed)
    n_sample = int(min(n_sample, total_rows))
    positions = np.sort(rng.choice(total_rows, size=n_sample, replace=False)) if n_sample < total_rows else None
    out = np.empty((n_sample, dim), dtype=np.float32)
    filled = 0
    offset = 0
    for ids, x in batches:
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
