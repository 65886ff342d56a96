"""One folder per gallery: `gallery.db` (SQLite), `shards/*.parquet`, `index/`.

`Gallery` opens that folder (checking its schema version), knows its model stamp and stored
threshold, answers the read queries of `GalleryQueries`, and hands out the writer lock: writers
(ingest) hold an exclusive lock file so that two ingests never interleave vector ids; readers never
lock.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from gallery.errors import DamagedData, GalleryBusy, GalleryError, GalleryNotFound, ModelMismatch
from gallery.fsutil import lock_held
from gallery.store import schema, templates
from gallery.store.clusters import GalleryClusters
from gallery.store.edits import GalleryEdits
from gallery.store.keys import GalleryKeys
from gallery.store.queries import GalleryQueries
from gallery.store.schema import Face, Identity, Image, IndexBuild, Shard, SourceFile
from gallery.store.shards import SHARD_PREFIX

log = logging.getLogger(__name__)

DB_NAME = "gallery.db"
SHARDS_DIR = "shards"
INDEX_DIR = "index"
ENROL_DIR = "enrolled"  # photos enrolled over HTTP (the default --enrol-dir)
SERVE_DIR = "serve"  # a running server's job records and uploads in flight, one folder per server
LOCK_NAME = ".ingest.lock"

# A writer that composes other writers (an enrolment saves photos, then ingests them) holds the lock
# with nested=True: the writers it calls in the same thread enter; everyone else is refused, as before.
_HELD: dict[str, list[Any]] = {}  # lock file -> [owner thread, depth, nested writers allowed]
_HELD_GUARD = threading.Lock()


@dataclass
class GalleryInfo:
    path: str
    model: dict | None
    dim: int | None
    photos: int
    faces: int
    deleted_faces: int
    identities: int
    labeled_faces: int
    failed: int
    failures: dict[str, int]
    duplicates: int
    shards: int
    disk_bytes: int
    low_quality_faces: int = 0  # live faces below the quality gate (stored, never enrolled)
    unmeasured_faces: int = 0  # live faces without quality measures (a gallery from before them)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_unfinished_gallery(root: Path) -> bool:
    """Empty, or what a creation killed half-way leaves (empty shards/ and index/, a lock file, an
    empty database): finished by the next open_or_create instead of refused forever."""
    allowed = {SHARDS_DIR, INDEX_DIR, LOCK_NAME, DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal"}
    for entry in root.iterdir():
        if entry.name not in allowed:
            return False
        if entry.is_dir() and any(entry.iterdir()):
            return False
        if entry.name.startswith(DB_NAME) and entry.is_file() and entry.stat().st_size > 0:
            return False
    return True


def _cannot_write(root: Path, db_path: Path) -> bool:
    """True when the gallery's folder or database cannot be written: a read-only mount (statvfs says
    so, whoever asks) or missing write permission."""
    try:
        if os.statvfs(root).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        pass
    return not os.access(root, os.W_OK) or (db_path.exists() and not os.access(db_path, os.W_OK))


def is_gallery(root: Path | str) -> bool:
    """True when the folder holds a gallery database."""
    return (Path(root) / DB_NAME).is_file()


class Gallery(GalleryQueries, GalleryEdits, GalleryKeys, GalleryClusters):
    """A gallery folder. Use `Gallery.open` for an existing one, `Gallery.open_or_create` to ingest."""

    def __init__(self, root: Path, read_only: bool | None = None) -> None:
        """read_only None: a gallery whose folder or database cannot be written (a backup on a read-only
        mount, a folder without write permission) is opened read-only, for searches and listings."""
        self.root = Path(root)
        self.db_path = self.root / DB_NAME
        self.shards_dir = self.root / SHARDS_DIR
        self.index_dir = self.root / INDEX_DIR
        self.serve_dir = self.root / SERVE_DIR
        self.read_only = _cannot_write(self.root, self.db_path) if read_only is None else read_only
        self.engine = schema.make_engine(self.db_path, self.read_only)
        try:
            schema.init_db(self.engine, self.root, self.read_only)
        except BaseException:
            self.engine.dispose()
            raise
        self.sessions = schema.session_factory(self.engine, info={"gallery": self})
        templates.install_commit_hook(self.sessions)
        self._verified: set = set()  # (shard file, size, mtime, sha256) checked by this object
        if self.read_only:
            return  # its templates are as they were written (built before it became read-only)
        try:
            templates.build_all_templates(self)  # once: a gallery from before templates existed
        except DamagedData as exc:  # `gallery check` names the shard; templates are built once it is repaired
            log.warning("identity templates not built: %s", exc)
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def open(cls, root: Path | str, read_only: bool | None = None) -> Gallery:
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise GalleryNotFound(f"'{root}' is a file, not a gallery folder: give the folder holding {DB_NAME}.")
        if not is_gallery(root):
            raise GalleryNotFound(
                f"No gallery at '{root}' (no {DB_NAME}). Create one with: gallery ingest PHOTOS --gallery {root}"
            )
        return cls(root, read_only)

    @classmethod
    def open_or_create(cls, root: Path | str) -> Gallery:
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise GalleryError(f"'{root}' exists and is not a folder.")
        if root.is_dir() and not is_gallery(root) and not _is_unfinished_gallery(root):
            raise GalleryError(
                f"'{root}' is a non-empty folder that is not a gallery; choose an empty or new folder."
            )
        (root / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        (root / INDEX_DIR).mkdir(parents=True, exist_ok=True)
        return cls(root)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    # --- model stamp -------------------------------------------------------------------------

    @property
    def model_stamp(self) -> dict | None:
        with self.session() as s:
            return schema.get_meta(s, "model")

    def stamp_model(self, stamp: dict) -> None:
        """Record the gallery's model on first use; refuse a different one afterwards."""
        with self.session() as s, s.begin():
            current = schema.get_meta(s, "model")
            if current is None:
                schema.set_meta(s, "model", stamp)
            elif current != stamp:
                raise ModelMismatch(
                    f"This gallery was built with model '{current['name']}' "
                    f"(dim {current['dim']}, preprocessing {current['preprocessing']}); "
                    f"'{stamp['name']}' (dim {stamp['dim']}, preprocessing {stamp['preprocessing']}) "
                    f"would mix incompatible embeddings. Use --model {current['name']}, "
                    f"or a new --gallery folder for the other model."
                )

    # --- threshold ---------------------------------------------------------------------------

    def calibrated_threshold(self) -> dict | None:
        """The stored threshold record ({value, source, calibrated_at, report}) or None."""
        with self.session() as s:
            return schema.get_meta(s, "threshold")

    def set_threshold(self, value: float, source: str, report: dict | None = None, extra: dict | None = None) -> None:
        """Store a calibration: the threshold, where it came from, its report, and what else the
        calibration decided (`extra`: the decision rule, the 1:1 threshold)."""
        with self.session() as s, s.begin():
            schema.set_meta(s, "threshold", {"value": float(value), "source": source,
                                             "calibrated_at": time.time(), "report": report or {}, **(extra or {})})

    # --- writing -----------------------------------------------------------------------------

    @contextmanager
    def writer_lock(self, nested: bool = False) -> Iterator[None]:
        """One writer at a time: vector ids are allocated by the writer holding this lock. A writer
        first makes sure the database is sound (`PRAGMA quick_check`): nothing is written into a
        damaged gallery. With nested=True, writers called in this thread while it is held enter too."""
        if self.read_only:
            raise GalleryError(
                f"Gallery '{self.root}' is read-only (a read-only mount or folder): it can be searched, not "
                f"changed. To change it, restore it to a writable folder: gallery restore {self.root} NEW_FOLDER"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_NAME
        key, me = str(path.resolve()), threading.get_ident()
        with _HELD_GUARD:
            held = _HELD.get(key)
            inside = held is not None and held[0] == me and held[2]
            if inside:
                held[1] += 1  # type: ignore[index]
        if inside:
            try:
                yield
            finally:
                with _HELD_GUARD:
                    held[1] -= 1  # type: ignore[index]
            return
        lock = FileLock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise GalleryBusy(
                f"Another ingest is writing to '{self.root}'. Wait for it to finish (searches can run meanwhile)."
            ) from None
        with _HELD_GUARD:
            _HELD[key] = [me, 1, nested]
        try:
            self.check_database()
            yield
        finally:
            with _HELD_GUARD:
                _HELD.pop(key, None)
            lock.release()

    def writer_active(self) -> bool:
        """True while some writer (this process or another) holds the writer lock."""
        with _HELD_GUARD:
            if str((self.root / LOCK_NAME).resolve()) in _HELD:
                return True
        return lock_held(self.root / LOCK_NAME)

    # --- folders the gallery owns besides its data ------------------------------------------------

    def enrol_dirs(self) -> list[Path]:
        """Where photos enrolled over HTTP are kept: GALLERY/enrolled, and any --enrol-dir a server used."""
        with self.session() as s:
            extra = schema.get_meta(s, "enrol_dirs") or []
        return [self.root / ENROL_DIR, *(Path(p) for p in extra if Path(p) != self.root / ENROL_DIR)]

    def remember_enrol_dir(self, folder: Path) -> None:
        """Record an enrolment folder outside the gallery, so that erasure reaches the copies kept there."""
        folder = Path(folder).resolve()
        if folder == (self.root / ENROL_DIR).resolve():
            return
        with self.session() as s, s.begin():
            known = list(schema.get_meta(s, "enrol_dirs") or [])
            if str(folder) not in known:
                schema.set_meta(s, "enrol_dirs", [*known, str(folder)])

    def check_database(self) -> None:
        """Raise DamagedData when SQLite's quick_check finds the database damaged."""
        try:
            with self.engine.connect() as conn:
                result = [r[0] for r in conn.execute(text("PRAGMA quick_check"))]
        except DatabaseError as exc:
            result = [str(exc.orig)]
        if result != ["ok"]:
            raise DamagedData(
                f"The gallery database {self.db_path} is damaged ({'; '.join(result[:3])}). Nothing was written. "
                f"See `gallery check --gallery {self.root}`; re-ingest the archive into a new gallery folder."
            )

    def remove_orphan_shards(self) -> list[str]:
        """Delete shard files (and temp files) that a crashed run wrote but never committed."""
        with self.session() as s:
            committed = set(s.scalars(select(Shard.filename)).all())
        removed = []
        stray = [*self.shards_dir.glob(f"{SHARD_PREFIX}*"), *self.shards_dir.glob(f".{SHARD_PREFIX}*.tmp")]
        for path in sorted(stray):
            if path.name not in committed:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        if removed:
            log.info("removed %d uncommitted shard files from a crashed run: %s", len(removed), removed)
        return removed

    def mark_deleted(self, face_ids: list[int]) -> int:
        """Hide faces from every answer (open searchers see it at their next query); returns how many."""
        with self.session() as s, s.begin():
            result = s.execute(
                update(Face)
                .where(Face.face_id.in_([int(i) for i in face_ids]), Face.deleted.is_(False))
                .values(deleted=True, deleted_at=time.time())
            )
        return int(result.rowcount or 0)

    def record_index_build(self, kind: str, manifest: dict, path: Path) -> None:
        """Keep a row per index build/update/remove (the manifest JSON beside it)."""
        with self.session() as s, s.begin():
            s.add(IndexBuild(created_at=time.time(), kind=kind, factory=manifest["factory"],
                             ntotal=int(manifest["ntotal"]), max_face_id=int(manifest["max_face_id"]),
                             path=str(path), manifest=json.dumps(manifest, sort_keys=True)))

    # --- summaries ---------------------------------------------------------------------------

    def info(self) -> GalleryInfo:
        with self.session() as s:
            stamp = schema.get_meta(s, "model")

            def count(q: Any) -> int:
                return int(s.scalar(q) or 0)

            photos = count(select(func.count()).select_from(Image).where(Image.status == "done"))
            faces = count(select(func.count()).select_from(Face).where(Face.deleted.is_(False)))
            deleted = count(select(func.count()).select_from(Face).where(Face.deleted.is_(True)))
            labeled = count(select(func.count()).select_from(Face)
                            .where(Face.deleted.is_(False), Face.identity_id.is_not(None)))
            identities = count(select(func.count()).select_from(Identity))
            low = count(select(func.count()).select_from(Face)
                        .where(Face.deleted.is_(False), Face.quality_issue.is_not(None)))
            unmeasured = count(select(func.count()).select_from(Face)
                               .where(Face.deleted.is_(False), Face.q_size.is_(None)))
            failure_rows = s.execute(
                select(Image.reason, func.count()).where(Image.status == "failed").group_by(Image.reason)
            ).all()
            file_failures = s.execute(
                select(SourceFile.reason, func.count())
                .where(SourceFile.status == "failed", SourceFile.image_id.is_(None))
                .group_by(SourceFile.reason)
            ).all()
            duplicates = count(select(func.count()).select_from(SourceFile).where(SourceFile.status == "duplicate"))
            shards = count(select(func.count()).select_from(Shard))
        failures: dict[str, int] = {}
        for reason, n in [*failure_rows, *file_failures]:
            failures[reason or "unknown"] = failures.get(reason or "unknown", 0) + n
        disk = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return GalleryInfo(
            path=str(self.root), model=stamp, dim=stamp["dim"] if stamp else None, photos=photos, faces=faces,
            deleted_faces=deleted, identities=identities, labeled_faces=labeled, failed=sum(failures.values()),
            failures=failures, duplicates=duplicates, shards=shards, disk_bytes=disk, low_quality_faces=low,
            unmeasured_faces=unmeasured,
        )
