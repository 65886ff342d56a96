"""Immutable Parquet embedding shards: written once (temp file + fsync + rename), then only read.

Columns: face_id (int64, the vector id), image_id (int64), embedding (fixed_size_list<float32>[D],
L2-normalised), box (fixed_size_list<float32>[4], x1 y1 x2 y2 in original image pixels),
landmarks (fixed_size_list<float32>[10], 5 points x,y), det_score (float32).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gallery.errors import DamagedData
from gallery.fsutil import atomic_write

# pyarrow is imported by the functions that read or write a shard: a search that reads none (its
# index answers) starts without it.
if TYPE_CHECKING:
    import pyarrow as pa

SHARD_PREFIX = "shard-"


def shard_schema(dim: int, model_stamp: dict | None = None) -> pa.Schema:
    import pyarrow as pa

    fields = [
        pa.field("face_id", pa.int64(), nullable=False),
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
        pa.field("box", pa.list_(pa.float32(), 4), nullable=False),
        pa.field("landmarks", pa.list_(pa.float32(), 10), nullable=False),
        pa.field("det_score", pa.float32(), nullable=False),
    ]
    metadata = {b"face_gallery.model": json.dumps(model_stamp).encode()} if model_stamp else None
    return pa.schema(fields, metadata=metadata)


def _fixed_list(values: np.ndarray, width: int) -> pa.FixedSizeListArray:
    import pyarrow as pa

    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), width)


@dataclass
class ShardRows:
    """Columns of faces about to be written to one shard."""

    face_id: np.ndarray  # (n,) int64
    image_id: np.ndarray  # (n,) int64
    embedding: np.ndarray  # (n, D) float32
    box: np.ndarray  # (n, 4) float32
    landmarks: np.ndarray  # (n, 5, 2) float32
    det_score: np.ndarray  # (n,) float32

    def __len__(self) -> int:
        return int(self.face_id.shape[0])


def shard_filename(shard_id: int) -> str:
    return f"{SHARD_PREFIX}{shard_id:08d}.parquet"


UNIT_TOLERANCE = 1e-3  # |norm - 1| allowed for a stored embedding (float32 rounding is ~1e-7)


def check_embeddings(x: np.ndarray, where: str) -> None:
    """Embeddings must be finite and unit length: a damaged or foreign vector is never stored or served."""
    if x.size == 0:
        return
    finite = np.isfinite(x).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], x, 0), axis=1)
    bad = ~finite | (np.abs(norms - 1.0) > UNIT_TOLERANCE)
    if bad.any():
        raise DamagedData(
            f"{where}: {int(bad.sum())} of {len(x)} embeddings are not finite unit vectors (e.g. row "
            f"{int(np.flatnonzero(bad)[0])}, norm {norms[bad][0]:.4g})"
        )


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_shard(path: Path, rows: ShardRows, model_stamp: dict | None = None) -> tuple[int, str]:
    """Write atomically: a crash leaves either no file or a temp file, never a partial shard.

    Returns the shard's size in bytes and its sha256 (recorded in SQLite, checked on every read).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_embeddings(np.asarray(rows.embedding, np.float32), f"shard {path.name} (not written)")
    dim = int(rows.embedding.shape[1])
    table = pa.Table.from_arrays(
        [
            pa.array(rows.face_id, type=pa.int64()),
            pa.array(rows.image_id, type=pa.int64()),
            _fixed_list(rows.embedding, dim),
            _fixed_list(rows.box, 4),
            _fixed_list(rows.landmarks, 10),
            pa.array(rows.det_score, type=pa.float32()),
        ],
        schema=shard_schema(dim, model_stamp),
    )
    # Embeddings barely compress; zstd still helps the other columns and costs little.
    size = atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd", row_group_size=65536))
    return size, file_sha256(path)


def embeddings_from_column(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """Zero-copy where possible view of a fixed_size_list<float32> column as an (n, dim) array."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(-1, dim).astype(np.float32, copy=False)


def read_shard_embeddings(path: Path, face_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(face ids, (n, D) embeddings) of the rows of one shard whose face id is in `face_ids`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["face_id", "embedding"])
    table = table.filter(pc.is_in(table.column("face_id"), value_set=pa.array(list(face_ids), type=pa.int64())))
    dim = table.schema.field("embedding").type.list_size
    ids = table.column("face_id").to_numpy().astype(np.int64, copy=False)
    return ids, embeddings_from_column(table.column("embedding"), dim)


def iter_shard_batches(
    paths: Sequence[Path], batch_size: int = 65536
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream (face_ids int64 (n,), embeddings float32 (n, D)) over shards, bounded by batch_size rows.

    Memory stays at one batch, whatever the gallery size: this is what index building streams over.
    """
    import pyarrow.parquet as pq

    for path in paths:
        parquet = pq.ParquetFile(path)
        dim = parquet.schema_arrow.field("embedding").type.list_size
        for batch in parquet.iter_batches(batch_size=batch_size, columns=["face_id", "embedding"]):
            ids = batch.column(0).to_numpy().astype(np.int64, copy=False)
            yield ids, embeddings_from_column(batch.column(1), dim)


def shard_num_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def rewrite_shard_without(path: Path, keep_ids: np.ndarray) -> tuple[int, int, str]:
    """Rewrite a shard keeping only the rows whose face id is in `keep_ids` (atomically, the schema
    and its model metadata unchanged). Returns (rows kept, new size in bytes, new sha256)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    keep = np.isin(table.column("face_id").to_numpy(), keep_ids)
    kept = table.filter(pa.array(keep))
    size = atomic_write(path, lambda tmp: pq.write_table(kept, tmp, compression="zstd", row_group_size=65536))
    return int(keep.sum()), size, file_sha256(path)


def shard_face_ids(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["face_id"]).column("face_id").to_numpy().astype(np.int64, copy=False)


def iter_shard_geometry(path: Path, batch_size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                               np.ndarray]]:
    """Stream (face_ids (n,), boxes (n, 4), landmarks (n, 5, 2), det_scores (n,)) of one shard."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_size, columns=["face_id", "box", "landmarks", "det_score"]):
        ids = batch.column(0).to_numpy().astype(np.int64, copy=False)
        boxes = embeddings_from_column(batch.column(1), 4)
        landmarks = embeddings_from_column(batch.column(2), 10).reshape(-1, 5, 2)
        yield ids, boxes, landmarks, batch.column(3).to_numpy().astype(np.float32, copy=False)
