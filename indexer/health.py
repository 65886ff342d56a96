"""`gallery check` and `gallery repair` for the whole gallery: the store's checks (database, shards,
runs, vectors, pending erasures and the leftovers they must reach) and the index's (manifest
readable, index file readable and of the recorded size, re-rank file long enough, covering only
shards that exist, holding no id of a face the gallery no longer has, no non-zero re-rank row of
such a face, no file of a killed build)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from gallery.errors import IndexerError, NoIndexError
from gallery.store import Gallery
from gallery.store.integrity import Finding, check_store, open_for_check, repair_store
from gallery.store.restore import LostFace, Recovered
from indexer.build import build_locked, own_choice_args
from indexer.copies import IndexCopies
from indexer.erasure import DEFAULT_LOCK_WAIT_S, finish_pending
from indexer.ids import damaged_rows, index_ids, nonzero_rows_outside
from indexer.loaded import as_gallery, index_file_intact
from indexer.manifest import has_manifest, index_lock, index_lock_free, read_manifest, remove_index, unreferenced_files


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
            if gone.size:
                erased.append(f"{path.name} holds {gone.size:,} ids of faces the gallery no longer has (erased or "
                              "dropped)")
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
