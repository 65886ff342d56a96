"""`gallery check` and `gallery repair` for the whole gallery: the store's checks (database, shards,
runs, vectors, pending erasures and the leftovers they must reach) and the index's (manifest
readable, index file readable and of the recorded size, re-rank file long enough, covering only
shards that exist, holding no id of a face the gallery no longer has, no non-zero re-rank row of
such a face, no file of a killed build)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from gallery.errors import IndexerError, NoIndexError
from gallery.store import Gallery
from gallery.store.integrity import Finding, check_store, repair_store
from indexer.build import build_index
from indexer.erasure import DEFAULT_LOCK_WAIT_S, finish_pending
from indexer.ids import index_ids, nonzero_rows_outside
from indexer.loaded import as_gallery
from indexer.manifest import has_manifest, index_lock_free, read_manifest, remove_index, unreferenced_files


def _leftover_findings(g: Gallery, manifest: Any) -> list[Finding]:
    if not index_lock_free(g.index_dir):
        return []  # a build or update is running: its files are work in flight
    stray = unreferenced_files(g.index_dir, manifest)
    if not stray:
        return []
    size = sum(p.stat().st_size for p in stray if p.exists())
    return [Finding("index", False, f"{len(stray)} files of an interrupted index build or update that no manifest "
                    f"names ({', '.join(p.name for p in stray[:3])}, {size:,} bytes; they can hold face vectors)",
                    f"gallery repair --gallery {g.root}")]


def check_index(g: Gallery) -> list[Finding]:
    fix = f"gallery index build --gallery {g.root}"
    try:
        manifest = read_manifest(g.index_dir, g.root)
    except NoIndexError:
        return [Finding("index", True, "no index yet (searches need one: gallery index build)"),
                *_leftover_findings(g, None)]
    except IndexerError as exc:
        return [Finding("index", False, str(exc), fix)]
    problems = []
    erased: list[str] = []
    path = g.index_dir / str(manifest.get("index_file"))
    faces = g.all_face_ids()
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        if int(index.ntotal) != int(manifest["ntotal"]):
            problems.append(f"{path.name} holds {index.ntotal:,} vectors, the manifest says {manifest['ntotal']:,}")
        else:
            gone = np.setdiff1d(index_ids(index), faces)
            if gone.size:
                erased.append(f"{path.name} holds {gone.size:,} ids of faces the gallery no longer has (erased or "
                              "dropped)")
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
        if size > 0:
            left = nonzero_rows_outside(vectors, int(manifest["dim"]), faces)
            if left.size:
                erased.append(f"re-rank file {vectors.name} holds the vectors of {left.size:,} faces the gallery no "
                              "longer has (their rows are not zero)")
    shards = {r.shard_id for r in g.shard_rows()}
    lost = [i for i in manifest.get("shards", []) if i not in shards]
    if lost:
        problems.append(f"covers {len(lost)} shards the gallery no longer has (dropped by a repair)")
    findings = [Finding("index", False, p, fix) for p in problems]
    findings += [Finding("index", False, e, f"gallery repair --gallery {g.root}") for e in erased]
    findings += _leftover_findings(g, manifest)
    if findings:
        return findings
    return [Finding("index", True, f"{manifest['factory']}, {manifest['ntotal']:,} faces, files readable, no id of "
                    "an erased face")]


def check(gallery: Gallery | str | Path, deep: bool = False) -> list[Finding]:
    """Every check of the store and the index; a finding with ok=False names the command that mends it."""
    g, owned = as_gallery(gallery)
    try:
        return check_store(g, deep) + check_index(g)
    finally:
        if owned:
            g.close()


def repair(gallery: Gallery | str | Path, lock_wait_s: float = DEFAULT_LOCK_WAIT_S) -> dict[str, Any]:
    """Repair the store, finish every pending erasure and clean every place an erasure reaches of what
    the gallery no longer holds (a sweep), then make the index agree: an index that cannot be read
    (or covers dropped shards) is rebuilt, and removed when no face is left."""
    g, owned = as_gallery(gallery)
    try:
        result = repair_store(g)
        outcome = finish_pending(g, lock_wait_s, sweep=True)
        facts = outcome.facts
        result["erasures_finished"] = sum(1 for r in outcome.finished if r.command != "repair")
        result["leftovers_removed"] = {k: v for k, v in facts.items() if k.endswith("removed") and v}
        problems = [f for f in check_index(g) if not f.ok]
        if not has_manifest(g.index_dir):
            index = "none"
        elif not g.live_face_count():
            remove_index(g)  # nothing left to index: the next `gallery index build` starts afresh
            index = "removed (no faces left)"
        elif problems:
            build_index(g)  # unreadable, or covering dropped shards: rebuilt from what is intact
            index = "rebuilt"
        elif facts.get("index") in ("patched", "rebuilt"):
            index = str(facts["index"])
        else:
            index = "ok"
        result["index"] = index
        if outcome.pending:
            result["pending"] = outcome.blocked
        return result
    finally:
        if owned:
            g.close()
