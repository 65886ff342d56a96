"""One folder per gallery: `gallery.db` (SQLite), `shards/*.parquet`, `index/`.

`Gallery` opens that folder, knows its model stamp and answers summary questions. Writers (ingest)
take an exclusive lock file so that two ingests never interleave vector ids; readers never lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gallery.store import db
from gallery.store.db import Face, Identity, Image, Shard, SourceFile

DB_NAME = "gallery.db"
SHARDS_DIR = "shards"
INDEX_DIR = "index"
LOCK_NAME = ".ingest.lock"


class GalleryError(RuntimeError):
    """A problem with a gallery folder that the user can act on (the message says how)."""


class GalleryNotFound(GalleryError):
    pass


class ModelMismatch(GalleryError):
    pass


class GalleryBusy(GalleryError):
    pass


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
    threshold: float | None
    threshold_source: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Gallery:
    """A gallery folder. Use `Gallery.open` for an existing one, `Gallery.open_or_create` to ingest."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.db_path = self.root / DB_NAME
        self.shards_dir = self.root / SHARDS_DIR
        self.index_dir = self.root / INDEX_DIR
        self.engine = db.make_engine(self.db_path)
        db.init_db(self.engine)
        self.sessions = db.session_factory(self.engine)

    @classmethod
    def open(cls, root: Path | str) -> Gallery:
        root = Path(root)
        if not (root / DB_NAME).is_file():
            raise GalleryNotFound(
                f"No gallery at '{root}' (no {DB_NAME}). Create one with: gallery ingest PHOTOS --gallery {root}"
            )
        return cls(root)

    @classmethod
    def open_or_create(cls, root: Path | str) -> Gallery:
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise GalleryError(f"'{root}' exists and is not a folder.")
        if root.is_dir() and any(root.iterdir()) and not (root / DB_NAME).is_file():
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
            return db.get_meta(s, "model")

    def stamp_model(self, stamp: dict) -> None:
        """Record the gallery's model on first use; refuse a different one afterwards."""
        with self.session() as s, s.begin():
            current = db.get_meta(s, "model")
            if current is None:
                db.set_meta(s, "model", stamp)
            elif current != stamp:
                raise ModelMismatch(
                    f"This gallery was built with model '{current['name']}' "
                    f"(dim {current['dim']}, preprocessing {current['preprocessing']}); "
                    f"'{stamp['name']}' (dim {stamp['dim']}, preprocessing {stamp['preprocessing']}) "
                    f"would mix incompatible embeddings. Use --model {current['name']}, "
                    f"or a new --gallery folder for the other model."
                )

    def check_model(self, stamp: dict) -> None:
        current = self.model_stamp
        if current is not None and current != stamp:
            raise ModelMismatch(
                f"Model mismatch: gallery uses '{current['name']}', got '{stamp['name']}'. "
                f"Use --model {current['name']}."
            )

    # --- shards ------------------------------------------------------------------------------

    def shard_paths(self, after_shard_id: int = 0) -> list[Path]:
        """Committed shards in id order (files without a row are crash leftovers, never read)."""
        with self.session() as s:
            names = s.scalars(
                select(Shard.filename).where(Shard.shard_id > after_shard_id).order_by(Shard.shard_id)
            ).all()
        return [self.shards_dir / name for name in names]

    def remove_orphan_shards(self) -> list[str]:
        """Delete shard files (and temp files) that a crashed run wrote but never committed."""
        with self.session() as s:
            committed = set(s.scalars(select(Shard.filename)).all())
        removed = []
        for path in sorted(self.shards_dir.glob("shard-*")):
            if path.name not in committed:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """One writer at a time: vector ids are allocated by the writer holding this lock."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise GalleryBusy(
                    f"Another ingest is writing to '{self.root}'. Wait for it to finish (searches can run meanwhile)."
                ) from None
            yield
        finally:
            os.close(fd)

    # --- summaries ---------------------------------------------------------------------------

    def threshold(self) -> tuple[float | None, str | None]:
        """The match threshold in force: calibrated if `gallery calibrate` ran, else the model's default."""
        with self.session() as s:
            calibrated = db.get_meta(s, "threshold")
        if calibrated is not None:
            return float(calibrated["value"]), f"calibrated ({calibrated.get('source', 'gallery calibrate')})"
        stamp = self.model_stamp
        if stamp is None:
            return None, None
        from gallery.models import get_model_spec

        try:
            spec = get_model_spec(stamp["name"])
        except ValueError:
            return None, None
        return spec.default_threshold, f"model default ({spec.threshold_source})"

    def info(self) -> GalleryInfo:
        with self.session() as s:
            stamp = db.get_meta(s, "model")
            photos = s.scalar(select(func.count()).select_from(Image).where(Image.status == "done")) or 0
            faces = s.scalar(select(func.count()).select_from(Face).where(Face.deleted.is_(False))) or 0
            deleted = s.scalar(select(func.count()).select_from(Face).where(Face.deleted.is_(True))) or 0
            labeled = (
                s.scalar(
                    select(func.count())
                    .select_from(Face)
                    .where(Face.deleted.is_(False), Face.identity_id.is_not(None))
                )
                or 0
            )
            identities = s.scalar(select(func.count()).select_from(Identity)) or 0
            failure_rows = s.execute(
                select(Image.reason, func.count()).where(Image.status == "failed").group_by(Image.reason)
            ).all()
            file_failures = s.execute(
                select(SourceFile.reason, func.count())
                .where(SourceFile.status == "failed", SourceFile.image_id.is_(None))
                .group_by(SourceFile.reason)
            ).all()
            duplicates = (
                s.scalar(select(func.count()).select_from(SourceFile).where(SourceFile.status == "duplicate"))
                or 0
            )
            shards = s.scalar(select(func.count()).select_from(Shard)) or 0
        failures: dict[str, int] = {}
        for reason, count in [*failure_rows, *file_failures]:
            failures[reason or "unknown"] = failures.get(reason or "unknown", 0) + count
        disk = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        threshold, source = self.threshold()
        return GalleryInfo(
            path=str(self.root),
            model=stamp,
            dim=stamp["dim"] if stamp else None,
            photos=photos,
            faces=faces,
            deleted_faces=deleted,
            identities=identities,
            labeled_faces=labeled,
            failed=sum(failures.values()),
            failures=failures,
            duplicates=duplicates,
            shards=shards,
            disk_bytes=disk,
            threshold=threshold,
            threshold_source=source,
        )

    def identities(self) -> list[tuple[str, int]]:
        """(name, live face count) for every identity, most faces first."""
        with self.session() as s:
            rows = s.execute(
                select(Identity.name, func.count(Face.face_id))
                .outerjoin(Face, (Face.identity_id == Identity.identity_id) & Face.deleted.is_(False))
                .group_by(Identity.identity_id)
                .order_by(func.count(Face.face_id).desc(), Identity.name)
            ).all()
        return [(name, int(n)) for name, n in rows]
