"""The index folder's manifest: which index and vector files are current, what they cover, how they
were built, and the search defaults. It is the commit point of every index change.

    index/manifest.json           names the current index and vector files (this module reads/writes it)
    index/index-<tag>.faiss       a faiss index (CPU format), written to a temp name then renamed
    index/vectors-<tag>.f32       float32 rows addressed by vector id (re-ranking), when enabled
    index/.index.lock             held by build/update/remove/tune so that two writers never interleave

Every change writes a new index file, then atomically replaces manifest.json, then deletes files that
no manifest names any more. A crash at any point leaves the previous manifest and its files usable.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict

from filelock import FileLock, Timeout

from gallery.errors import IndexBusyError, IndexerError, IndexMismatchError, NoIndexError
from gallery.fsutil import atomic_write, lock_held

MANIFEST = "manifest.json"
LOCK = ".index.lock"
MANIFEST_VERSION = 1


class RerankInfo(TypedDict, total=False):
    enabled: bool
    file: str | None
    dtype: str
    dim: int
    candidates: int
    bytes: int


class Manifest(TypedDict, total=False):
    """The manifest's fields (JSON). `version` is checked on read; other keys are informational."""

    version: int
    kind: str  # build | update | remove
    factory: str
    kind_of_index: str  # flat | pq | ivfpq | custom
    index_type: str
    metric: str
    dim: int
    ntotal: int
    nlist: int | None
    nprobe: int | None
    pq: dict | None
    model: dict
    shards: list[int]
    shard_files: int
    last_shard_id: int
    max_face_id: int
    index_file: str
    index_bytes: int
    index_sha256: str  # of the index file, checked when it is loaded (absent: written before checksums)
    index_bytes_per_vector: float
    rerank: RerankInfo
    training: dict
    timing_s: dict
    memory: dict
    device: str
    reason: str
    notes: list[str]
    warnings: list[str]
    updates: list[dict]
    tuned: dict


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def write_manifest(index_dir: Path, manifest: Manifest | dict[str, Any]) -> None:
    atomic_write(index_dir / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def read_manifest(index_dir: Path, gallery_root: Path | None = None) -> Manifest:
    path = index_dir / MANIFEST
    where = gallery_root if gallery_root is not None else index_dir.parent
    if not path.is_file():
        raise NoIndexError(f"No index for gallery '{where}' yet. Build one with: gallery index build --gallery {where}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexerError(
            f"The index manifest {path} cannot be read ({exc}). "
            f"Rebuild the index: gallery index build --gallery {where}"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        raise IndexerError(
            f"The index manifest {path} is not a version-{MANIFEST_VERSION} manifest. "
            f"Rebuild the index: gallery index build --gallery {where}"
        )
    return manifest  # type: ignore[return-value]


def check_model(manifest: Manifest, stamp: dict | None, gallery_root: Path) -> None:
    """The index must have been built from the gallery's own model."""
    if stamp is not None and manifest.get("model") not in (None, stamp):
        raise IndexMismatchError(
            f"The index was built for model {manifest['model'].get('name')}, the gallery uses "
            f"{stamp.get('name')}. Rebuild it: gallery index build --gallery {gallery_root}"
        )


def unreferenced_files(index_dir: Path, manifest: Manifest | None) -> list[Path]:
    """Index and vector files (and temp files) the manifest does not name: what a killed build or
    update left (a partial `vectors-*.f32` holds float vectors of faces, erased ones included)."""
    keep = set()
    if manifest is not None:
        keep.add(manifest.get("index_file"))
        rerank = manifest.get("rerank") or {}
        if rerank.get("file"):
            keep.add(rerank["file"])
    if not index_dir.is_dir():
        return []
    return [path for path in sorted(index_dir.iterdir()) if path.is_file() and (
        (path.name.startswith(("index-", "vectors-")) and path.name not in keep) or path.name.endswith(".tmp"))]


def cleanup_unreferenced(index_dir: Path, manifest: Manifest | None) -> list[str]:
    """Delete index/vector files (and temp files) the current manifest does not name (call it with
    the index lock held: a build in flight writes such files)."""
    removed = []
    for path in unreferenced_files(index_dir, manifest):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def index_lock_free(index_dir: Path) -> bool:
    """True when no build, update or erasure holds the index lock right now."""
    return not lock_held(index_dir / LOCK)


@contextmanager
def index_lock(index_dir: Path, wait_s: float = 0) -> Iterator[None]:
    """Held by build/update/remove/tune (and erasure) so that two writers never interleave; waits up
    to `wait_s` seconds for another holder, then raises IndexBusyError."""
    index_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(index_dir / LOCK)
    try:
        lock.acquire(timeout=max(0.0, wait_s))
    except Timeout:
        raise IndexBusyError(
            f"Another index build/update is running on '{index_dir.parent}'. Wait for it to finish."
        ) from None
    try:
        yield
    finally:
        lock.release()


def set_search_defaults(index_dir: Path, gallery_root: Path, index_file: str, nprobe: int | None,
                        rerank_candidates: int | None, tuned: dict[str, Any]) -> Manifest:
    """Store tuned search defaults (nprobe, re-rank depth) in the manifest, under the index lock, and
    only if it still names the index that was measured; `load_index` then uses them by default."""
    with index_lock(index_dir):
        manifest = read_manifest(index_dir, gallery_root)
        if manifest.get("index_file") != index_file:
            raise IndexerError("The index was rebuilt while it was being measured: run the measurement again.")
        if nprobe is not None:
            manifest["nprobe"] = int(nprobe)
        rerank = manifest.get("rerank") or {}
        if rerank.get("enabled") and rerank_candidates:
            rerank["candidates"] = int(rerank_candidates)
            manifest["rerank"] = rerank
        manifest["tuned"] = dict(tuned, at=time.time())
        write_manifest(index_dir, manifest)
    return manifest


def remove_index_files(index_dir: Path) -> None:
    """Delete the index (manifest first, so a reader never sees a manifest naming missing files); the
    caller holds the index lock."""
    (index_dir / MANIFEST).unlink(missing_ok=True)
    for path in index_dir.glob("*"):
        if path.name.startswith(("index-", "vectors-")) or path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)


def remove_index(gallery: Any) -> None:
    """Delete the index of a gallery, taking the index lock."""
    with index_lock(gallery.index_dir):
        remove_index_files(gallery.index_dir)


def has_manifest(index_dir: Path) -> bool:
    return (index_dir / MANIFEST).is_file()


def manifest_version(index_dir: Path) -> tuple[int, int] | None:
    """What tells a long-lived reader that the index changed (a build, an update or an erasure writes a
    new manifest): the manifest's (mtime in ns, size), or None when there is no index."""
    try:
        st = (Path(index_dir) / MANIFEST).stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size
