"""The commit protocol that makes ingestion exactly-once, and a bulk appender for generated galleries.

1. faces accumulate in memory with vector ids allocated above the highest committed id (the writer
   lock guarantees nobody else allocates);
2. `commit()` writes them to a new shard (temp file, fsync, rename: gallery.store.shards);
3. one SQLite transaction then records the shard, its faces, their photos, every failed or duplicate
   file seen since the previous commit, and the run's counts.

A crash before 3 leaves a shard file without a row: the next run deletes it (`remove_orphan_shards`)
and redoes those photos (their files were never recorded, so they are not skipped). A crash after 3
has lost nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gallery.store import schema, templates
from gallery.store.schema import Face, Identity, Image, Run, Shard, SourceFile
from gallery.store.shards import ShardRows, shard_filename, write_shard

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from gallery.store.gallery import Gallery


UNMEASURED = {"q_size": None, "q_inside": None, "q_sharpness": None, "q_pose": None, "quality_issue": None}
# Failures that are not the file's fault: nothing of its content is remembered and the next run reads it
# again (a decoder not installed; a video met by the distributed ingest, which reads photos only).
READ_AGAIN = ("missing_library", "needs_local_ingest")
NOT_VIDEO = {"t_ms": None, "track": None, "track_start_ms": None, "track_end_ms": None, "track_template": False}


@dataclass(frozen=True)
class FileRecord:
    """A source file as read: where, how big, when modified, and its content hash (None if unread)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None


@dataclass
class _Pending:
    """Everything seen since the last commit: written together or not at all."""

    images: list[dict] = field(default_factory=list)
    faces: list[dict] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.images or self.files)


class GalleryWriter:
    """One ingest run's writes. Create it under `Gallery.writer_lock()`; `finish()` closes the run."""

    def __init__(self, gallery: Gallery, model_stamp: dict, source: str, args: dict) -> None:
        gallery.stamp_model(model_stamp)  # refuses a gallery of another model before anything is written
        self.gallery = gallery
        self.model_stamp = model_stamp
        self._identity_cache: dict[str, int] = {}
        self._pending = _Pending()
        with gallery.session() as s, s.begin():
            run = Run(started_at=time.time(), source=source, args=json.dumps(args, default=str))
            s.add(run)
            s.flush()
            self.run_id = int(run.run_id)
            self._next_face_id = schema.high_water(s, "face") + 1
            self._next_image_id = schema.high_water(s, "image") + 1

    # --- what is already there -----------------------------------------------------------------

    def known_files(self, paths: Sequence[str]) -> dict[str, tuple[int, int]]:
        """path → (size, mtime_ns) of the given paths already recorded by an earlier run. Files that
        failed for a reason in READ_AGAIN (a decoder not installed, ...) are left out: read again."""
        out: dict[str, tuple[int, int]] = {}
        with self.gallery.session() as s:
            for start in range(0, len(paths), 900):
                for row in s.execute(
                    select(SourceFile.path, SourceFile.size, SourceFile.mtime_ns).where(
                        SourceFile.path.in_(paths[start : start + 900]),
                        SourceFile.reason.is_(None) | SourceFile.reason.not_in(READ_AGAIN),
                    )
                ):
                    out[row.path] = (row.size, row.mtime_ns)
        return out

    def committed_image_id(self, sha256: str) -> int | None:
        """The image with this content, if an earlier commit recorded one."""
        with self.gallery.session() as s:
            return s.scalar(select(Image.image_id).where(Image.sha256 == sha256))

    def committed_image_ids(self, sha256s: Sequence[str]) -> dict[str, int]:
        """sha256 → image id for the contents an earlier commit recorded; one query per 900 hashes
        (a driver committing staged results looks up a whole staged file at once)."""
        out: dict[str, int] = {}
        unique = sorted(set(sha256s))
        with self.gallery.session() as s:
            for start in range(0, len(unique), 900):
                for sha, image_id in s.execute(
                    select(Image.sha256, Image.image_id).where(Image.sha256.in_(unique[start : start + 900]))
                ):
                    out[sha] = int(image_id)
        return out

    def alloc_image_id(self) -> int:
        image_id = self._next_image_id
        self._next_image_id += 1
        return image_id

    # --- recording ---------------------------------------------------------------------------

    @property
    def pending_faces(self) -> int:
        return len(self._pending.faces)

    @property
    def has_pending(self) -> bool:
        return not self._pending.empty()

    def _file_row(self, file: FileRecord, image_id: int | None, status: str, reason: str | None) -> dict:
        return dict(path=file.path, size=file.size, mtime_ns=file.mtime_ns, sha256=file.sha256,
                    image_id=image_id, status=status, reason=reason, run_id=self.run_id)

    def record_duplicate(self, file: FileRecord, image_id: int) -> None:
        self._pending.files.append(self._file_row(file, image_id, "duplicate", None))

    def record_failure(self, file: FileRecord, reason: str, detail: str | None, image_id: int | None,
                       width: int | None = None, height: int | None = None) -> None:
        """A file that gave no face; with an image id its content is recorded too, so identical
        bytes elsewhere are not retried."""
        if image_id is not None:
            self._pending.images.append(
                dict(image_id=image_id, sha256=file.sha256, path=file.path, width=width or None,
                     height=height or None, status="failed", reason=reason, detail=detail, n_faces=0,
                     identity_id=None, run_id=self.run_id)
            )
        self._pending.files.append(self._file_row(file, image_id, "failed", reason))

    def add_photo(
        self,
        file: FileRecord,
        image_id: int,
        width: int,
        height: int,
        label: str | None,
        main: int,
        boxes: np.ndarray,
        scores: np.ndarray,
        landmarks: np.ndarray,
        embeddings: np.ndarray,
        quality: Sequence[dict] | None = None,
        face_labels: Sequence[str | None] | None = None,
        detail: str | None = None,
        video: Sequence[dict] | None = None,
    ) -> None:
        """A photo and its faces; the label goes to the main face (resolved to an id at commit), or with
        `face_labels` each face has its own (XMP face regions). `quality`: per face, the columns of its
        quality measures and verdict (q_size, q_inside, q_sharpness, q_pose, quality_issue;
        gallery.faces.quality). `detail`: a note kept with the photo (a malformed XMP sidecar). `video`: per
        face of a video, its columns t_ms, track, track_start_ms, track_end_ms, track_template."""
        p = self._pending
        if face_labels is None:
            face_labels = [label if j == main else None for j in range(len(boxes))]
        p.images.append(
            dict(image_id=image_id, sha256=file.sha256, path=file.path, width=width, height=height,
                 status="done", reason=None, detail=detail, n_faces=len(boxes),
                 identity_id=face_labels[main] if 0 <= main < len(face_labels) else label, run_id=self.run_id)
        )
        p.files.append(self._file_row(file, image_id, "ok", None))
        for j in range(len(boxes)):
            x1, y1, x2, y2 = (float(v) for v in boxes[j])
            p.faces.append(
                dict(face_id=self._next_face_id, image_id=image_id, identity_id=face_labels[j],
                     is_main=j == main, det_score=float(scores[j]), x1=x1, y1=y1, x2=x2, y2=y2, deleted=False,
                     **(dict(quality[j]) if quality is not None else UNMEASURED),
                     **(dict(video[j]) if video is not None else NOT_VIDEO))
            )
            self._next_face_id += 1
        p.embeddings.append(np.asarray(embeddings, np.float32))
        p.boxes.append(np.asarray(boxes, np.float32))
        p.landmarks.append(np.asarray(landmarks, np.float32))
        p.scores.append(np.asarray(scores, np.float32))

    # --- committing --------------------------------------------------------------------------

    def commit(self, counts: dict[str, int]) -> bool:
        """Write the pending shard and rows (see the module docstring); True when a shard was written."""
        p = self._pending
        if p.empty():
            return False
        shard_row = None
        if p.faces:
            with self.gallery.session() as s:
                shard_id = schema.high_water(s, "shard") + 1
            filename = shard_filename(shard_id)
            rows = ShardRows(
                face_id=np.asarray([f["face_id"] for f in p.faces], np.int64),
                image_id=np.asarray([f["image_id"] for f in p.faces], np.int64),
                embedding=np.concatenate(p.embeddings),
                box=np.concatenate(p.boxes),
                landmarks=np.concatenate(p.landmarks),
                det_score=np.concatenate(p.scores),
            )
            nbytes, sha256 = write_shard(self.gallery.shards_dir / filename, rows, self.model_stamp)
            shard_row = dict(shard_id=shard_id, filename=filename, n_faces=len(rows), sha256=sha256,
                             min_face_id=int(rows.face_id.min()), max_face_id=int(rows.face_id.max()),
                             bytes=nbytes, run_id=self.run_id, created_at=time.time())
            for face in p.faces:
                face["shard_id"] = shard_id
        with self.gallery.session() as s, s.begin():
            # Labels become identity ids here, so an identity exists only with a committed face.
            labels = [row for row in (*p.images, *p.faces) if isinstance(row["identity_id"], str)]
            self._resolve_identities(s, {row["identity_id"] for row in labels})
            for row in labels:
                row["identity_id"] = self._identity_cache[row["identity_id"]]
            # Core inserts (plain executemany): the ORM's bulk path costs about as much again per row,
            # and a distributed ingest funnels every face of a cluster through this one commit.
            conn = s.connection()
            if shard_row:
                conn.execute(insert(Shard.__table__), [shard_row])
            if p.images:
                conn.execute(insert(Image.__table__), p.images)
            if p.faces:
                conn.execute(insert(Face.__table__), p.faces)
                enrol = [i for i, f in enumerate(p.faces)
                         if f["identity_id"] is not None and f["quality_issue"] is None]
                if enrol:
                    x = np.concatenate(p.embeddings)
                    templates.add_faces(s, np.asarray([p.faces[i]["identity_id"] for i in enrol], np.int64), x[enrol])
            if p.files:
                # A file seen again with a new size/mtime replaces its old record.
                unique = {f["path"]: f for f in p.files}
                paths = list(unique)
                for start in range(0, len(paths), 900):
                    conn.execute(SourceFile.__table__.delete().where(SourceFile.path.in_(paths[start : start + 900])))
                conn.execute(insert(SourceFile.__table__), list(unique.values()))
            s.execute(update(Run).where(Run.run_id == self.run_id).values(**counts))
            schema.raise_high_water(s, face=self._next_face_id - 1, image=self._next_image_id - 1,
                                    shard=shard_row["shard_id"] if shard_row else 0)
        self._pending = _Pending()
        return shard_row is not None

    def _resolve_identities(self, s: Session, names: set[str]) -> None:
        """Identity ids for label names (created when new) into the cache: one query per 900 names and
        one insert for all new ones, instead of a round trip per name."""
        missing = sorted(n for n in names if n not in self._identity_cache)
        if not missing:
            return

        def lookup() -> None:
            for start in range(0, len(missing), 900):
                part = missing[start : start + 900]
                rows = s.execute(select(Identity.name, Identity.identity_id).where(Identity.name.in_(part)))
                self._identity_cache.update({name: int(i) for name, i in rows})

        lookup()
        new = [n for n in missing if n not in self._identity_cache]
        if new:
            now = time.time()
            s.execute(sqlite_insert(Identity.__table__).on_conflict_do_nothing(index_elements=["name"]),
                      [{"name": n, "created_at": now} for n in new])
            lookup()

    def finish(self, status: str, counts: dict[str, int]) -> None:
        """Close the run: done | interrupted, with its final counts."""
        with self.gallery.session() as s, s.begin():
            s.execute(update(Run).where(Run.run_id == self.run_id)
                      .values(status=status, finished_at=time.time(), **counts))


def append_embedded_faces(
    gallery: Gallery,
    model_stamp: dict,
    embeddings: np.ndarray,
    identities: Sequence[str | None] | None = None,
    photo_prefix: str = "generated",
    box: tuple[float, float, float, float] = (0.0, 0.0, 112.0, 112.0),
) -> np.ndarray:
    """Append faces that need no photo (synthetic benchmarks, tests) as one committed shard.

    Each face gets its own image row (path `photo_prefix/<face id>.jpg`); identities are created by
    name. Returns the new faces' vector ids. Uses plain executemany: ORM objects for a million rows
    would dominate the time.
    """
    gallery.stamp_model(model_stamp)
    n = int(embeddings.shape[0])
    with gallery.session() as s, s.begin():
        first = schema.high_water(s, "face") + 1
        first_image = schema.high_water(s, "image") + 1
        shard_id = schema.high_water(s, "shard") + 1
        schema.raise_high_water(s, face=first + n - 1, image=first_image + n - 1, shard=shard_id)
        ident_ids: list[int | None] = [None] * n
        if identities is not None:
            names = sorted({i for i in identities if i is not None})
            if names:  # one statement for all new names (a million-face benchmark has ~100k of them)
                s.execute(sqlite_insert(Identity).on_conflict_do_nothing(index_elements=["name"]),
                          [{"name": name, "created_at": time.time()} for name in names])
            cache = {name: i for name, i in s.execute(select(Identity.name, Identity.identity_id))} if names else {}
            ident_ids = [cache[i] if i is not None else None for i in identities]
    face_ids = np.arange(first, first + n, dtype=np.int64)
    image_ids = np.arange(first_image, first_image + n, dtype=np.int64)
    filename = shard_filename(shard_id)
    rows = ShardRows(
        face_id=face_ids,
        image_id=image_ids,
        embedding=np.asarray(embeddings, np.float32),
        box=np.tile(np.asarray(box, np.float32), (n, 1)),
        landmarks=np.zeros((n, 5, 2), np.float32),
        det_score=np.ones(n, np.float32),
    )
    size, sha256 = write_shard(gallery.shards_dir / filename, rows, model_stamp)
    x1, y1, x2, y2 = box
    raw = gallery.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.executemany(
            "INSERT INTO images (image_id, sha256, path, width, height, status, n_faces, identity_id) "
            "VALUES (?, ?, ?, ?, ?, 'done', 1, ?)",
            (
                (int(i), hashlib.sha256(f"{photo_prefix}/{int(f)}".encode()).hexdigest(),
                 f"{photo_prefix}/{int(f)}.jpg", int(x2), int(y2), ident)
                for i, f, ident in zip(image_ids, face_ids, ident_ids)
            ),
        )
        cur.execute(
            "INSERT INTO shards (shard_id, filename, n_faces, min_face_id, max_face_id, bytes, created_at, sha256) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (shard_id, filename, n, int(face_ids[0]), int(face_ids[-1]), size, time.time(), sha256),
        )
        # no photo, no landmarks: the face counts as whole, frontal and sure (its size is the box's); its
        # sharpness is unknown, which never fails a face
        cur.executemany(
            "INSERT INTO faces (face_id, image_id, shard_id, identity_id, is_main, det_score, x1, y1, x2, y2, "
            "deleted, q_size, q_inside, q_pose) VALUES (?, ?, ?, ?, 1, 1.0, ?, ?, ?, ?, 0, ?, 1.0, 0.0)",
            ((int(f), int(i), shard_id, ident, x1, y1, x2, y2, float(min(x2 - x1, y2 - y1)))
             for f, i, ident in zip(face_ids, image_ids, ident_ids)),
        )
        labeled = [j for j, ident in enumerate(ident_ids) if ident is not None]
        if labeled:  # the new faces join their identities' templates in the same transaction
            added = templates.sums_by_identity(np.asarray([ident_ids[j] for j in labeled], np.int64),
                                               np.asarray(embeddings, np.float32)[labeled])
            marks = ",".join("?" * len(added))
            old = {int(i): (int(n), np.frombuffer(t, np.float64)) for i, n, t in cur.execute(
                f"SELECT identity_id, faces, total FROM identity_templates WHERE identity_id IN ({marks})",
                list(added)).fetchall()} if len(added) <= 900 else _all_template_rows(cur)
            rows = []
            for identity_id, (n, total) in added.items():
                n0, total0 = old.get(identity_id, (0, 0.0))
                rows.append((identity_id, n + n0, np.asarray(total + total0, np.float64).tobytes()))
            cur.executemany("INSERT OR REPLACE INTO identity_templates (identity_id, faces, total) VALUES (?, ?, ?)",
                            rows)
        raw.commit()
    finally:
        raw.close()
    return face_ids


def _all_template_rows(cur: Any) -> dict[int, tuple[int, np.ndarray]]:
    return {int(i): (int(n), np.frombuffer(t, np.float64))
            for i, n, t in cur.execute("SELECT identity_id, faces, total FROM identity_templates").fetchall()}
