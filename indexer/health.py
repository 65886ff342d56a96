"""The index's part of `gallery check` (gallery.app.maintenance runs the whole check and repair):
manifest readable, index file readable and of the recorded size, re-rank file long enough, covering
only shards that exist, holding no id of a face the gallery no longer has, no non-zero re-rank row
of such a face, no file of a killed build."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from gallery.errors import IndexerError, NoIndexError
from gallery.store import Gallery
from gallery.store.integrity import Finding
from indexer.ids import damaged_rows, index_ids, nonzero_rows_outside
from indexer.loaded import index_file_intact
from indexer.manifest import index_lock_free, read_manifest, unreferenced_files


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


class _Damaged(Exception):
    """The index file's checksum does not match its manifest."""


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
    pending_work: list[str] = []  # ids of an erasure not finished yet: its own finding, not the index's
    pending = g.pending_erasure_face_ids()
    path = g.index_dir / str(manifest.get("index_file"))
    faces = g.all_face_ids()
    held = np.zeros(0, np.int64)
    try:
        if not index_file_intact(path, manifest.get("index_sha256")):
            raise _Damaged
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        if int(index.ntotal) != int(manifest["ntotal"]):
            problems.append(f"{path.name} holds {index.ntotal:,} vectors, the manifest says {manifest['ntotal']:,}")
        else:
            held = index_ids(index)
            gone = np.setdiff1d(held, faces)
            in_pending = np.intersect1d(gone, pending)
            gone = np.setdiff1d(gone, pending)
            if gone.size:
                erased.append(f"{path.name} holds {gone.size:,} ids of faces the gallery no longer has (erased or "
                              "dropped)")
            if in_pending.size:
                pending_work.append(f"{path.name} still holds {in_pending.size:,} ids of a pending erasure")
    except _Damaged:
        problems.append(f"{path.name} is damaged: its checksum does not match the one recorded when it was "
                        "written (searches answer by an exact scan until it is rebuilt)")
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
        if size > 0 and held.size:
            bad = damaged_rows(vectors, int(manifest["dim"]), np.intersect1d(held, faces))
            if bad.size:
                problems.append(f"re-rank file {vectors.name}: the rows of {bad.size:,} indexed faces are not unit "
                                "vectors (zeroed, garbled or cut off; searches score those faces from their shards)")
        if size > 0:
            left = nonzero_rows_outside(vectors, int(manifest["dim"]), faces)
            if np.intersect1d(left, pending).size:
                pending_work.append(f"re-rank file {vectors.name} still holds the vectors of "
                                    f"{np.intersect1d(left, pending).size:,} faces of a pending erasure")
            left = np.setdiff1d(left, pending)
            if left.size:
                erased.append(f"re-rank file {vectors.name} holds the vectors of {left.size:,} faces the gallery no "
                              "longer has (their rows are not zero)")
    shards = {r.shard_id for r in g.shard_rows()}
    lost = [i for i in manifest.get("shards", []) if i not in shards]
    if lost:
        problems.append(f"covers {len(lost)} shards the gallery no longer has (dropped by a repair)")
    findings = [Finding("index", False, p, fix) for p in problems]
    findings += [Finding("index", False, e, f"gallery repair --gallery {g.root}") for e in erased]
    findings += [Finding("erasure", False, w, f"gallery repair --gallery {g.root} (or any later writer) finishes it")
                 for w in pending_work]
    findings += _leftover_findings(g, manifest)
    if findings:
        return findings
    return [Finding("index", True, f"{manifest['factory']}, {manifest['ntotal']:,} faces, files readable, no id of "
                    "an erased face")]
