"""The index folder (GALLERY/index/): index files, the re-rank vector file, the manifest, the lock.

    index/manifest.json           the commit point: names the current index and vector files
    index/index-<tag>.faiss       a faiss index (CPU format), written to a temp name then renamed
    index/vectors-<tag>.f32       float32 rows addressed by vector id (re-ranking), when enabled
    index/.index.lock             held by build/update/remove so that two writers never interleave

Every change writes a new index file, then atomically replaces manifest.json, then deletes files that
no manifest names any more. A crash at any point leaves the previous manifest and its files usable.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from indexer.errors import IndexBusyError, NoIndexError

MANIFEST = "manifest.json"
LOCK = ".index.lock"
MANIFEST_VERSION = 1


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_manifest(index_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(index_dir / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def read_manifest(index_dir: Path, gallery_root: Path | None = None) -> dict[str, Any]:
    path = index_dir / MANIFEST
    if not path.is_file():
        where = gallery_root if gallery_root is not None else index_dir.parent
        raise NoIndexError(f"No index for gallery '{where}' yet. Build one with: gallery index build --gallery {where}")
    return json.loads(path.read_text())


def has_manifest(index_dir: Path) -> bool:
    return (index_dir / MANIFEST).is_file()


def cleanup_unreferenced(index_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Delete index/vector files (and temp files) the current manifest does not name."""
    keep = {manifest.get("index_file")}
    rerank = manifest.get("rerank") or {}
    if rerank.get("file"):
        keep.add(rerank["file"])
    removed = []
    for path in index_dir.iterdir():
        name = path.name
        stale = (name.startswith(("index-", "vectors-")) and name not in keep) or name.endswith(".tmp")
        if stale and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(name)
    return removed


@contextmanager
def index_lock(index_dir: Path) -> Iterator[None]:
    index_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(index_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexBusyError(
                f"Another index build/update is running on '{index_dir.parent}'. Wait for it to finish."
            ) from None
        yield
    finally:
        os.close(fd)
