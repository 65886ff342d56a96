"""Erasure on the store's side: the record that an erasure is pending, and the places the store owns.

What is erased (`ErasureSelection`):
- faces by id; a photo left with no face is erased with them;
- photos by file path: the photo, every face in it, every file row with its content;
- an identity: its name, every face labeled with it, and every photo labeled as theirs (folder or CSV
  label, or whose main face carries the name) with all faces in it (the photo shows them; other
  people's faces in it go too);
- a photo kept in an enrolment folder that shows an erased face goes whole, with every copy of it:
  the gallery owns that file, and a crop of another face in it would still show the person.

An erasure is recorded first (`record_erasure`, under the writer lock): one transaction deletes its
rows (faces, photos, files, identities left without faces; `secure_delete` overwrites them) and keeps
a pending record of the ids they had, never a name, a path or a vector. From that commit on no answer
includes those faces: search reads face rows per query and hides pending ids (gallery.store.queries).
Then the erasure is carried to each place that can still hold the faces, one function per place, in
the order of indexer.erasure.STEPS (which adds the index's places). Each place function is idempotent
and a sweep: it removes from its place whatever the gallery no longer holds, so it also finishes an
older erasure and cleans up after a crash. A place that cannot be reached now raises `StepBlocked`
with the reason; the pending record stays, `gallery check` fails, and the same command, a later
writer or `gallery repair` carries on. When every place is reached the record is deleted. The erasure
log says that an erasure happened: when, how much, which command. Never what.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, func, insert, select, update

from gallery.errors import NotInGallery
from gallery.fsutil import lock_held
from gallery.store.clusters import forget_faces_in_clusters
from gallery.store.edits import image_ids_at_paths
from gallery.store.keep_out import keep_out_content
from gallery.store.schema import (
    ErasureLog,
    Face,
    Identity,
    Image,
    PendingErasure,
    PendingErasureId,
    Run,
    Shard,
    SourceFile,
    keep_high_water,
)
from gallery.store.shards import rewrite_shard_without, shard_face_ids
from gallery.store.staging import remove_partial, remove_staging_if_empty, staged_files, staging_dir

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from gallery.store.gallery import Gallery

BATCH = 900  # ids per IN (...) list: under SQLite's bound-parameter limit, never an expression per id
FINISHED_JOB_STATES = ("done", "failed")


class StepBlocked(Exception):
    """A place an erasure cannot reach right now (a lock held, readers holding the database); the
    message says why, for a person, and names no erased data."""


@dataclass
class ErasureSelection:
    face_ids: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    identity: str | None = None
    keep_out: bool = False  # ingest and sync keep the erased photos out (a keyed fingerprint each: keep_out.py)


@dataclass
class RecordedErasure:
    erasure_id: int
    faces: int
    photos: int
    identities: int
    kept_out: int = 0  # erased photos kept out of future ingests


@dataclass
class PendingRecord:
    """One erasure not finished yet, as its record keeps it (ids only)."""

    erasure_id: int
    command: str
    started_at: float
    done: list[str]
    problem: str | None
    log_entry_id: int | None


@dataclass
class ErasureWork:
    """What the place functions erase: the ids of every pending erasure together. With sweep=True a
    place also removes what no erasure recorded (an older version's erasure, a crash's leftovers)."""

    erasure_ids: list[int]
    face_ids: np.ndarray  # sorted int64
    image_ids: np.ndarray
    identity_ids: np.ndarray
    lock_wait_s: float = 30.0
    sweep: bool = False


def chunks(ids: Iterable[Any], size: int = BATCH) -> Iterator[list[Any]]:
    items = list(ids)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _select_in(s: Session, column: Any, ids: Iterable[Any], *what: Any, where: Any = None) -> list[Any]:
    """Rows of `select(*what)` where `column` is in `ids`, one bounded IN list at a time."""
    out: list[Any] = []
    for part in chunks(ids):
        q = select(*what).where(column.in_(part))
        out += s.execute(q if where is None else q.where(where)).all()
    return out


# --- recording ---------------------------------------------------------------------------------------


def _under(path: str, roots: list[str]) -> bool:
    return any(path.startswith(r) for r in roots)


def record_erasure(gallery: Gallery, selection: ErasureSelection, command: str) -> RecordedErasure:
    """Resolve the selection, delete its rows and record the erasure as pending, in one transaction
    (the caller holds the writer lock). Raises NotInGallery when the selection names nothing."""
    enrol_roots = [str(p.resolve()) + "/" for p in gallery.enrol_dirs()]
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
            image_ids |= set(s.scalars(select(Face.image_id).where(Face.identity_id == identity_id,
                                                                   Face.is_main.is_(True))))
        if selection.paths:
            found: dict[str, int] = {}
            for part in chunks(dict.fromkeys(selection.paths)):
                found.update(image_ids_at_paths(s, part))
            missing = [p for p in selection.paths if p not in found]
            if missing:
                raise NotInGallery(f"No photo at {missing[:3]} in this gallery (paths as ingested: absolute).")
            image_ids |= set(found.values())
        if selection.face_ids:
            wanted = {int(i) for i in selection.face_ids}
            known = {r[0] for r in _select_in(s, Face.face_id, sorted(wanted), Face.face_id)}
            if wanted - known:
                raise NotInGallery(f"No face with id {sorted(wanted - known)[:10]} in this gallery.")
            face_ids |= known
        # a face found in a video goes with its whole track: the track's other frames and its template
        tracked = {(i, t) for i, t in _select_in(s, Face.face_id, sorted(face_ids), Face.image_id, Face.track)
                   if t is not None}
        for image_id, track in sorted(tracked):
            face_ids |= set(s.scalars(select(Face.face_id).where(Face.image_id == image_id, Face.track == track)))
        # photos the gallery keeps in an enrolment folder go whole (see the module docstring)
        touched = {r[0] for r in _select_in(s, Face.face_id, sorted(face_ids), Face.image_id)}
        kept = _select_in(s, Image.image_id, sorted(touched - image_ids), Image.image_id, Image.path)
        kept += _select_in(s, SourceFile.image_id, sorted(touched - image_ids), SourceFile.image_id, SourceFile.path)
        image_ids |= {i for i, path in kept if _under(path, enrol_roots)}
        face_ids |= {r[0] for r in _select_in(s, Face.image_id, sorted(image_ids), Face.face_id)}
        # photos left without any face go too
        faces_of_touched = _select_in(s, Face.image_id, sorted(touched), Face.image_id, Face.face_id)
        remaining = {i for i, f in faces_of_touched if f not in face_ids}
        image_ids |= touched - remaining
        identities = {r[0] for r in _select_in(s, Face.face_id, sorted(face_ids), Face.identity_id)} - {None}
        identities |= {r[0] for r in _select_in(s, Image.image_id, sorted(image_ids), Image.identity_id)} - {None}
        if identity_id is not None:
            identities.add(identity_id)
        paths = {r[0] for r in _select_in(s, SourceFile.image_id, sorted(image_ids), SourceFile.path)}
        paths |= {r[0] for r in _select_in(s, Image.image_id, sorted(image_ids), Image.path)}
        kept_out = 0
        if selection.keep_out:  # before the photo rows (and their content hashes) go
            hashes = _select_in(s, Image.image_id, sorted(image_ids), Image.sha256)
            kept_out = keep_out_content(s, (r[0] for r in hashes))

        erasure_id = begin_pending(s, command, face_ids, image_ids, identities)
        forget_faces_in_clusters(s, face_ids)
        ids_of = _pending_ids_query(erasure_id)
        s.execute(delete(Face).where(Face.face_id.in_(ids_of("face"))))
        s.execute(delete(SourceFile).where(SourceFile.image_id.in_(ids_of("image"))))
        s.execute(delete(Image).where(Image.image_id.in_(ids_of("image"))))
        erased_identities = _drop_identities_without_faces(s, erasure_id)
        _forget_run_sources(s, paths, selection.identity)
        log = ErasureLog(erased_at=time.time(), command=command, faces=len(face_ids), photos=len(image_ids),
                         identities=erased_identities, shards_rewritten=0)
        s.add(log)
        s.flush()
        s.execute(update(PendingErasure).where(PendingErasure.erasure_id == erasure_id)
                  .values(log_entry_id=log.entry_id))
    return RecordedErasure(erasure_id, len(face_ids), len(image_ids), erased_identities, kept_out=kept_out)


def begin_pending(s: Session, command: str, face_ids: Iterable[int], image_ids: Iterable[int] = (),
                  identity_ids: Iterable[int] = ()) -> int:
    """Insert a pending-erasure record with its ids (in the caller's transaction); returns its id."""
    record = PendingErasure(started_at=time.time(), command=command, done="[]")
    s.add(record)
    s.flush()
    for kind, ids in (("face", face_ids), ("image", image_ids), ("identity", identity_ids)):
        for part in chunks(sorted({int(i) for i in ids}), 10_000):
            s.execute(insert(PendingErasureId), [{"erasure_id": record.erasure_id, "kind": kind, "item_id": i}
                                                 for i in part])
    return int(record.erasure_id)


def _pending_ids_query(erasure_id: int) -> Any:
    def ids_of(kind: str) -> Any:
        return select(PendingErasureId.item_id).where(PendingErasureId.erasure_id == erasure_id,
                                                      PendingErasureId.kind == kind)

    return ids_of


def _drop_identities_without_faces(s: Session, erasure_id: int) -> int:
    """The erasure's identities that no face carries any more lose their name (their photos forget
    them); returns how many. An identity of the erasure that still has faces keeps its row."""
    candidates = _pending_ids_query(erasure_id)("identity")
    empty = select(Identity.identity_id).where(
        Identity.identity_id.in_(candidates),
        ~Identity.identity_id.in_(select(Face.identity_id).where(Face.identity_id.is_not(None))))
    gone = list(s.scalars(empty))
    if gone:
        s.execute(update(Image).where(Image.identity_id.in_(gone)).values(identity_id=None))
        s.execute(delete(Identity).where(Identity.identity_id.in_(gone)))
    return len(gone)


def _forget_run_sources(s: Session, paths: set[str], name: str | None) -> None:
    """A run started on one of these photos (or the person's folder) must not keep its path. Runs are
    few (one per ingest): they are matched here, not by one SQL expression per path."""
    hit = [run_id for run_id, source in s.execute(select(Run.run_id, Run.source))
           if source in paths or (name and name in source)]
    for part in chunks(hit):
        s.execute(update(Run).where(Run.run_id.in_(part)).values(source="(erased)", args="{}"))


# --- the pending records -----------------------------------------------------------------------------


def pending_records(gallery: Gallery) -> list[PendingRecord]:
    with gallery.session() as s:
        rows = s.execute(select(PendingErasure.erasure_id, PendingErasure.command, PendingErasure.started_at,
                                PendingErasure.done, PendingErasure.problem, PendingErasure.log_entry_id)
                         .order_by(PendingErasure.erasure_id)).all()
    return [PendingRecord(r[0], r[1], r[2], json.loads(r[3] or "[]"), r[4], r[5]) for r in rows]


def pending_work(gallery: Gallery, records: list[PendingRecord], lock_wait_s: float, sweep: bool = False
                 ) -> ErasureWork:
    ids = [r.erasure_id for r in records]
    found: dict[str, list[int]] = {"face": [], "image": [], "identity": []}
    with gallery.session() as s:
        for part in chunks(ids):
            for kind, item in s.execute(select(PendingErasureId.kind, PendingErasureId.item_id)
                                        .where(PendingErasureId.erasure_id.in_(part))):
                found[kind].append(int(item))
    arrays = {k: np.unique(np.asarray(v, np.int64)) for k, v in found.items()}
    return ErasureWork(ids, arrays["face"], arrays["image"], arrays["identity"], lock_wait_s, sweep)


def mark_done(gallery: Gallery, erasure_ids: list[int], place: str) -> None:
    with gallery.session() as s, s.begin():
        for record in s.scalars(select(PendingErasure).where(PendingErasure.erasure_id.in_(erasure_ids))):
            done = json.loads(record.done or "[]")
            if place not in done:
                record.done = json.dumps([*done, place])


def note_problem(gallery: Gallery, erasure_ids: list[int], problem: str | None) -> None:
    with gallery.session() as s, s.begin():
        s.execute(update(PendingErasure).where(PendingErasure.erasure_id.in_(erasure_ids)).values(problem=problem))


def complete(gallery: Gallery, places: list[str]) -> list[PendingRecord]:
    """Delete the records of erasures that reached every place; returns them."""
    finished = [r for r in pending_records(gallery) if set(places) <= set(r.done)]
    if not finished:
        return []
    ids = [r.erasure_id for r in finished]
    with gallery.session() as s, s.begin():
        s.execute(delete(PendingErasureId).where(PendingErasureId.erasure_id.in_(ids)))
        s.execute(delete(PendingErasure).where(PendingErasure.erasure_id.in_(ids)))
    return finished


def logged_counts(gallery: Gallery, records: list[PendingRecord]) -> dict[str, int]:
    """faces, photos and identities of these erasures, as their log entries say."""
    logs = [r.log_entry_id for r in records if r.log_entry_id is not None]
    with gallery.session() as s:
        row = s.execute(select(func.coalesce(func.sum(ErasureLog.faces), 0), func.coalesce(func.sum(
            ErasureLog.photos), 0), func.coalesce(func.sum(ErasureLog.identities), 0))
            .where(ErasureLog.entry_id.in_(logs))).one() if logs else (0, 0, 0)
    return {"faces": int(row[0]), "photos": int(row[1]), "identities": int(row[2])}


# --- place: the Parquet shards -----------------------------------------------------------------------


def purge_unreferenced_vectors(gallery: Gallery) -> int:
    """Rewrite every shard that holds a vector without a face row (erased faces), and update its row.
    Idempotent: finishes an interrupted erasure. Returns how many shards were rewritten."""
    rewritten = 0
    with gallery.session() as s:  # a shard holds a vector without a face row iff it has fewer rows than vectors
        counts = dict(s.execute(select(Face.shard_id, func.count()).group_by(Face.shard_id)).all())
    for row in gallery.shard_rows():
        if counts.get(row.shard_id, 0) >= row.n_faces:
            continue
        path = gallery.shards_dir / row.filename
        with gallery.engine.connect() as conn:
            cursor = conn.connection.cursor()
            cursor.execute("SELECT face_id FROM faces WHERE shard_id = ?", (row.shard_id,))
            keep = np.fromiter((r[0] for r in cursor), np.int64)
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


def rewrite_shards(gallery: Gallery, work: ErasureWork) -> dict[str, Any]:
    """Shards: every shard holding a vector without a face row is rewritten without it; temp files of
    an interrupted rewrite (or ingest) go too."""
    rewritten = purge_unreferenced_vectors(gallery)
    gallery.remove_orphan_shards()
    return {"shards_rewritten": rewritten}


# --- place: staged batches of a distributed ingest ---------------------------------------------------


def staged_leftovers(gallery: Gallery) -> list[Path]:
    """Staged batches (and temp files) a killed `--engine ray` driver left: they hold embeddings and
    photo paths of photos that may since have been erased."""
    folder = staging_dir(gallery.root)
    return [*staged_files(folder), *sorted(folder.glob(".staged-*.tmp"))] if folder.is_dir() else []


def clear_staging(gallery: Gallery, work: ErasureWork) -> dict[str, Any]:
    """Staging: every staged batch is dropped (the writer lock is held, so no driver is running; the
    photos of a batch that was not committed are read again by the next ingest)."""
    folder = staging_dir(gallery.root)
    removed = 0
    for path in staged_files(folder):
        path.unlink(missing_ok=True)
        removed += 1
    removed += len(remove_partial(folder))
    remove_staging_if_empty(folder)
    return {"staged_batches_removed": removed}


# --- place: photos enrolled over HTTP ----------------------------------------------------------------


def enrolled_leftovers(gallery: Gallery) -> list[Path]:
    """Files in the enrolment folders that no file or photo record names: copies of erased photos, or
    uploads a killed enrolment saved but never ingested."""
    out: list[Path] = []
    for folder in gallery.enrol_dirs():
        if not folder.is_dir():
            continue
        root = folder.resolve()
        prefix = str(root) + "/"
        with gallery.session() as s:
            known = set(s.scalars(select(SourceFile.path).where(SourceFile.path.startswith(prefix, autoescape=True))))
            known |= set(s.scalars(select(Image.path).where(Image.path.startswith(prefix, autoescape=True))))
        for dirpath, _, names in os.walk(root):
            out += [Path(dirpath) / n for n in sorted(names) if os.path.join(dirpath, n) not in known]
    return out


def remove_enrolled_copies(gallery: Gallery, work: ErasureWork) -> dict[str, Any]:
    """Enrolled: every file of the enrolment folders that no record names is deleted (the writer lock
    is held, so no enrolment is saving photos right now), then the folders left empty."""
    removed = 0
    for path in enrolled_leftovers(gallery):
        path.unlink(missing_ok=True)
        removed += 1
    for folder in gallery.enrol_dirs():
        if folder.is_dir():
            for dirpath, _, _ in sorted(os.walk(folder.resolve()), key=lambda w: -len(w[0])):
                if Path(dirpath) != folder.resolve():
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        pass  # not empty
    return {"enrolled_files_removed": removed}


# --- place: the server's job records and uploads -----------------------------------------------------


def server_instance_alive(gallery: Gallery, name: str) -> bool:
    """A server holds `serve/NAME.lock` while it runs."""
    return lock_held(gallery.serve_dir / f"{name}.lock")


def server_leftovers(gallery: Gallery) -> list[Path]:
    """Folders of servers that are not running any more (killed): job records with paths and names,
    uploads that were being searched."""
    if not gallery.serve_dir.is_dir():
        return []
    return [p for p in sorted(gallery.serve_dir.iterdir()) if p.is_dir() and not server_instance_alive(gallery, p.name)]


def clear_server_records(gallery: Gallery, work: ErasureWork) -> dict[str, Any]:
    """Server: the folders of servers that died are deleted; a running server's finished job records
    are deleted (a job's record can hold a name and face ids; running jobs keep theirs)."""
    removed = 0
    for folder in server_leftovers(gallery):
        shutil.rmtree(folder, ignore_errors=True)
        (gallery.serve_dir / f"{folder.name}.lock").unlink(missing_ok=True)
        removed += 1
    records = 0
    if gallery.serve_dir.is_dir():
        for path in gallery.serve_dir.glob("*/jobs/*.json"):
            try:
                state = json.loads(path.read_text()).get("state")
            except (OSError, ValueError):
                continue  # being replaced right now
            if state in FINISHED_JOB_STATES:
                path.unlink(missing_ok=True)
                records += 1
        if not any(gallery.serve_dir.iterdir()):
            gallery.serve_dir.rmdir()
    return {"server_folders_removed": removed, "job_records_removed": records}


# --- place: SQLite's WAL -------------------------------------------------------------------------------


def wal_readers(db_path: Path) -> int:
    """How many processes hold a read transaction on the database (a WAL read mark locked), from
    /proc/locks; 0 where that is not available."""
    try:
        st = Path(f"{db_path}-shm").stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return 0
    pids = set()
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 8 or parts[3] != "READ":
            continue
        try:
            major, minor, inode = parts[5].split(":")
            start = int(parts[6])
        except ValueError:
            continue
        same_file = int(inode) == st.st_ino and (int(major, 16), int(minor, 16)) == (os.major(st.st_dev),
                                                                                  os.minor(st.st_dev))
        if same_file and 123 <= start <= 127:  # WAL_READ_LOCK(0..4) at the wal-index lock offset 120
            pids.add(parts[4])
    return len(pids)


def checkpoint_wal(gallery: Gallery, work: ErasureWork) -> dict[str, Any]:
    """SQLite: the WAL is checkpointed into the database and truncated, and the result is checked: a
    reader holding an old snapshot keeps the old pages (and the erased rows with them) alive, so the
    erasure is not done until it lets go."""
    wait_ms = max(0, int(work.lock_wait_s * 1000))
    with gallery.engine.connect() as conn:
        conn.exec_driver_sql(f"PRAGMA busy_timeout={wait_ms}")
        try:
            busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        finally:
            conn.exec_driver_sql("PRAGMA busy_timeout=30000")
    if busy:
        n = wal_readers(gallery.db_path)
        who = f"{n} reader{'s' if n != 1 else ''} hold{'' if n != 1 else 's'}" if n else "a reader holds"
        raise StepBlocked(f"{who} the database (a search or server with an open transaction): its WAL cannot be "
                          "checkpointed, and the old pages keep the erased rows until then")
    return {"wal": "checkpointed"}
