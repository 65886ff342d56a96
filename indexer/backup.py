"""`gallery backup DEST` and `gallery restore BACKUP TARGET`: a consistent copy of a whole gallery
(database, shards, index and re-rank files, identity templates and keys, which live in the database,
and the photos it owns) taken while searches and writes go on.

Consistency: the index lock is held while the database is snapshotted (SQLite's online backup API)
and the index files are copied, so the copied index covers exactly what that snapshot names (no
build, update or erasure can change the index meanwhile; an erasure recorded after the snapshot is
simply not in the backup, one recorded before is in it as pending and `gallery repair` finishes it).
Shards are then copied and each checked against the snapshot's checksum: a shard rewritten since
(by an erasure) makes the backup start again from a new snapshot. `BACKUP.json`, written last, says
the backup is complete; a folder without it is an interrupted backup.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from gallery.errors import GalleryBusy, GalleryError
from gallery.fsutil import atomic_write
from gallery.store import Gallery
from gallery.store.backup import (
    copy_hashed,
    copy_shards,
    copy_tree,
    gallery_files,
    shard_records,
    snapshot_database,
)
from gallery.store.gallery import DB_NAME, INDEX_DIR, SHARDS_DIR
from indexer.loaded import as_gallery, index_file_intact
from indexer.manifest import MANIFEST, index_lock, read_manifest

MARKER = "BACKUP.json"
ATTEMPTS = 5


def _empty_target(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise GalleryError(f"'{dest}' exists and is not an empty folder: give a new folder for the copy.")


def _copy_index(index_dir: Path, dest_dir: Path, root: Path) -> int:
    """Copy the manifest and the files it names (the caller holds the index lock); returns bytes."""
    if not (index_dir / MANIFEST).is_file():
        return 0
    manifest = read_manifest(index_dir, root)
    total = 0
    names = [manifest["index_file"]] + [(manifest.get("rerank") or {}).get("file")]
    for name in [n for n in names if n]:
        size, sha = copy_hashed(index_dir / name, dest_dir / name)
        if name == manifest["index_file"] and manifest.get("index_sha256") and sha != manifest["index_sha256"]:
            raise GalleryError(f"The index file {index_dir / name} is damaged (its checksum does not match): run "
                               f"`gallery repair --gallery {root}` before the backup.")
        total += size
    total += copy_hashed(index_dir / MANIFEST, dest_dir / MANIFEST)[0]
    return total


def backup(gallery: Gallery | str | Path, dest: Path | str, lock_wait_s: float = 60.0) -> dict[str, Any]:
    """Copy the gallery to `dest` (a new or empty folder), consistently, while it is in use; returns
    what was copied and how fast."""
    dest = Path(dest)
    _empty_target(dest)
    g, owned = as_gallery(gallery)
    started = time.perf_counter()
    try:
        g.check_database()
        for attempt in range(1, ATTEMPTS + 1):  # noqa: B007 - reported below
            for stale in (dest / DB_NAME, dest / INDEX_DIR):
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink(missing_ok=True)
            with index_lock(g.index_dir, wait_s=lock_wait_s):
                db_bytes = snapshot_database(g.db_path, dest / DB_NAME)
                index_bytes = _copy_index(g.index_dir, dest / INDEX_DIR, g.root)
            records = shard_records(dest / DB_NAME)
            shard_bytes, changed = copy_shards(g.shards_dir, dest / SHARDS_DIR, records)
            if not changed:
                break
        else:
            raise GalleryBusy(f"The shards of '{g.root}' changed during each of {ATTEMPTS} attempts (erasures "
                              f"running): run the backup again when they are done. '{dest}' is incomplete.")
        (dest / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        other = sum(copy_tree(folder, dest / folder.name) for folder in gallery_files(g))
        seconds = time.perf_counter() - started
        total = db_bytes + index_bytes + shard_bytes + other
        report = {"backup": str(dest), "gallery": str(g.root), "created_at": time.time(), "attempts": attempt,
                  "shards": len(records), "bytes": {"database": db_bytes, "index": index_bytes, "shards": shard_bytes,
                                                    "other": other, "total": total},
                  "seconds": round(seconds, 3), "mb_per_s": round(total / 1e6 / max(seconds, 1e-9), 1)}
        atomic_write(dest / MARKER, (json.dumps(report, indent=2) + "\n").encode())
        return report
    finally:
        if owned:
            g.close()


def restore(backup_dir: Path | str, target: Path | str) -> dict[str, Any]:
    """Copy a complete backup to `target` (a new or empty folder), checking every shard against the
    database's checksum and the index file against its manifest; the result is a writable gallery."""
    src, target = Path(backup_dir), Path(target)
    if not (src / MARKER).is_file():
        raise GalleryError(f"'{src}' is not a complete backup (no {MARKER}: the backup was interrupted, or it is "
                           "not a backup folder).")
    _empty_target(target)
    started = time.perf_counter()
    total = copy_hashed(src / DB_NAME, target / DB_NAME)[0]
    records = shard_records(target / DB_NAME)
    shard_bytes, damaged = copy_shards(src / SHARDS_DIR, target / SHARDS_DIR, records)
    if damaged:
        raise GalleryError(f"The backup's shards {', '.join(damaged[:5])} are missing or damaged: nothing usable "
                           f"was restored to '{target}' (remove it), use another backup.")
    (target / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    total += shard_bytes
    for folder in [p for p in src.iterdir() if p.is_dir() and p.name not in (SHARDS_DIR,)]:
        total += copy_tree(folder, target / folder.name)
    with Gallery.open(target) as g:  # opened writable: back to WAL, migrated if needed
        faces = g.live_face_count()
        if (g.index_dir / MANIFEST).is_file():
            manifest = read_manifest(g.index_dir, g.root)
            if not index_file_intact(g.index_dir / manifest["index_file"], manifest.get("index_sha256")):
                raise GalleryError(f"The backup's index file is damaged; the restored gallery '{target}' is whole "
                                   f"otherwise: rebuild its index with `gallery repair --gallery {target}`.")
    seconds = time.perf_counter() - started
    return {"restored": str(target), "from": str(src), "faces": faces, "shards": len(records), "bytes": total,
            "seconds": round(seconds, 3), "mb_per_s": round(total / 1e6 / max(seconds, 1e-9), 1)}
