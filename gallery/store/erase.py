"""Erasure that really erases, on the store's side: SQLite rows deleted (not flagged) with
`secure_delete` and a WAL checkpoint, and every shard that held an erased face rewritten without it.

What is erased (`ErasureSelection`):
- faces by id; a photo left with no face is erased with them;
- photos by file path: the photo, every face in it, every file row with its content;
- an identity: its name, every face labeled with it, and every photo labeled as theirs (folder or CSV
  label) with all faces in it (the photo shows them; other people's faces in it go too).

Order, for crash safety: SQLite first (the faces vanish from every answer at once: a vector id with
no face row is never shown), then the shards. `purge_unreferenced_vectors` finds and rewrites any
shard that still holds a vector without a face row, so an erasure interrupted between the two steps
is finished by the next erase or `gallery compact`. The index side (FAISS file, re-rank vectors) is
patched by indexer.erasure, which calls this module first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, func, or_, select, text, update

from gallery.errors import NotInGallery
from gallery.store.clusters import forget_faces_in_clusters
from gallery.store.edits import image_ids_at_paths
from gallery.store.keep_out import keep_out_content
from gallery.store.schema import ErasureLog, Face, Identity, Image, Run, Shard, SourceFile, keep_high_water
from gallery.store.shards import rewrite_shard_without, shard_face_ids

if TYPE_CHECKING:
    from gallery.store.gallery import Gallery


@dataclass
class ErasureSelection:
    face_ids: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    identity: str | None = None
    keep_out: bool = False  # ingest and sync keep the erased photos out (a keyed fingerprint each: keep_out.py)


@dataclass
class ErasureResult:
    face_ids: np.ndarray  # erased vector ids (for the index side)
    photos: int
    identities: int
    shards_rewritten: int = 0
    kept_out: int = 0  # erased photos kept out of future ingests


def erase_rows(gallery: Gallery, selection: ErasureSelection, command: str) -> ErasureResult:
    """Delete the selection's rows from SQLite with secure_delete (one transaction), log that it
    happened, then checkpoint the WAL so no page keeps the old bytes."""
    with gallery.session() as s, s.begin():  # every connection runs with secure_delete (schema.py)
        keep_high_water(s)
        image_ids: set[int] = set()
        face_ids: set[int] = set()
        identity_id = None
        if selection.identity is not None:
            identity_id = s.scalar(select(Identity.identity_id).where(Identity.name == selection.identity))
            if identity_id is None:
                raise NotInGallery(f"No identity named '{selection.identity}' in this gallery.")
            face_ids |= set(s.scalars(select(Face.face_id).where(Face.identity_id == identity_id)))
            image_ids |= set(s.scalars(select(Image.image_id).where(Image.identity_id == identity_id)))
        if selection.paths:
            found = image_ids_at_paths(s, selection.paths)
            missing = [p for p in selection.paths if p not in found]
            if missing:
                raise NotInGallery(f"No photo at {missing[:3]} in this gallery (paths as ingested: absolute).")
            image_ids |= set(found.values())
        if selection.face_ids:
            wanted = {int(i) for i in selection.face_ids}
            known = set(s.scalars(select(Face.face_id).where(Face.face_id.in_(wanted))))
            if wanted - known:
                raise NotInGallery(f"No face with id {sorted(wanted - known)[:10]} in this gallery.")
            face_ids |= known
        if image_ids:
            face_ids |= set(s.scalars(select(Face.face_id).where(Face.image_id.in_(image_ids))))
        # photos left without any face go too
        touched = set(s.scalars(select(Face.image_id).where(Face.face_id.in_(face_ids))))
        remaining = set(s.scalars(select(Face.image_id).where(Face.image_id.in_(touched),
                                                                ~Face.face_id.in_(face_ids))))
        image_ids |= touched - remaining
        paths = set(s.scalars(select(SourceFile.path).where(SourceFile.image_id.in_(image_ids))))
        paths |= set(s.scalars(select(Image.path).where(Image.image_id.in_(image_ids))))
        kept_out = (keep_out_content(s, s.scalars(select(Image.sha256).where(Image.image_id.in_(image_ids))))
                    if selection.keep_out else 0)
        forget_faces_in_clusters(s, face_ids)
        s.execute(delete(Face).where(Face.face_id.in_(face_ids)))
        s.execute(delete(SourceFile).where(SourceFile.image_id.in_(image_ids)))
        s.execute(delete(Image).where(Image.image_id.in_(image_ids)))
        erased_identities = 0
        if identity_id is not None:
            s.execute(update(Image).where(Image.identity_id == identity_id).values(identity_id=None))
            s.execute(update(Face).where(Face.identity_id == identity_id).values(identity_id=None))
            s.execute(delete(Identity).where(Identity.identity_id == identity_id))
            erased_identities = 1
        # a run started on one of these photos (or the person's folder) must not keep its path
        needles = [*paths, *([selection.identity] if selection.identity else [])]
        if needles:
            s.execute(update(Run).where(or_(*[Run.source.contains(n) for n in needles]))
                      .values(source="(erased)", args="{}"))
        s.add(ErasureLog(erased_at=time.time(), command=command, faces=len(face_ids), photos=len(image_ids),
                         identities=erased_identities, shards_rewritten=0))
    checkpoint(gallery)
    return ErasureResult(np.asarray(sorted(face_ids), np.int64), len(image_ids), erased_identities,
                         kept_out=kept_out)


def purge_unreferenced_vectors(gallery: Gallery) -> int:
    """Rewrite every shard that holds a vector without a face row (erased faces), and update its row.
    Idempotent: finishes an interrupted erasure. Returns how many shards were rewritten."""
    rewritten = 0
    for row in gallery.shard_rows():
        path = gallery.shards_dir / row.filename
        with gallery.session() as s:
            keep = np.asarray(s.scalars(select(Face.face_id).where(Face.shard_id == row.shard_id)).all(), np.int64)
        if np.isin(shard_face_ids(path), keep).all():
            continue
        gallery.verify_shard(row)
        kept, size, sha256 = rewrite_shard_without(path, keep)
        with gallery.session() as s, s.begin():  # max_face_id stays: an upper bound of the ids it held
            s.execute(update(Shard).where(Shard.shard_id == row.shard_id)
                      .values(n_faces=kept, bytes=size, sha256=sha256))
        rewritten += 1
    if rewritten:
        with gallery.session() as s, s.begin():
            last = s.scalar(select(func.max(ErasureLog.entry_id)))
            if last is not None:
                s.execute(update(ErasureLog).where(ErasureLog.entry_id == last)
                          .values(shards_rewritten=ErasureLog.shards_rewritten + rewritten))
    return rewritten


def checkpoint(gallery: Gallery) -> None:
    """Move the WAL into the database and truncate it: deleted rows leave no copy in gallery.db-wal."""
    with gallery.engine.connect() as conn:
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
