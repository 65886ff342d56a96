"""The index's places of an erasure (gallery.app.erasure carries an erasure to every place, in order):

    index     the ids are removed from the FAISS index (a new file; an index type that cannot remove
              ids is rebuilt); files a killed build left in the index folder are deleted
    rerank    the ids' rows of the re-rank vectors file are overwritten with zeros

Each raises StepBlocked when the index lock is held by a build or update (one that started before
the erasure takes its faces out when it commits, indexer.build), so the erasure stays pending.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gallery.errors import IndexBusyError, IndexerError, NoIndexError
from gallery.store import Gallery
from gallery.store.erase import ErasureWork, StepBlocked
from indexer.build import _zero_rerank_rows, build_locked, own_choice_args, remove_ids_locked
from indexer.ids import index_file_ids, nonzero_rows_outside
from indexer.manifest import cleanup_unreferenced, index_lock, read_manifest, remove_index_files

DEFAULT_LOCK_WAIT_S = 30.0  # how long an erasure waits for the index lock, and for readers to let go
INDEX_BUSY = ("an index build or update holds the index (one that started before this erasure takes these "
              "faces out when it commits)")


def current_manifest(g: Gallery) -> Any:
    try:
        return read_manifest(g.index_dir, g.root)
    except NoIndexError:
        return None


def remove_from_index(g: Gallery, work: ErasureWork) -> dict[str, Any]:
    """Index: the ids leave the FAISS index (rebuilt where its type cannot remove ids); a killed
    build's files are deleted. With work.sweep, every id the index holds without a face row goes."""
    try:
        with index_lock(g.index_dir, wait_s=work.lock_wait_s):
            try:
                manifest = current_manifest(g)
                leftovers = cleanup_unreferenced(g.index_dir, manifest)
                if manifest is None:
                    return {"index": "none", "index_leftovers_removed": len(leftovers)}
                held = index_file_ids(g.index_dir / manifest["index_file"])
            except (IndexerError, RuntimeError, OSError):
                # an unreadable manifest or index cannot be patched, and may hold the faces: it goes
                # (`gallery repair` builds it again with the settings SQLite recorded)
                remove_index_files(g.index_dir)
                return {"index": "removed (unreadable)", "index_leftovers_removed": 0}
            ids = work.face_ids
            if work.sweep:
                ids = np.union1d(ids, np.setdiff1d(held, g.all_face_ids(), assume_unique=True))
            if ids.size == 0:
                return {"index": "unchanged", "index_leftovers_removed": len(leftovers)}
            try:
                _, removed = remove_ids_locked(g, ids, zero_rerank=False)
                state = "patched" if removed else "unchanged"
            except IndexerError:  # an index type without remove_ids: rebuilt without the erased faces
                build_locked(g, own_choice_args(g, manifest))
                state = "rebuilt"
    except IndexBusyError:
        raise StepBlocked(INDEX_BUSY) from None
    return {"index": state, "index_leftovers_removed": len(leftovers)}


def zero_rerank_rows(g: Gallery, work: ErasureWork) -> dict[str, Any]:
    """Re-rank file: the ids' rows are overwritten with zeros. With work.sweep, every non-zero row of
    an id without a face row is."""
    try:
        with index_lock(g.index_dir, wait_s=work.lock_wait_s):
            manifest = current_manifest(g)
            rerank = (manifest or {}).get("rerank") or {}
            if not rerank.get("enabled"):
                return {"rerank_rows_zeroed": 0}
            ids = work.face_ids
            path = g.index_dir / rerank["file"]
            if work.sweep and path.is_file():
                ids = np.union1d(ids, nonzero_rows_outside(path, int(manifest["dim"]), g.all_face_ids()))
            return {"rerank_rows_zeroed": _zero_rerank_rows(g, manifest, ids)}
    except IndexBusyError:
        raise StepBlocked(INDEX_BUSY) from None


