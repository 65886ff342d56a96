"""SQLite schema: the source of truth for identities, images, faces, shards, runs and index builds.

Parquet shards hold what never changes (embeddings, boxes); this database holds what can change
(labels, renames, deletions). A face's primary key here is its vector id everywhere.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from gallery.errors import SchemaVersionError

SCHEMA_VERSION = 6
QUALITY_COLUMNS = ["ALTER TABLE faces ADD COLUMN q_size FLOAT", "ALTER TABLE faces ADD COLUMN q_inside FLOAT",
                   "ALTER TABLE faces ADD COLUMN q_sharpness FLOAT", "ALTER TABLE faces ADD COLUMN q_pose FLOAT",
                   "ALTER TABLE faces ADD COLUMN quality_issue VARCHAR"]
# version -> SQL that brings a gallery of that version to the next one (run in one transaction);
# tables that are new in a version need no statement: create_all adds them after the migration
MIGRATIONS: dict[int, list[str]] = {
    1: ["ALTER TABLE faces ADD COLUMN ignored BOOLEAN NOT NULL DEFAULT 0"],
    2: ["ALTER TABLE shards ADD COLUMN sha256 VARCHAR(64)"],  # NULL: written before checksums (unverified)
    3: [],  # clusters, face_clusters, cluster_rejections, api_keys
    # face quality (NULL: not measured yet; see gallery.store.quality); new tables: identity templates,
    # pending_erasures, pending_erasure_ids, kept_out
    4: QUALITY_COLUMNS,
    # new table: pending_syncs; listing people by (identity_id, deleted); faces found in videos: the
    # frame's time and the track (NULL for faces of photos). The quality columns again: a version-5
    # gallery written before they joined version 5 (pending erasures only) has none of them; one that
    # has them keeps them (an ADD COLUMN of a column that exists is skipped, see _migrate).
    5: [*QUALITY_COLUMNS,
        "CREATE INDEX IF NOT EXISTS ix_faces_identity_live ON faces (identity_id, deleted)",
        "ALTER TABLE faces ADD COLUMN t_ms INTEGER", "ALTER TABLE faces ADD COLUMN track INTEGER",
        "ALTER TABLE faces ADD COLUMN track_start_ms INTEGER", "ALTER TABLE faces ADD COLUMN track_end_ms INTEGER",
        "ALTER TABLE faces ADD COLUMN track_template BOOLEAN NOT NULL DEFAULT 0"],
}


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value settings of the gallery (model stamp, threshold, schema version), values as JSON."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    """One ingest invocation, kept for audit and for the summary of `gallery info`."""

    __tablename__ = "runs"
    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    source: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String, default="running")  # running | done | interrupted
    photos: Mapped[int] = mapped_column(Integer, default=0)
    faces: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    args: Mapped[str] = mapped_column(Text, default="{}")


class Identity(Base):
    __tablename__ = "identities"
    identity_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True, index=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Image(Base):
    """One distinct photo content (sha256). Identical files are one image."""

    __tablename__ = "images"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    path: Mapped[str] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String, index=True)  # done | failed
    reason: Mapped[str | None] = mapped_column(String, nullable=True, index=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    n_faces: Mapped[int] = mapped_column(Integer, default=0)
    identity_id: Mapped[int | None] = mapped_column(
        ForeignKey("identities.identity_id"), nullable=True, index=True
    )
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.run_id"), nullable=True)


class SourceFile(Base):
    """Every file path seen by a scan, so that a resumed run skips known files without reading them."""

    __tablename__ = "files"
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.image_id"), nullable=True)
    status: Mapped[str] = mapped_column(String)  # ok | duplicate | failed
    reason: Mapped[str | None] = mapped_column(String, nullable=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.run_id"), nullable=True)


class Shard(Base):
    """An immutable Parquet file of embeddings; a row exists only once the file is complete on disk."""

    __tablename__ = "shards"
    shard_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(String, unique=True)
    n_faces: Mapped[int] = mapped_column(Integer)
    min_face_id: Mapped[int] = mapped_column(Integer)
    max_face_id: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.run_id"), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # of the file, checked on read


class Face(Base):
    """A detected face. `face_id` is the vector id in Parquet and FAISS too."""

    __tablename__ = "faces"
    face_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.image_id"), index=True)
    shard_id: Mapped[int] = mapped_column(ForeignKey("shards.shard_id"), index=True)
    identity_id: Mapped[int | None] = mapped_column(
        ForeignKey("identities.identity_id"), nullable=True, index=True
    )
    is_main: Mapped[bool] = mapped_column(Boolean, default=False)
    det_score: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    deleted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # "not a face" / not a person of interest: deleted, and remembered so that nothing brings it back
    ignored: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Quality measures (gallery.faces.quality); NULL: not measured (a gallery from before they existed).
    q_size: Mapped[float | None] = mapped_column(Float, nullable=True)  # shorter box side, photo pixels
    q_inside: Mapped[float | None] = mapped_column(Float, nullable=True)  # share of the face chip inside the photo
    q_sharpness: Mapped[float | None] = mapped_column(Float, nullable=True)  # variance of the chip's Laplacian
    q_pose: Mapped[float | None] = mapped_column(Float, nullable=True)  # nose off the eye-mouth axis / eye distance
    # Below the quality gate: why (e.g. "blurred: sharpness 12 < 40"); NULL: passes (or not measured).
    # Such a face stays searchable as a face but never enrols into its identity's template.
    quality_issue: Mapped[str | None] = mapped_column(String, nullable=True)
    # A face found in a video (NULL for photos): the time of its frame (ms), its track (numbered per video)
    # and the track's span; the track's template (mean embedding) is one more face with track_template set.
    t_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    track: Mapped[int | None] = mapped_column(Integer, nullable=True)
    track_start_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    track_end_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    track_template: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")

    # Listing people counts each identity's live faces: with (identity_id, deleted) both matched by
    # one index SQLite's plan no longer depends on which single-column index happened to be created
    # first (with ix_faces_deleted it scanned every live face per identity: minutes at 300k faces).
    __table_args__ = (Index("ix_faces_identity_live", "identity_id", "deleted"),)


class PendingSync(Base):
    """The diff of a `gallery sync` in progress (JSON: the photos it started from, the files it
    retired with their photos), recorded in the transaction of its first change and deleted when it
    ends, so that the same command after an interruption ends where an uninterrupted one would."""

    __tablename__ = "pending_syncs"
    source: Mapped[str] = mapped_column(Text, primary_key=True)
    started_at: Mapped[float] = mapped_column(Float)
    plan: Mapped[str] = mapped_column(Text)


class IdentityTemplate(Base):
    """An identity's template: the sum of its live, labeled, good-quality faces' unit embeddings (float64
    bytes) and how many; the template is the sum renormalised. Kept by gallery.store.templates in the
    transaction of every change to a face's label, deletion or quality."""

    __tablename__ = "identity_templates"
    identity_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    faces: Mapped[int] = mapped_column(Integer)
    total: Mapped[bytes] = mapped_column(LargeBinary)


class TemplateDirty(Base):
    """Identities whose template a transaction must recompute before it commits (filled by triggers)."""

    __tablename__ = "template_dirty"
    identity_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class ErasureLog(Base):
    """Append-only record that an erasure happened: when, how much, which command. Never what."""

    __tablename__ = "erasure_log"
    entry_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    erased_at: Mapped[float] = mapped_column(Float)
    command: Mapped[str] = mapped_column(String)  # e.g. "identities erase"
    faces: Mapped[int] = mapped_column(Integer)
    photos: Mapped[int] = mapped_column(Integer)
    identities: Mapped[int] = mapped_column(Integer)
    shards_rewritten: Mapped[int] = mapped_column(Integer)


class PendingErasure(Base):
    """An erasure recorded but not yet carried to every place that can hold its faces (shards, index,
    re-rank file, staged batches, enrolled photos, the server's records, the WAL). Its rows were
    deleted in the transaction that recorded it; what is kept is ids only, never names or vectors."""

    __tablename__ = "pending_erasures"
    erasure_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[float] = mapped_column(Float)
    command: Mapped[str] = mapped_column(String)
    log_entry_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    done: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of the places already reached
    problem: Mapped[str | None] = mapped_column(Text, nullable=True)  # why the last attempt stopped


class PendingErasureId(Base):
    """The ids a pending erasure took with it: kind face | image | identity."""

    __tablename__ = "pending_erasure_ids"
    erasure_id: Mapped[int] = mapped_column(ForeignKey("pending_erasures.erasure_id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String, primary_key=True)
    item_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, index=True)


class KeptOut(Base):
    """Photo content that ingest and sync must not read in again (erased photos still in the archive):
    a keyed fingerprint of the content only, never the photo, its path or whose it was (see
    gallery.store.keep_out)."""

    __tablename__ = "kept_out"
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)


class Cluster(Base):
    """A candidate person found by `gallery cluster`: faces that are one person, to review and name."""

    __tablename__ = "clusters"
    cluster_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    representative_face_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # No name column: a cluster's name is the identity its faces carry (naming labels them), so
    # renames, merges and relabels of faces need no second bookkeeping and a re-clustering keeps names.
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the cluster it was split from


class FaceCluster(Base):
    """Which cluster a face is in. A row with cluster_id NULL: the face was clustered and is alone;
    a face without a row is new since the last clustering."""

    __tablename__ = "face_clusters"
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.face_id"), primary_key=True, autoincrement=False)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.cluster_id"), nullable=True, index=True)


class ClusterRejection(Base):
    """A face a person took out of a cluster: no later clustering puts it back into that cluster."""

    __tablename__ = "cluster_rejections"
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.face_id"), primary_key=True, autoincrement=False)
    cluster_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class ApiKey(Base):
    """A key for `gallery serve`: only its SHA-256 is stored (keys are random 256-bit tokens)."""

    __tablename__ = "api_keys"
    key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    prefix: Mapped[str] = mapped_column(String)  # the key's first characters, to tell keys apart in lists
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    scopes: Mapped[str] = mapped_column(String)  # space-separated: search enrol admin
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class IndexBuild(Base):
    """A FAISS index build or update over the shards (the JSON manifest is kept beside the index file)."""

    __tablename__ = "index_builds"
    build_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    kind: Mapped[str] = mapped_column(String)  # build | update | remove
    factory: Mapped[str] = mapped_column(String)
    ntotal: Mapped[int] = mapped_column(Integer)
    max_face_id: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    manifest: Mapped[str] = mapped_column(Text)


# Any change to who a face is, whether it is live, or whether it passes the quality gate marks the
# identities concerned; the same transaction recomputes their templates before it commits
# (gallery.store.templates). Inserts are not marked: the writer adds new faces' embeddings itself.
TEMPLATE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS faces_mark_templates_update
       AFTER UPDATE OF identity_id, deleted, quality_issue ON faces
       WHEN old.identity_id IS NOT new.identity_id OR old.deleted IS NOT new.deleted
            OR old.quality_issue IS NOT new.quality_issue
       BEGIN
         INSERT OR IGNORE INTO template_dirty (identity_id) SELECT old.identity_id WHERE old.identity_id IS NOT NULL;
         INSERT OR IGNORE INTO template_dirty (identity_id) SELECT new.identity_id WHERE new.identity_id IS NOT NULL;
       END""",
    """CREATE TRIGGER IF NOT EXISTS faces_mark_templates_delete AFTER DELETE ON faces
       WHEN old.identity_id IS NOT NULL
       BEGIN
         INSERT OR IGNORE INTO template_dirty (identity_id) VALUES (old.identity_id);
       END""",
    """CREATE TRIGGER IF NOT EXISTS identities_drop_template AFTER DELETE ON identities
       BEGIN
         DELETE FROM identity_templates WHERE identity_id = old.identity_id;
         DELETE FROM template_dirty WHERE identity_id = old.identity_id;
       END""",
    # a counter that moves with every change to a template: a searcher holding the templates in memory
    # reloads them only when it moved (search.templates)
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('templates_seq', '0')",
    *(f"""CREATE TRIGGER IF NOT EXISTS identity_templates_seq_{event.lower()} AFTER {event} ON identity_templates
       BEGIN
         UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'templates_seq';
       END""" for event in ("INSERT", "UPDATE", "DELETE")),
]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets searches read while an ingest writes; busy_timeout waits instead of failing on a lock."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except MemoryError:  # SQLITE_NOMEM on opening: a garbled page claims a record larger than memory
        raise sqlite3.DatabaseError("database disk image is malformed (SQLite ran out of memory reading its "
                                    "first pages)") from None
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Deleted content is overwritten, never left in free pages: erasure must not leave bytes behind.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _read_only_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA query_only=ON")


def read_only_uri(db_path: Path) -> str:
    """SQLite URI that opens a gallery database without writing anything beside it (no -wal or -shm
    file): for a gallery on a read-only mount, such as a restored backup. `immutable`: nothing else
    can change a file on a read-only mount, so SQLite takes no locks."""
    return f"file:{quote(str(Path(db_path).resolve()))}?mode=ro&immutable=1"


def make_engine(db_path: Path, read_only: bool = False) -> Engine:
    if read_only:
        engine = create_engine("sqlite://", future=True, creator=lambda: sqlite3.connect(
            read_only_uri(db_path), uri=True, check_same_thread=False))
        event.listen(engine, "connect", _read_only_pragmas)
        return engine
    engine = create_engine(f"sqlite:///{db_path}", future=True)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


_ADD_COLUMN = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", re.IGNORECASE)


def _migrate(session: Session, statement: str) -> None:
    """Run one migration statement; an ADD COLUMN of a column the table already has is skipped (SQLite
    has no ADD COLUMN IF NOT EXISTS), so that galleries that reached one version number by different
    routes all migrate forward."""
    added = _ADD_COLUMN.match(statement.strip())
    if added is not None:
        table, column = added.groups()
        columns = {row[1] for row in session.execute(text(f"PRAGMA table_info({table})"))}
        if column in columns:
            return
    session.execute(text(statement))


def init_db(engine: Engine, where: Path, read_only: bool = False) -> None:
    """Create missing tables, migrate an older gallery forward; refuse one from a newer version. A
    read-only gallery is only checked: it must be of this version already."""
    if read_only:
        with Session(engine) as session:
            row = session.get(Meta, "schema_version")
            version = json.loads(row.value) if row is not None else None
        if version != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"Gallery '{where}' is read-only and has schema version {version}; this version of face-gallery "
                f"reads version {SCHEMA_VERSION}. Copy it to a writable folder once (it is migrated when opened)."
            )
        return
    with Session(engine) as session, session.begin():
        has_meta = session.execute(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
        ).first()
        row = session.get(Meta, "schema_version") if has_meta else None
        version = json.loads(row.value) if row is not None else None
        while isinstance(version, int) and version in MIGRATIONS and version < SCHEMA_VERSION:
            for statement in MIGRATIONS[version]:
                _migrate(session, statement)
            version += 1
            row.value = json.dumps(version)  # type: ignore[union-attr]
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        for statement in TEMPLATE_TRIGGERS:
            session.execute(text(statement))
        row = session.get(Meta, "schema_version")
        if row is None:
            session.add(Meta(key="schema_version", value=json.dumps(SCHEMA_VERSION)))
        elif json.loads(row.value) != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"Gallery '{where}' has schema version {json.loads(row.value)}; this version of face-gallery "
                f"reads version {SCHEMA_VERSION}. Use the face-gallery version that wrote it, or re-ingest "
                "the photos into a new gallery folder."
            )


def session_factory(engine: Engine, info: dict | None = None) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, info=info)


def get_meta(session: Session, key: str, default: Any = None) -> Any:
    row = session.get(Meta, key)
    return default if row is None else json.loads(row.value)


def set_meta(session: Session, key: str, value: Any) -> None:
    row = session.get(Meta, key)
    if row is None:
        session.add(Meta(key=key, value=json.dumps(value)))
    else:
        row.value = json.dumps(value)


def max_face_id(session: Session) -> int:
    """Highest face (vector) id ever committed: ids are never reused, not even after an erasure or a
    repair removed the highest rows (see high_water)."""
    return high_water(session, "face")


_ID_COLUMNS = {"face": Face.face_id, "image": Image.image_id, "shard": Shard.shard_id, "cluster": Cluster.cluster_id}


def high_water(session: Session, kind: str) -> int:
    """The highest id of `kind` (face, image, shard) ever used: the table's maximum or the recorded
    mark, whichever is higher. An index covers "ids up to N" and "shards up to S", so an id given out
    again after its row was erased would be invisible to it."""
    recorded = int((get_meta(session, "high_water") or {}).get(kind, 0))
    current = int(session.scalar(select(func.coalesce(func.max(_ID_COLUMNS[kind]), 0))) or 0)
    return max(recorded, current)


def keep_high_water(session: Session) -> None:
    """Before rows are deleted (erasure, repair): record the current maxima, so they are never reused."""
    raise_high_water(session, **{kind: high_water(session, kind) for kind in _ID_COLUMNS})


def raise_high_water(session: Session, **marks: int) -> None:
    """Record that ids up to these marks were used (called in the transaction that commits them)."""
    record = dict(get_meta(session, "high_water") or {})
    for kind, value in marks.items():
        record[kind] = max(int(record.get(kind, 0)), int(value))
    set_meta(session, "high_water", record)


def get_or_create_identity(session: Session, name: str, cache: dict[str, int] | None = None) -> int:
    if cache is not None and name in cache:
        return cache[name]
    identity_id = session.scalar(select(Identity.identity_id).where(Identity.name == name))
    if identity_id is None:
        ident = Identity(name=name)
        session.add(ident)
        session.flush()
        identity_id = ident.identity_id
    if cache is not None:
        cache[name] = identity_id
    return identity_id
