"""What is left of erased faces in a gallery folder, found three ways at once:

- raw bytes: every file under the folder is searched for the names, paths and float32 embedding bytes;
- decoded: every Parquet file (shards, staged batches) is read and its face ids, string columns and
  float rows compared with the erased ones (zstd pages hide embeddings from a raw scan, so a raw "none
  found" says nothing about shards); every re-rank file (`vectors-*.f32`) is read as rows and the
  erased ids' rows must be zero and no row may equal an erased embedding; every FAISS index file is
  read and its ids listed;
- SQLite: the faces table must not hold the ids.

The code here is the test's own (faiss and pyarrow directly), not the product's check.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np


def faiss_ids(path: Path) -> np.ndarray:
    """Every vector id a FAISS index file holds (id-map wrappers and IVF inverted lists)."""
    import faiss

    index = faiss.read_index(str(path))
    down = faiss.downcast_index(index)
    if isinstance(down, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.vector_to_array(down.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = []
    for i in range(ivf.nlist):
        n = lists.list_size(i)
        if n:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(i), n).copy())
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _float_rows(column, dim: int) -> np.ndarray | None:
    """The float32 rows of a (possibly nested) list column, as (n, dim), or None if it holds none."""
    import pyarrow as pa

    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    while pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
        arr = arr.flatten()
    if not pa.types.is_floating(arr.type):
        return None
    values = arr.to_numpy(zero_copy_only=False).astype(np.float32)
    if values.size % dim:
        return None
    return values.reshape(-1, dim)


def traces(root: Path, *, texts: list[str] = (), face_ids=(), vectors: np.ndarray | None = None) -> list[str]:
    """Every place under `root` that still holds one of the texts, face ids or embeddings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = np.asarray(list(face_ids), np.int64)
    vecs = np.zeros((0, 1), np.float32) if vectors is None else np.asarray(vectors, np.float32)
    dim = vecs.shape[1]
    needles = [t.encode() for t in texts] + [v.tobytes() for v in vecs]
    hits: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root)
        data = path.read_bytes()
        hits += [f"{rel}: raw bytes {n[:30]!r}" for n in needles if n and n in data]
        if data[:4] == b"PAR1":
            table = pq.read_table(path)
            for name in table.column_names:
                column = table.column(name)
                if name == "face_id" and ids.size:
                    found = np.intersect1d(column.to_numpy(), ids)
                    if found.size:
                        hits.append(f"{rel}: face ids {found[:5].tolist()} in column {name}")
                elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                    values = column.to_pylist()
                    hits += [f"{rel}: {t!r} in column {name}" for t in texts if any(v and t in v for v in values)]
                elif vecs.size:
                    rows = _float_rows(column, dim)
                    if rows is not None and rows.size:
                        close = np.abs(rows[:, None, :] - vecs[None, :, :]).max(axis=2) < 1e-6
                        if close.any():
                            hits.append(f"{rel}: {int(close.any(axis=0).sum())} erased embeddings in column {name}")
        if path.name.startswith("vectors-") and path.suffix == ".f32" and vecs.size:
            rows = np.fromfile(path, np.float32)
            rows = rows[: rows.size - rows.size % dim].reshape(-1, dim)
            inside = ids[ids < len(rows)]
            if inside.size and np.abs(rows[inside]).max() > 0:
                hits.append(f"{rel}: re-rank rows of erased ids are not zero")
            for v in vecs:
                if (np.abs(rows - v).max(axis=1) < 1e-6).any():
                    hits.append(f"{rel}: an erased embedding as a re-rank row")
                    break
        if path.suffix == ".faiss" and ids.size:
            found = np.intersect1d(faiss_ids(path), ids)
            if found.size:
                hits.append(f"{rel}: FAISS holds erased ids {found[:5].tolist()}")
    db = root / "gallery.db"
    if db.is_file() and ids.size:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            present = {r[0] for r in con.execute("SELECT face_id FROM faces")}
        finally:
            con.close()
        left = sorted(present & {int(i) for i in ids})
        if left:
            hits.append(f"gallery.db: face rows {left[:5]}")
    return hits
