"""Query plans that do not depend on luck: listing people must not scan every live face per person,
whatever order SQLite's indexes were created in (it did with ix_faces_deleted first: minutes at 300k
faces). Asserted on EXPLAIN QUERY PLAN, never on time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import event

from gallery.store import Gallery, append_embedded_faces
from gallery.store.schema import SCHEMA_VERSION
from tests.helpers.galleries import stamp, unit_vectors

FACE_INDEXES = {
    "ix_faces_deleted": "CREATE INDEX ix_faces_deleted ON faces (deleted)",
    "ix_faces_identity_id": "CREATE INDEX ix_faces_identity_id ON faces (identity_id)",
    "ix_faces_image_id": "CREATE INDEX ix_faces_image_id ON faces (image_id)",
    "ix_faces_shard_id": "CREATE INDEX ix_faces_shard_id ON faces (shard_id)",
}


def plans_of(g: Gallery, call) -> list[str]:
    """EXPLAIN QUERY PLAN of every SELECT `call` runs, with its parameters."""
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(g.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(g.engine, "before_cursor_execute", record)
    con = sqlite3.connect(g.db_path)
    try:
        return [" | ".join(row[3] for row in con.execute("EXPLAIN QUERY PLAN " + sql, params or ()))
                for sql, params in seen]
    finally:
        con.close()


@pytest.mark.parametrize("order", [sorted(FACE_INDEXES), sorted(FACE_INDEXES, reverse=True)])
def test_listing_people_uses_the_identity_index_whatever_the_creation_order(tmp_path: Path, order) -> None:
    with Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(4), unit_vectors(200, 4, seed=0), identities=[f"p{i % 20}" for i in range(200)])
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    with con:
        for name in FACE_INDEXES:
            con.execute(f"DROP INDEX {name}")
        for name in order:
            con.execute(FACE_INDEXES[name])
    con.close()
    with Gallery.open(tmp_path / "g") as g:
        plans = plans_of(g, g.identity_rows)
        assert g.identity_rows()[0][2] == 10
    counting = [p for p in plans if "faces" in p]
    assert counting and all("ix_faces_identity_live" in p for p in counting), plans


def test_a_version_5_gallery_gains_the_listing_index(tmp_path: Path) -> None:
    with Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(4), unit_vectors(3, 4, seed=0), identities=["a", "b", "a"])
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    with con:
        con.execute("DROP INDEX ix_faces_identity_live")
        for column in ("t_ms", "track", "track_start_ms", "track_end_ms", "track_template"):  # also new in 6
            con.execute(f"ALTER TABLE faces DROP COLUMN {column}")
        con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.close()
    with Gallery.open(tmp_path / "g") as g:
        assert dict(g.identities()) == {"a": 2, "b": 1}
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "ix_faces_identity_live" in names
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()
