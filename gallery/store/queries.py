"""Read-side questions about a gallery, answered from SQLite (and, for vectors, the shards it lists).

`GalleryQueries` is mixed into `Gallery`: every reader of the gallery (indexer, search, benchmarks)
asks these methods instead of writing SQL or opening files itself.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Integer, case, func, select, text, update

from gallery.errors import DamagedData
from gallery.store.schema import (
    Face,
    Identity,
    IdentityTemplate,
    Image,
    Meta,
    PendingErasureId,
    Shard,
    read_only_uri,
)
from gallery.store.shards import (
    check_embeddings,
    file_sha256,
    iter_shard_batches,
    iter_shard_geometry,
    read_shard_embeddings,
    shard_num_rows,
)
from gallery.store.templates import template_rows

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SQLITE_MAX_PARAMS = 900  # stay under SQLite's bound-parameter limit in IN (...) lists


@dataclass(frozen=True)
class ShardRow:
    """A committed shard as SQLite records it."""

    shard_id: int
    filename: str
    n_faces: int
    min_face_id: int
    max_face_id: int
    bytes: int = 0
    sha256: str | None = None  # None: written before checksums were recorded (schema < 3)


@dataclass(frozen=True)
class FaceRecord:
    """What search shows about a gallery face: who (if labeled), which photo, where in it."""

    face_id: int
    identity: str | None
    photo: str
    box: list[float]
    image_id: int
    identity_id: int | None = None
    quality_issue: str | None = None  # below the quality gate: why (gallery.faces.quality)
    clip: str | None = None  # a face found in a video: its track's span, "00:12–00:31" (photo is the video)
    t_ms: int | None = None  # a face found in a video: the time of its frame


def clip_text(start_ms: int | None, end_ms: int | None) -> str | None:
    """A video track's span as answers show it: `00:12–00:31` (`1:02:03` past an hour)."""
    if start_ms is None or end_ms is None:
        return None

    def fmt(ms: int) -> str:
        h, rest = divmod(int(ms) // 1000, 3600)
        m, s = divmod(rest, 60)
        return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"

    return f"{fmt(start_ms)}–{fmt(end_ms)}"


@dataclass(frozen=True)
class LabeledCounts:
    faces: int  # live faces with an identity label
    identities: int  # identities with at least one live face
    mated_identities: int  # identities with two or more live faces (a mate for leave-one-out)


@dataclass
class FaceSet:
    """Live faces in id order: their vector ids and identity names (None when unlabeled)."""

    face_ids: np.ndarray  # (n,) int64
    identities: list[str | None]

    def __len__(self) -> int:
        return int(self.face_ids.size)


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), SQLITE_MAX_PARAMS):
        yield ids[start : start + SQLITE_MAX_PARAMS]


class ChangeWatcher:
    """Tells a long-lived reader whether another connection committed to the gallery since it last
    looked (`PRAGMA data_version`: a few microseconds per check)."""

    def __init__(self, db_path: Path, read_only: bool = False) -> None:
        if read_only:
            self._conn = sqlite3.connect(read_only_uri(db_path), uri=True, check_same_thread=False)
        else:
            self._conn = sqlite3.connect(str(db_path), check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        self._version: int | None = None

    def poll(self) -> bool:
        """True on the first call and whenever the database changed since the previous call."""
        with self._lock:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            changed, self._version = version != self._version, version
            return changed

    def close(self) -> None:
        self._conn.close()


# Deleted faces, and the faces of erasures not finished yet (their rows are gone, their vectors may
# still be in the index or the re-rank file): neither may ever be answered.
HIDDEN_IDS_SQL = ("SELECT face_id FROM faces WHERE deleted = 1{bound} UNION "
                  "SELECT item_id FROM pending_erasure_ids WHERE kind = 'face'{bound_pending}")


class DeletedIds(ChangeWatcher):
    """The sorted ids deleted in SQLite (or taken by a pending erasure), re-read only when another
    connection committed a change, so an open searcher sees deletions at its next query at no cost."""

    def __init__(self, db_path: Path, max_face_id: int | None = None, read_only: bool = False) -> None:
        super().__init__(db_path, read_only)
        self.max_face_id = max_face_id
        self._ids = np.empty(0, dtype=np.int64)

    def get(self) -> np.ndarray:
        if self.poll():
            bounded = self.max_face_id is not None
            sql = HIDDEN_IDS_SQL.format(bound=" AND face_id <= ?" if bounded else "",
                                        bound_pending=" AND item_id <= ?" if bounded else "")
            args: tuple = (self.max_face_id, self.max_face_id) if bounded else ()
            with self._lock:
                rows = self._conn.execute(sql + " ORDER BY 1", args).fetchall()
            self._ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return self._ids


class GalleryQueries:
    """Read queries; the host class provides `session()` and `shards_dir`."""

    shards_dir: Path
    db_path: Path
    _verified: set
    read_only: bool

    def session(self) -> AbstractContextManager[Session]:  # pragma: no cover - provided by Gallery
        raise NotImplementedError

    # --- shards --------------------------------------------------------------------------------

    def shard_rows(self, after_shard_id: int = 0, session: Session | None = None) -> list[ShardRow]:
        """Committed shards in id order (files without a row are crash leftovers, never read)."""
        with nullcontext(session) if session is not None else self.session() as s:
            rows = s.execute(
                select(Shard.shard_id, Shard.filename, Shard.n_faces, Shard.min_face_id, Shard.max_face_id,
                       Shard.bytes, Shard.sha256)
                .where(Shard.shard_id > after_shard_id)
                .order_by(Shard.shard_id)
            ).all()
        return [ShardRow(*r) for r in rows]

    def shard_problem(self, row: ShardRow, checksum: bool = True) -> str | None:
        """What is wrong with a committed shard's file (missing, size, checksum, row count), or None."""
        path = self.shards_dir / row.filename
        try:
            size = path.stat().st_size
        except OSError as exc:
            return f"missing ({exc.strerror})"
        if row.bytes and size != row.bytes:
            return f"size {size:,} bytes, {row.bytes:,} recorded"
        if checksum and row.sha256 and file_sha256(path) != row.sha256:
            return "checksum mismatch: its bytes changed after it was written"
        try:
            rows = shard_num_rows(path)
        except Exception as exc:  # noqa: BLE001 - any Parquet parse error means a damaged file
            return f"not a readable Parquet file ({type(exc).__name__}: {str(exc)[:200]})"
        if rows != row.n_faces:
            return f"{rows} rows, {row.n_faces} recorded"
        return None

    def quick_problems(self) -> list[str]:
        """The open-time checks, cheap at any size (one stat per shard: ~10 us each): every committed
        shard is present with its recorded size. Checksums and ids are `gallery check`'s job."""
        problems = []
        for row in self.shard_rows():
            try:
                size = (self.shards_dir / row.filename).stat().st_size
            except OSError:
                problems.append(f"shard {row.filename} is missing")
                continue
            if row.bytes and size != row.bytes:
                problems.append(f"shard {row.filename} is {size:,} bytes, {row.bytes:,} recorded")
        return problems

    def verify_shard(self, row: ShardRow) -> None:
        """Raise DamagedData naming the shard and the next command when its file is not what SQLite
        recorded. A verified (file, size, mtime) is not hashed again by this Gallery object."""
        path = self.shards_dir / row.filename
        try:
            st = path.stat()
            key = (row.filename, st.st_size, st.st_mtime_ns, row.sha256)
        except OSError:
            key = None
        if key is not None and key in self._verified:
            return
        problem = self.shard_problem(row)
        if problem is not None:
            raise DamagedData(
                f"Shard {path} is damaged ({problem}); its {row.n_faces} faces are not used. "
                f"Run: gallery repair --gallery {path.parent.parent} (its photos are then read again by the "
                "next ingest)"
            )
        self._verified.add(key)

    def shard_paths(self, rows: list[ShardRow] | None = None) -> list[Path]:
        return [self.shards_dir / r.filename for r in (rows if rows is not None else self.shard_rows())]

    def iter_embeddings(
        self, rows: list[ShardRow] | None = None, batch_size: int = 65536
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (face ids, embeddings) over committed shards, one bounded batch at a time; every shard
        is verified first and every batch checked (finite, unit length): damage raises DamagedData."""
        for row in rows if rows is not None else self.shard_rows():
            try:
                self.verify_shard(row)
            except DamagedData:
                # rewritten since `rows` was read (an erasure took faces out of it): read it as it is now
                fresh = {r.shard_id: r for r in self.shard_rows(after_shard_id=row.shard_id - 1)}.get(row.shard_id)
                if fresh is None or fresh == row:
                    raise
                row = fresh
                self.verify_shard(row)
            path = self.shards_dir / row.filename
            for ids, x in iter_shard_batches([path], batch_size):
                check_embeddings(x, f"shard {path}")
                yield ids, x

    def iter_face_geometry(self, rows: list[ShardRow] | None = None
                           ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Stream (face ids, boxes, landmarks (n, 5, 2), detection scores) over committed shards (verified)."""
        for row in rows if rows is not None else self.shard_rows():
            self.verify_shard(row)
            yield from iter_shard_geometry(self.shards_dir / row.filename)

    # --- faces ---------------------------------------------------------------------------------

    def face_quality_rows(self, face_ids: Iterable[int] | None = None, unmeasured_only: bool = False,
                          live_only: bool = True) -> dict[int, dict]:
        """face id -> {image_id, path, width, height, q_size, q_inside, q_sharpness, q_pose, det_score,
        quality_issue} for live faces (all, the given ones, or those never measured; `live_only=False`:
        deleted ones too)."""
        out: dict[int, dict] = {}
        cols = (Face.face_id, Face.image_id, Image.path, Image.width, Image.height, Face.q_size, Face.q_inside,
                Face.q_sharpness, Face.q_pose, Face.det_score, Face.quality_issue)
        keys = [c.key for c in cols[1:]]
        with self.session() as s:
            base = select(*cols).join(Image, Image.image_id == Face.image_id)
            if live_only:
                base = base.where(Face.deleted.is_(False))
            if unmeasured_only:
                base = base.where(Face.q_size.is_(None))
            if face_ids is None:
                queries = [base]
            else:
                queries = [base.where(Face.face_id.in_(part)) for part in _chunks(sorted({int(i) for i in face_ids}))]
            for q in queries:
                for row in s.execute(q):
                    out[int(row[0])] = dict(zip(keys, row[1:]))
        return out

    def unmeasured_face_count(self) -> int:
        """Live faces without quality measures (a gallery from before they existed)."""
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(Face)
                                .where(Face.deleted.is_(False), Face.q_size.is_(None))) or 0)

    def set_face_quality(self, rows: dict[int, dict]) -> int:
        """Write quality columns (q_size, q_inside, q_sharpness, q_pose, quality_issue) of faces, one
        transaction: templates of identities whose faces changed verdict are recomputed in it."""
        if not rows:
            return 0
        with self.session() as s, s.begin():
            s.execute(update(Face), [{"face_id": int(f), **values} for f, values in rows.items()])
        return len(rows)


    def max_face_id(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.coalesce(func.max(Face.face_id), 0))) or 0)

    def deleted_ids(self, max_face_id: int | None = None) -> np.ndarray:
        """Sorted int64 ids of faces deleted in SQLite or taken by a pending erasure (optionally only
        ids <= max_face_id): the ids no index build adds and no search answers."""
        bounded = max_face_id is not None
        sql = HIDDEN_IDS_SQL.format(bound=" AND face_id <= :m" if bounded else "",
                                    bound_pending=" AND item_id <= :m" if bounded else "")
        with self.session() as s:
            ids = s.scalars(text(sql + " ORDER BY 1"), {"m": max_face_id} if bounded else {}).all()
        return np.asarray(ids, dtype=np.int64)

    def pending_erasure_face_ids(self, max_face_id: int | None = None) -> np.ndarray:
        """Sorted ids of the faces of erasures not finished yet."""
        with self.session() as s:
            q = select(PendingErasureId.item_id).where(PendingErasureId.kind == "face").distinct()
            if max_face_id is not None:
                q = q.where(PendingErasureId.item_id <= max_face_id)
            ids = s.scalars(q.order_by(PendingErasureId.item_id)).all()
        return np.asarray(ids, dtype=np.int64)

    def all_face_ids(self) -> np.ndarray:
        """Sorted ids of every face row, live or deleted (what the index and shards may hold)."""
        with self.engine.connect() as conn:  # type: ignore[attr-defined]
            cursor = conn.connection.cursor()
            cursor.execute("SELECT face_id FROM faces ORDER BY face_id")
            return np.fromiter((r[0] for r in cursor), np.int64)

    def deleted_face_ids_in_mostly_deleted_shards(self, min_share: float) -> list[int]:
        """Deleted faces of the shards where deleted faces are at least `min_share` of the rows."""
        with self.session() as s:
            shards = [
                shard_id
                for shard_id, total, gone in s.execute(
                    select(Face.shard_id, func.count(), func.sum(Face.deleted.cast(Integer))).group_by(Face.shard_id)
                )
                if total and (gone or 0) >= min_share * total
            ]
            if not shards:
                return []
            return list(s.scalars(select(Face.face_id).where(Face.shard_id.in_(shards), Face.deleted.is_(True))))

    def watch_changes(self) -> ChangeWatcher:
        """A change detector for a long-lived reader (a searcher); close it when done."""
        return ChangeWatcher(self.db_path, self.read_only)

    def watch_deleted(self, max_face_id: int | None = None) -> DeletedIds:
        """A live view of the deleted ids for a long-lived reader (an open index); close it when done."""
        return DeletedIds(self.db_path, max_face_id, self.read_only)

    def live_face_count(self, after_face_id: int | None = None) -> int:
        """Live (not deleted) faces, optionally only those with an id above `after_face_id`."""
        with self.session() as s:
            q = select(func.count()).select_from(Face).where(Face.deleted.is_(False))
            if after_face_id is not None:
                q = q.where(Face.face_id > after_face_id)
            return int(s.scalar(q) or 0)

    def live_faces(self, max_face_id: int | None = None, labeled_only: bool = False, good_only: bool = False
                   ) -> FaceSet:
        """Live faces in id order (up to `max_face_id`), with identity names; `good_only`: not below the
        quality gate (faces never measured count as good)."""
        with self.session() as s:
            q = (
                select(Face.face_id, Identity.name)
                .outerjoin(Identity, Identity.identity_id == Face.identity_id)
                .where(Face.deleted.is_(False))
            )
            if max_face_id is not None:
                q = q.where(Face.face_id <= max_face_id)
            if labeled_only:
                q = q.where(Face.identity_id.is_not(None))
            if good_only:
                q = q.where(Face.quality_issue.is_(None))
            rows = s.execute(q.order_by(Face.face_id)).all()
        return FaceSet(np.fromiter((r[0] for r in rows), np.int64, len(rows)), [r[1] for r in rows])

    def named_faces_by_photo(self) -> dict[str, tuple[int, int, list[tuple[str, list[float]]]]]:
        """Photo path → (width, height as shown, [(name, box x1 y1 x2 y2 in pixels)]) of every photo
        with at least one live named face (what `labels export --xmp` writes)."""
        out: dict[str, tuple[int, int, list[tuple[str, list[float]]]]] = {}
        with self.session() as s:
            rows = s.execute(
                select(Image.path, Image.width, Image.height, Identity.name, Face.x1, Face.y1, Face.x2, Face.y2)
                .join(Image, Image.image_id == Face.image_id)
                .join(Identity, Identity.identity_id == Face.identity_id)
                .where(Face.deleted.is_(False))
                .order_by(Image.path, Face.face_id)
            )
            for path, width, height, name, x1, y1, x2, y2 in rows:
                out.setdefault(path, (int(width or 0), int(height or 0), []))[2].append((name, [x1, y1, x2, y2]))
        return out

    def labeled_faces(self, good_only: bool = False) -> FaceSet:
        """Live faces that carry an identity label (calibration and identification benchmarks);
        `good_only`: only those not below the quality gate."""
        return self.live_faces(labeled_only=True, good_only=good_only)

    def face_identity_ids(self, face_ids: Iterable[int]) -> dict[int, int | None]:
        """face id -> identity id (None: unlabeled) of the given faces."""
        out: dict[int, int | None] = {}
        with self.session() as s:
            for part in _chunks(sorted({int(i) for i in face_ids})):
                out.update((int(f), None if i is None else int(i)) for f, i in
                           s.execute(select(Face.face_id, Face.identity_id).where(Face.face_id.in_(part))))
        return out

    def labeled_counts(self) -> LabeledCounts:
        """How much labeled data the gallery has, counted in SQLite (one aggregate query, whatever the
        gallery's size): live labeled faces, identities, and identities with two or more faces."""
        with self.session() as s:
            per_identity = (
                select(func.count().label("n"))
                .where(Face.deleted.is_(False), Face.identity_id.is_not(None))
                .group_by(Face.identity_id)
                .subquery()
            )
            faces, identities, mated = s.execute(
                select(func.coalesce(func.sum(per_identity.c.n), 0), func.count(),
                       func.coalesce(func.sum(case((per_identity.c.n >= 2, 1), else_=0)), 0))
            ).one()
        return LabeledCounts(int(faces), int(identities), int(mated))

    def face_records(self, face_ids: set[int] | list[int]) -> dict[int, FaceRecord]:
        """face_id → FaceRecord for live faces (deleted ones are left out)."""
        out: dict[int, FaceRecord] = {}
        with self.session() as s:
            for part in _chunks(sorted(i for i in face_ids if 0 <= i < 2**63)):  # larger: no SQLite integer
                rows = s.execute(
                    select(Face.face_id, Identity.name, Image.path, Face.x1, Face.y1, Face.x2, Face.y2, Face.image_id,
                           Face.identity_id, Face.quality_issue, Face.track_start_ms, Face.track_end_ms, Face.t_ms)
                    .join(Image, Image.image_id == Face.image_id)
                    .outerjoin(Identity, Identity.identity_id == Face.identity_id)
                    .where(Face.face_id.in_(part), Face.deleted.is_(False))
                )
                for fid, name, path, x1, y1, x2, y2, image_id, identity_id, issue, start, end, t_ms in rows:
                    box = [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)]
                    out[fid] = FaceRecord(fid, name, path, box, image_id, identity_id, issue, clip_text(start, end),
                                          t_ms)
        return out

    def photos_by_content(self, sha256s: list[str]) -> dict[str, tuple[int | None, str, str | None]]:
        """Content hash -> (live main face id or None, image status, failure reason) for the photos
        the gallery holds (identical files are one photo)."""
        out: dict[str, tuple[int | None, str, str | None]] = {}
        with self.session() as s:
            for part in _chunks(sorted(set(sha256s))):  # type: ignore[arg-type]
                mains = dict(
                    (sha, fid) for sha, fid in s.execute(
                        select(Image.sha256, Face.face_id).join(Face, Face.image_id == Image.image_id)
                        .where(Image.sha256.in_(part), Face.is_main.is_(True), Face.deleted.is_(False))
                    )
                )
                for sha, status, reason in s.execute(
                    select(Image.sha256, Image.status, Image.reason).where(Image.sha256.in_(part))
                ):
                    out[sha] = (mains.get(sha), status, reason)
        return out

    def read_embeddings(self, face_ids: np.ndarray | list[int], session: Session | None = None) -> np.ndarray:
        """(n, D) float32 embeddings of the given faces, in the given order, reading only their shards.
        `session`: look the faces up in that (open) transaction instead of a new one."""
        ids = [int(i) for i in face_ids]
        by_shard: dict[int, list[int]] = defaultdict(list)
        with nullcontext(session) if session is not None else self.session() as s:
            for part in _chunks(sorted(set(ids))):
                for fid, shard_id in s.execute(select(Face.face_id, Face.shard_id).where(Face.face_id.in_(part))):
                    by_shard[shard_id].append(int(fid))
            rows = {r.shard_id: r for r in self.shard_rows(session=s)}
        found: dict[int, np.ndarray] = {}
        for shard_id, wanted in by_shard.items():
            self.verify_shard(rows[shard_id])
            path = self.shards_dir / rows[shard_id].filename
            shard_ids, vectors = read_shard_embeddings(path, wanted)
            check_embeddings(vectors, f"shard {path}")
            found.update(zip(shard_ids.tolist(), vectors))
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"no embedding stored for face ids {missing[:10]}")
        if not ids:
            return np.zeros((0, 0), np.float32)
        return np.stack([found[i] for i in ids]).astype(np.float32, copy=False)

    # --- identities ----------------------------------------------------------------------------

    def identity_rows(self) -> list[tuple[int, str, int]]:
        """(identity id, name, live face count) for every identity, most faces first."""
        with self.session() as s:
            rows = s.execute(
                select(Identity.identity_id, Identity.name, func.count(Face.face_id))
                .outerjoin(Face, (Face.identity_id == Identity.identity_id) & Face.deleted.is_(False))
                .group_by(Identity.identity_id)
                .order_by(func.count(Face.face_id).desc(), Identity.name)
            ).all()
        return [(int(i), name, int(n)) for i, name, n in rows]

    def templates_version(self) -> tuple[int, int]:
        """(change counter, number) of the identity templates: the counter moves with every change."""
        with self.session() as s:
            seq = s.scalar(select(Meta.value).where(Meta.key == "templates_seq"))
            count = s.scalar(select(func.count()).select_from(IdentityTemplate))
        return int(seq or 0), int(count or 0)

    def all_templates(self) -> tuple[np.ndarray, np.ndarray]:
        """(identity ids (K,), templates (K, D) float32 unit vectors) of every identity with a template."""
        with self.session() as s:
            rows = s.execute(select(IdentityTemplate.identity_id, IdentityTemplate.total)
                             .order_by(IdentityTemplate.identity_id)).all()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        totals = np.stack([np.frombuffer(r[1], np.float64) for r in rows])
        norms = np.maximum(np.linalg.norm(totals, axis=1, keepdims=True), 1e-12)
        return ids, (totals / norms).astype(np.float32)

    def identity_ids_by_name(self, names: Iterable[str]) -> dict[str, int]:
        with self.session() as s:
            out: dict[str, int] = {}
            for part in _chunks(sorted(set(names))):  # type: ignore[arg-type]
                out.update((n, int(i)) for n, i in s.execute(select(Identity.name, Identity.identity_id)
                                                             .where(Identity.name.in_(part))))
        return out

    def identity_names(self, identity_ids: Iterable[int]) -> dict[int, str]:
        with self.session() as s:
            out: dict[int, str] = {}
            for part in _chunks(sorted({int(i) for i in identity_ids})):
                out.update((int(i), n) for i, n in s.execute(select(Identity.identity_id, Identity.name)
                                                             .where(Identity.identity_id.in_(part))))
        return out

    def identity_templates(self, identity_ids: Iterable[int]) -> dict[int, tuple[int, np.ndarray]]:
        """identity id -> (faces enrolled, float64 sum of their embeddings) for those with a template
        (gallery.store.templates: the template is the sum renormalised)."""
        with self.session() as s:
            return template_rows(s, identity_ids)

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
