"""Erase faces, photos or a person from every file of a gallery, and compact it.

The one entry point for erasure (`erase`): the store deletes the rows from SQLite (secure_delete, WAL
checkpoint) and rewrites the shards that held the faces (gallery.store.erase); then the index is
patched: the ids are removed from the FAISS index (a new file; the old one is deleted) and their rows
of the re-rank vectors file are overwritten with zeros. Where the index type cannot remove ids, the
index is rebuilt from the remaining faces. An append-only erasure log records that it happened
(when, how many, which command), never what.

What it does not reach: copies outside the gallery folder (backups, exported CSVs, crops written
elsewhere, the photo archive itself) and the free blocks of the filesystem.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gallery.errors import IndexerError, NoIndexError
from gallery.store import Gallery
from gallery.store.erase import ErasureSelection, erase_rows, purge_unreferenced_vectors
from indexer.build import build_index, remove_ids
from indexer.loaded import as_gallery
from indexer.manifest import read_manifest


@dataclass
class ErasureReport:
    command: str
    faces: int
    photos: int
    identities: int
    shards_rewritten: int
    index: str  # "patched", "rebuilt", "none" (no index yet)
    seconds: float
    kept_out: int = 0  # erased photos that ingest and sync keep out from now on

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _patch_index(g: Gallery, face_ids: Any) -> str:
    try:
        read_manifest(g.index_dir, g.root)
    except NoIndexError:
        return "none"
    try:
        remove_ids(g, face_ids)
        return "patched"
    except IndexerError:  # an index type without remove_ids: rebuild without the erased faces
        build_index(g)
        return "rebuilt"


def erase(gallery: Gallery | str | Path, selection: ErasureSelection, command: str) -> ErasureReport:
    """Erase the selection from every file of the gallery (see the module docstring)."""
    t0 = time.perf_counter()
    g, owned = as_gallery(gallery)
    try:
        with g.writer_lock():
            result = erase_rows(g, selection, command)
            shards = purge_unreferenced_vectors(g)
            index = _patch_index(g, result.face_ids) if result.face_ids.size else "none"
        return ErasureReport(command, int(result.face_ids.size), result.photos, result.identities, shards, index,
                             round(time.perf_counter() - t0, 3), result.kept_out)
    finally:
        if owned:
            g.close()


def compact(gallery: Gallery | str | Path, min_deleted_share: float = 0.5) -> dict[str, Any]:
    """Reclaim the space of deleted faces: shards that are mostly deleted faces are rewritten with
    their live faces only (deleted faces become erased ones), and the index sheds the deleted ids —
    rebuilt when most of it is deleted (cheaper than patching), else patched."""
    g, owned = as_gallery(gallery)
    try:
        with g.writer_lock():
            deleted = g.deleted_ids()
            doomed = [int(i) for i in g.deleted_face_ids_in_mostly_deleted_shards(min_deleted_share)]
            if doomed:
                erase_rows(g, ErasureSelection(face_ids=doomed), "compact")
            shards = purge_unreferenced_vectors(g)
            try:
                manifest = read_manifest(g.index_dir, g.root)
            except NoIndexError:
                return {"shards_rewritten": shards, "faces_erased": len(doomed), "index": "none"}
            covered = deleted[deleted <= int(manifest["max_face_id"])]
            if covered.size and covered.size >= min_deleted_share * max(1, int(manifest["ntotal"])):
                build_index(g)
                index = "rebuilt"
            elif covered.size:
                remove_ids(g, covered)
                index = "patched"
            else:
                index = "unchanged"
        return {"shards_rewritten": shards, "faces_erased": len(doomed), "index": index}
    finally:
        if owned:
            g.close()
