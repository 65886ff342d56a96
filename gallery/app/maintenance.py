"""Tending a whole gallery: `check`, `repair` and `compact`, the same for the CLI and any other caller.

check    the store's checks (database, shards, runs, vectors, pending erasures and the leftovers they
         must reach) and the index's (indexer.health.check_index)
repair   mends what check finds: shards rebuilt from the index folder's copies of their vectors, else
         from their photos; pending erasures finished with a sweep; a damaged index rebuilt
compact  reclaims the space of deleted faces (mostly-deleted shards rewritten, the index shed of them)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gallery.app.erasure import DEFAULT_LOCK_WAIT_S, finish_pending
from gallery.errors import IndexerError
from gallery.store import Gallery
from gallery.store import erase as store
from gallery.store.erase import ErasureSelection
from gallery.store.integrity import Finding, check_store, open_for_check, repair_store
from gallery.store.restore import LostFace, Recovered
from indexer.build import build_locked, own_choice_args, remove_ids
from indexer.copies import IndexCopies
from indexer.erasure import current_manifest
from indexer.health import check_index
from indexer.loaded import as_gallery
from indexer.manifest import has_manifest, index_lock, remove_index


def check(gallery: Gallery | str | Path, deep: bool = False) -> list[Finding]:
    """Every check of the store and the index; a finding with ok=False names the command that mends it."""
    root = Path(gallery if not isinstance(gallery, Gallery) else gallery.root)
    opened, log = open_for_check(root, lambda: as_gallery(gallery)[0])
    if opened is None:
        return log
    g, owned = opened, not isinstance(gallery, Gallery)
    try:
        return log + check_store(g, deep) + check_index(g)
    finally:
        if owned:
            g.close()


ReembedFn = Callable[[Gallery, Sequence[LostFace], Recovered], None]


def _recover_from_copies(g: Gallery, reembed: ReembedFn | None) -> Callable[[int, list[LostFace], Recovered], None]:
    """The repair's source of vectors for a damaged shard: the index folder's exact copies first (no
    photo read), then the photos through `reembed` (the gallery's own model), for what is left."""
    copies: list[IndexCopies] = []

    def recover(shard_id: int, faces: list[LostFace], recovered: Recovered) -> None:
        if not copies:
            copies.append(IndexCopies(g.index_dir, g.root))
        found, sources = copies[0].take([f.face_id for f in faces])
        for face_id, vector in found.items():
            recovered.add(face_id, vector, sources[face_id])
        rest = [f for f in faces if f.face_id not in recovered.embeddings]
        why = "no intact copy of its vector in the index folder" + (
            f" ({'; '.join(copies[0].notes)})" if copies[0].notes else "")
        for face in rest:
            recovered.reasons[face.face_id] = why + ("" if reembed else ", and its photo was not read")
        if rest and reembed is not None:
            reembed(g, rest, recovered)

    return recover


def repair(gallery: Gallery | str | Path, lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
           reembed: ReembedFn | None = None) -> dict[str, Any]:
    """Repair the store, finish every pending erasure and clean every place an erasure reaches of what
    the gallery no longer holds (a sweep), then make the index agree.

    A damaged shard is rebuilt from the index folder's exact copies of its vectors, and, through
    `reembed` (gallery.ingest.reembed.reembed_faces: it needs the face models), from the photos for
    the faces with no copy; only faces nothing restores are dropped. An index that cannot be read, is
    damaged, covers dropped shards or holds vectors older than re-embedded faces is rebuilt with the
    gallery's own factory and search setting, and removed when no face is left."""
    root = Path(gallery if not isinstance(gallery, Gallery) else gallery.root)
    opened, found = open_for_check(root, lambda: as_gallery(gallery)[0])
    if opened is None:
        return {"database": found[-1].detail, "fix": found[-1].fix}
    g, owned = opened, not isinstance(gallery, Gallery)
    try:
        settings = own_choice_args(g)  # before anything changes: what the gallery's index was built with
        had_index = has_manifest(g.index_dir)
        result = repair_store(g, _recover_from_copies(g, reembed))
        outcome = finish_pending(g, lock_wait_s, sweep=True)
        facts = outcome.facts
        result["erasures_finished"] = sum(1 for r in outcome.finished if r.command != "repair")
        result["leftovers_removed"] = {k: v for k, v in facts.items() if k.endswith("removed") and v}
        problems = [f for f in check_index(g) if not f.ok]
        reembedded = bool(result["restored_from"].get("photo"))
        if not g.live_face_count():
            if has_manifest(g.index_dir) or had_index:
                remove_index(g)  # nothing left to index: the next `gallery index build` starts afresh
                index = "removed (no faces left)"
            else:
                index = "none"
        elif problems or reembedded or (not has_manifest(g.index_dir) and settings.get("factory")):
            # unreadable, damaged, gone, covering dropped shards, or older than re-embedded faces
            with index_lock(g.index_dir, wait_s=lock_wait_s):
                build_locked(g, settings)
            index = "rebuilt"
        elif not has_manifest(g.index_dir):
            index = "none"
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


def compact(gallery: Gallery | str | Path, min_deleted_share: float = 0.5,
            lock_wait_s: float = DEFAULT_LOCK_WAIT_S) -> dict[str, Any]:
    """Reclaim the space of deleted faces: shards that are mostly deleted faces are rewritten with
    their live faces only (those deleted faces are erased), and the index sheds the deleted ids —
    rebuilt when most of it is deleted (cheaper than patching), else patched."""
    g, owned = as_gallery(gallery)
    try:
        with g.writer_lock(nested=True):  # finish_pending below enters it
            doomed = [int(i) for i in g.deleted_face_ids_in_mostly_deleted_shards(min_deleted_share)]
            if doomed:
                store.record_erasure(g, ErasureSelection(face_ids=doomed), "compact")
            outcome = finish_pending(g, lock_wait_s)
            result: dict[str, Any] = {"shards_rewritten": int(outcome.facts.get("shards_rewritten", 0)),
                                      "faces_erased": len(doomed), "status": "pending" if outcome.pending else "done"}
            if outcome.pending:
                result["pending"] = outcome.blocked
            manifest = current_manifest(g)
            if manifest is None:
                return {**result, "index": "none"}
            deleted = g.deleted_ids()
            covered = deleted[deleted <= int(manifest["max_face_id"])]
            index = ("pending" if "index" in outcome.blocked else str(outcome.facts["index"])
                     if "index" in outcome.facts else "unchanged")
            if covered.size and covered.size >= min_deleted_share * max(1, int(manifest["ntotal"])):
                with index_lock(g.index_dir, wait_s=lock_wait_s):
                    build_locked(g, own_choice_args(g, manifest))
                index = "rebuilt"
            elif covered.size:
                try:
                    remove_ids(g, covered)
                    index = "patched" if index != "rebuilt" else index
                except IndexerError:  # an index type without remove_ids (HNSW): rebuilt with its own settings
                    with index_lock(g.index_dir, wait_s=lock_wait_s):
                        build_locked(g, own_choice_args(g))
                    index = "rebuilt"
            return {**result, "index": index}
    finally:
        if owned:
            g.close()
