"""Which vector ids an index file holds, and which re-rank rows hold a vector: how `gallery check`
proves that no erased face is left in the index folder (and how repair finds those to remove)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexer.vectors import DTYPE

ROWS_PER_READ = 65536


def index_ids(index: Any) -> np.ndarray:
    """Every vector id the index holds, sorted: an id map's ids, or an IVF index's inverted lists."""
    down = faiss.downcast_index(index)
    if isinstance(down, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return np.sort(faiss.vector_to_array(down.id_map).astype(np.int64))
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return np.arange(int(index.ntotal), dtype=np.int64)  # a bare index: ids are positions
    lists = ivf.invlists
    parts = []
    for i in range(ivf.nlist):
        n = lists.list_size(i)
        if n:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(i), n).astype(np.int64))
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def index_file_ids(path: Path) -> np.ndarray:
    return index_ids(faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY))


def _row_blocks(path: Path, dim: int) -> Iterator[tuple[int, np.ndarray]]:
    rows = path.stat().st_size // (dim * np.dtype(DTYPE).itemsize)
    if rows == 0:
        return
    data = np.memmap(path, dtype=DTYPE, mode="r", shape=(rows, dim))
    for start in range(0, rows, ROWS_PER_READ):
        yield start, np.asarray(data[start : start + ROWS_PER_READ])


def nonzero_rows_outside(path: Path, dim: int, allowed: np.ndarray) -> np.ndarray:
    """Ids whose re-rank row holds a vector although they are not in `allowed` (sorted face ids the
    gallery still has): the float vectors of erased or dropped faces."""
    found = []
    for start, block in _row_blocks(path, dim):
        ids = np.arange(start, start + block.shape[0], dtype=np.int64)
        lo, hi = np.searchsorted(allowed, [start, start + block.shape[0]])
        outside = ~np.isin(ids, allowed[lo:hi], assume_unique=True)
        if outside.any():
            hit = outside & np.any(block != 0, axis=1)
            found.append(ids[hit])
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def damaged_rows(path: Path, dim: int, ids: np.ndarray, tolerance: float = 2e-3) -> np.ndarray:
    """Of the sorted face ids `ids` (the faces the index holds), those whose re-rank row is not a finite
    unit vector (zero, garbled, or past the end of a truncated file)."""
    rows = path.stat().st_size // (dim * np.dtype(DTYPE).itemsize)
    found = [ids[ids >= rows]]
    for start, block in _row_blocks(path, dim):
        lo, hi = np.searchsorted(ids, [start, start + block.shape[0]])
        if hi == lo:
            continue
        part = block[ids[lo:hi] - start]
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("kd,kd->k", part, part)
        found.append(ids[lo:hi][~(np.abs(sq - 1.0) <= tolerance)])
    return np.concatenate(found)
