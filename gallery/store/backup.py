"""The store's side of `gallery backup` and `gallery restore`: a consistent copy of the database taken
with SQLite's online backup API while searches and writes go on, and the shards it names, each
copied and checked against the checksum the copy of the database records.

A backup folder is itself a gallery (gallery.db in rollback-journal mode, shards/, index/), so it
can be searched where it lies, also on a read-only mount; `gallery restore` copies it to a writable
folder. indexer.backup composes these steps with the index files (under the index lock).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gallery.store.gallery import Gallery

COPY_CHUNK = 4 << 20


def copy_hashed(src: Path, dst: Path) -> tuple[int, str]:
    """Copy a file (fsynced), hashing what was read; returns (bytes, sha256 of the bytes copied)."""
    digest = hashlib.sha256()
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(COPY_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return size, digest.hexdigest()


def snapshot_database(db_path: Path, dest: Path) -> int:
    """Copy the database as of one moment (SQLite's online backup API, in one step: a consistent
    snapshot whatever commits meanwhile), in rollback-journal mode so that a read-only mount can open
    it without -wal/-shm files. Returns its size in bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(str(db_path), timeout=30)
    dst = sqlite3.connect(str(dest))
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
        dst.commit()
    finally:
        dst.close()
        src.close()
    with open(dest, "rb+") as fh:
        os.fsync(fh.fileno())
    return dest.stat().st_size


@dataclass(frozen=True)
class ShardRecord:
    filename: str
    sha256: str | None  # None: a shard written before checksums (its size is checked)
    bytes: int


def shard_records(db_path: Path) -> list[ShardRecord]:
    """The shards a database (a snapshot) names."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return [ShardRecord(f, s, int(b or 0))
                for f, s, b in con.execute("SELECT filename, sha256, bytes FROM shards ORDER BY shard_id")]
    finally:
        con.close()


def copy_shards(shards_dir: Path, dest_dir: Path, records: list[ShardRecord]) -> tuple[int, list[str]]:
    """Copy each shard a snapshot names; returns (bytes copied, shards that are not what the snapshot
    recorded: rewritten or removed after it, by an erasure or a repair)."""
    total = 0
    changed = []
    for record in records:
        target = dest_dir / record.filename
        if target.is_file() and record.sha256 and target.stat().st_size == record.bytes:
            total += record.bytes  # copied by an earlier attempt of this backup (shards never change in place)
            continue
        try:
            size, sha = copy_hashed(shards_dir / record.filename, target)
        except FileNotFoundError:
            changed.append(record.filename)
            continue
        total += size
        if (record.sha256 and sha != record.sha256) or (not record.sha256 and record.bytes and size != record.bytes):
            target.unlink()
            changed.append(record.filename)
    return total, changed


def copy_tree(src: Path, dest: Path) -> int:
    """Copy a folder's files (enrolled photos); returns bytes copied."""
    total = 0
    for path in sorted(src.rglob("*")):
        if path.is_file():
            total += copy_hashed(path, dest / path.relative_to(src))[0]
    return total


def gallery_files(gallery: Gallery) -> list[Path]:
    """The folders a backup holds besides the database, shards and index: photos the gallery owns."""
    from gallery.store.gallery import ENROL_DIR

    return [p for p in [gallery.root / ENROL_DIR] if p.is_dir()]


def remove_partial(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
