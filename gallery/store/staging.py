"""Staged results of a distributed ingest: Parquet files that workers write and the driver commits.

A staged file holds one row per photo as the face pipeline left it (file identity, decode outcome,
the faces with their embeddings), but no ids: face and image ids are allocated by the single writer
when it commits (gallery.store.writer). Files live in `GALLERY/staging/`, are written atomically
(temp file + fsync + rename, so a killed worker leaves at most a temp file, removed by
`remove_partial`) and are named after the photos they hold (`staged_name`): a batch that Ray retries
after a worker died writes the same name again, never a second copy. The driver deletes a staged
file once its rows are committed; a file left by a killed driver is read again by the next run, which
takes only rows whose files are still new (see gallery.ingest.distributed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gallery.errors import DamagedData
from gallery.fsutil import atomic_write
from gallery.store.shards import check_embeddings, embeddings_from_column

STAGING_DIR = "staging"
STAGED_PREFIX = "staged-"


def staging_dir(gallery_root: Path | str) -> Path:
    """The gallery's staging folder (workers must see it at this path: a shared filesystem)."""
    return Path(gallery_root) / STAGING_DIR


@dataclass
class StagedPhoto:
    """One photo's outcome: a failure (`reason`) or its faces in detection order (main face `main`)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    width: int = 0
    height: int = 0
    reason: str | None = None
    detail: str | None = None
    main: int = -1
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))
    embeddings: np.ndarray | None = None  # (n, D) float32; None for a failure
    sharpness: np.ndarray | None = None  # (n,) of each aligned chip (gallery.faces.quality); None: not measured


def staged_name(keys: Sequence[tuple[str, int, int]]) -> str:
    """A name decided by the photos a batch holds (path, size, mtime), whatever their order."""
    digest = hashlib.sha256("\n".join(f"{p}\0{s}\0{m}" for p, s, m in sorted(keys)).encode()).hexdigest()
    return f"{STAGED_PREFIX}{digest[:32]}.parquet"


def _faces_column(values: list[np.ndarray], width: int) -> pa.ListArray:
    """Per-photo lists of fixed-size float32 rows (boxes, landmarks, embeddings)."""
    counts = [len(v) for v in values]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    flat = np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in values]) if values else np.zeros(0)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(np.float32), pa.float32()), width)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def write_staged(folder: Path, name: str, photos: Sequence[StagedPhoto], model_stamp: dict) -> int:
    """Write one staged file atomically; returns its size in bytes. Embeddings are checked here, as
    for a shard: a damaged vector never reaches the gallery."""
    dim = int(model_stamp["dim"])
    embeddings = [p.embeddings if p.embeddings is not None else np.zeros((0, dim), np.float32) for p in photos]
    for p, e in zip(photos, embeddings):
        if e.size and e.shape[1] != dim:
            raise DamagedData(f"{p.path}: embedding of dimension {e.shape[1]}, the gallery's model has {dim}")
        check_embeddings(np.asarray(e, np.float32), f"staged {name} ({p.path})")
    scores = [np.asarray(p.scores, np.float32) for p in photos]
    sharp = [np.asarray(p.sharpness, np.float64) if p.sharpness is not None and len(p.sharpness) == len(s)
             else np.full(len(s), np.nan) for p, s in zip(photos, scores)]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in scores])]).astype(np.int32)
    table = pa.table(
        {
            "path": pa.array([p.path for p in photos], pa.string()),
            "size": pa.array([p.size for p in photos], pa.int64()),
            "mtime_ns": pa.array([p.mtime_ns for p in photos], pa.int64()),
            "sha256": pa.array([p.sha256 for p in photos], pa.string()),
            "width": pa.array([p.width for p in photos], pa.int32()),
            "height": pa.array([p.height for p in photos], pa.int32()),
            "reason": pa.array([p.reason for p in photos], pa.string()),
            "detail": pa.array([p.detail for p in photos], pa.string()),
            "main": pa.array([p.main for p in photos], pa.int32()),
            "box": _faces_column([p.boxes for p in photos], 4),
            "landmarks": _faces_column([p.landmarks for p in photos], 10),
            "det_score": pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(np.concatenate(scores) if scores else np.zeros(0, np.float32))),
            "embedding": _faces_column(embeddings, dim),
            "sharpness": pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(np.concatenate(sharp) if sharp else np.zeros(0), pa.float64())),
        }
    ).replace_schema_metadata({b"face_gallery.model": json.dumps(model_stamp).encode()})
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write(folder / name, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def _split(column: pa.ChunkedArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (n+1,), values (total, width)) of a list<fixed_size_list<float32>> column."""
    arr = column.combine_chunks()
    offsets = arr.offsets.to_numpy().astype(np.int64)
    flat = embeddings_from_column(arr.flatten(), width) if len(arr.flatten()) else np.zeros((0, width), np.float32)
    return offsets - offsets[0], flat


def read_staged(path: Path, model_stamp: dict) -> list[StagedPhoto]:
    """The photos of a staged file; DamagedData when it is unreadable, of another model, or holds a
    vector that is not a finite unit vector."""
    try:
        table = pq.ParquetFile(path).read(use_threads=False)  # a small file: no dataset discovery, no threads
    except (OSError, pa.ArrowException) as exc:
        raise DamagedData(f"staged file {path.name} cannot be read ({exc})") from None
    stamp = json.loads((table.schema.metadata or {}).get(b"face_gallery.model", b"null"))
    if stamp != model_stamp:
        raise DamagedData(f"staged file {path.name} was computed with another model ({stamp}), not {model_stamp}")
    dim = int(model_stamp["dim"])
    cols = {name: table.column(name).to_pylist() for name in
            ("path", "size", "mtime_ns", "sha256", "width", "height", "reason", "detail", "main")}
    box_off, boxes = _split(table.column("box"), 4)
    _, landmarks = _split(table.column("landmarks"), 10)
    _, embeddings = _split(table.column("embedding"), dim)
    scores = table.column("det_score").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    sharp = (table.column("sharpness").combine_chunks().flatten().to_numpy(zero_copy_only=False)
             if "sharpness" in table.column_names else np.full(len(scores), np.nan))  # staged before it existed
    check_embeddings(embeddings, f"staged file {path.name}")
    out = []
    for i in range(table.num_rows):
        a, b = int(box_off[i]), int(box_off[i + 1])
        reason = cols["reason"][i]
        out.append(StagedPhoto(
            path=cols["path"][i], size=cols["size"][i], mtime_ns=cols["mtime_ns"][i], sha256=cols["sha256"][i],
            width=cols["width"][i], height=cols["height"][i], reason=reason, detail=cols["detail"][i],
            main=cols["main"][i], boxes=boxes[a:b], scores=scores[a:b].astype(np.float32, copy=False),
            landmarks=landmarks[a:b].reshape(-1, 5, 2), embeddings=None if reason else embeddings[a:b],
            sharpness=sharp[a:b].astype(np.float64, copy=False),
        ))
    return out


def staged_files(folder: Path) -> list[Path]:
    """Complete staged files, in name order."""
    return sorted(folder.glob(f"{STAGED_PREFIX}*.parquet")) if folder.is_dir() else []


def remove_partial(folder: Path) -> list[str]:
    """Delete temp files that a killed worker left half-written (complete files are kept)."""
    removed = []
    if folder.is_dir():
        for tmp in sorted(folder.glob(f".{STAGED_PREFIX}*.tmp")):
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return removed


def remove_staged(paths: Sequence[Path]) -> None:
    """Delete staged files whose rows are committed (or were found to be of no use)."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def remove_staging_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or still holding files of work not yet committed
