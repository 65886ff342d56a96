"""`gallery check` and `gallery repair` for the whole gallery: the store's checks (database, shards,
runs, vectors) and the index's (manifest readable, index file readable and of the recorded size,
re-rank file long enough, covering only shards that exist)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss

from gallery.errors import IndexerError, NoIndexError
from gallery.store import Gallery
from gallery.store.integrity import Finding, check_store, repair_store
from indexer.build import build_index, remove_ids
from indexer.loaded import as_gallery
from indexer.manifest import has_manifest, read_manifest, remove_index


def check_index(g: Gallery) -> list[Finding]:
    fix = f"gallery index build --gallery {g.root}"
    try:
        manifest = read_manifest(g.index_dir, g.root)
    except NoIndexError:
        return [Finding("index", True, "no index yet (searches need one: gallery index build)")]
    except IndexerError as exc:
        return [Finding("index", False, str(exc), fix)]
    problems = []
    path = g.index_dir / str(manifest.get("index_file"))
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        if int(index.ntotal) != int(manifest["ntotal"]):
            problems.append(f"{path.name} holds {index.ntotal:,} vectors, the manifest says {manifest['ntotal']:,}")
    except (RuntimeError, OSError) as exc:
        problems.append(f"{path.name} cannot be read ({str(exc).strip().splitlines()[0][:200]})")
    rerank = manifest.get("rerank") or {}
    if rerank.get("enabled"):
        vectors = g.index_dir / str(rerank.get("file"))
        need = (int(manifest["max_face_id"]) + 1) * int(manifest["dim"]) * 4
        size = vectors.stat().st_size if vectors.is_file() else -1
        if size < need:
            problems.append(f"re-rank file {vectors.name} is {'missing' if size < 0 else f'{size:,} bytes'}, "
                            f"needs {need:,}")
    shards = {r.shard_id for r in g.shard_rows()}
    lost = [i for i in manifest.get("shards", []) if i not in shards]
    if lost:
        problems.append(f"covers {len(lost)} shards the gallery no longer has (dropped by a repair)")
    if problems:
        return [Finding("index", False, p, fix) for p in problems]
    return [Finding("index", True, f"{manifest['factory']}, {manifest['ntotal']:,} faces, files readable")]


def check(gallery: Gallery | str | Path, deep: bool = False) -> list[Finding]:
    """Every check of the store and the index; a finding with ok=False names the command that mends it."""
    g, owned = as_gallery(gallery)
    try:
        return check_store(g, deep) + check_index(g)
    finally:
        if owned:
            g.close()


def repair(gallery: Gallery | str | Path) -> dict[str, Any]:
    """Repair the store, then make the index agree: faces dropped from SQLite leave the index; an
    index that cannot be read (or covers dropped shards and cannot remove ids) is rebuilt."""
    g, owned = as_gallery(gallery)
    try:
        result = repair_store(g)
        dropped = result.pop("dropped_face_ids")
        problems = [f for f in check_index(g) if not f.ok]
        if not has_manifest(g.index_dir):
            index = "none"
        elif not g.live_face_count():
            remove_index(g)  # nothing left to index: the next `gallery index build` starts afresh
            index = "removed (no faces left)"
        elif problems:
            build_index(g)  # unreadable, or covering dropped shards: rebuilt from what is intact
            index = "rebuilt"
        elif dropped:
            remove_ids(g, dropped)
            index = "patched"
        else:
            index = "ok"
        result["index"] = index
        return result
    finally:
        if owned:
            g.close()
