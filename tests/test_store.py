"""The store owns the data: queries, the commit protocol, shards, atomic writes, schema version."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from gallery.errors import GalleryBusy, GalleryNotFound, ModelMismatch, SchemaVersionError
from gallery.fsutil import atomic_write
from gallery.store import FileRecord, Gallery, GalleryWriter, append_embedded_faces
from gallery.store.schema import SCHEMA_VERSION
from gallery.store.shards import read_shard_embeddings
from tests.helpers.galleries import stamp, unit_vectors


def test_append_and_read_back_through_queries(tmp_path: Path) -> None:
    x = unit_vectors(30, 8, seed=1)
    with Gallery.open_or_create(tmp_path / "g") as g:
        first = append_embedded_faces(g, stamp(8), x[:20], identities=["ann"] * 10 + ["bob"] * 5 + [None] * 5)
        second = append_embedded_faces(g, stamp(8), x[20:], identities=["bob"] * 10)
        assert first.tolist() == list(range(1, 21)) and second.tolist() == list(range(21, 31))
        assert [r.n_faces for r in g.shard_rows()] == [20, 10]
        assert g.identities() == [("bob", 15), ("ann", 10)]
        # embeddings come back in the asked order, from the shards that hold them
        ids = np.array([25, 3, 17])
        np.testing.assert_array_equal(g.read_embeddings(ids), x[ids - 1])
        with pytest.raises(KeyError):
            g.read_embeddings([999])
        labeled = g.labeled_faces()
        assert len(labeled) == 25 and None not in labeled.identities
        counts = g.labeled_counts()
        assert (counts.faces, counts.identities, counts.mated_identities) == (25, 2, 2)
        records = g.face_records({1, 16, 30})
        assert records[1].identity == "ann" and records[16].identity is None and records[30].identity == "bob"
        assert records[1].photo.endswith("/1.jpg") and len(records[1].box) == 4
        # deletion hides a face from every query, and a live watcher sees it at once
        watch = g.watch_deleted()
        assert watch.get().size == 0
        assert g.mark_deleted([2, 3, 2]) == 2
        assert watch.get().tolist() == [2, 3] and g.deleted_ids().tolist() == [2, 3]
        watch.close()
        assert 2 not in g.face_records({2, 4}) and g.live_face_count() == 28
        assert g.live_face_count(after_face_id=20) == 10
        assert g.live_faces(max_face_id=5).face_ids.tolist() == [1, 4, 5]
        streamed = np.concatenate([ids for ids, _ in g.iter_embeddings(batch_size=7)])
        assert streamed.tolist() == list(range(1, 31))  # shards hold deleted faces too; readers filter


def test_writer_commit_protocol(tmp_path: Path) -> None:
    with Gallery.open_or_create(tmp_path / "g") as g:
        with g.writer_lock():
            w = GalleryWriter(g, stamp(4), "src", {"a": 1})
            with pytest.raises(GalleryBusy), g.writer_lock():
                pass
            image = w.alloc_image_id()
            f = FileRecord("/p/a.jpg", 10, 5, "ab" * 32)
            boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
            w.add_photo(f, image, 100, 80, "ann", 1, boxes, np.ones(2, np.float32), np.zeros((2, 5, 2), np.float32),
                        unit_vectors(2, 4, seed=0))
            w.record_failure(FileRecord("/p/b.jpg", 3, 5, None), "unreadable", "gone", None)
            assert w.pending_faces == 2 and w.known_files(["/p/a.jpg"]) == {}
            assert w.commit({"photos": 1, "faces": 2, "failed": 1})
            assert not w.commit({"photos": 1, "faces": 2, "failed": 1})  # nothing pending
            assert w.known_files(["/p/a.jpg", "/p/b.jpg"]) == {"/p/a.jpg": (10, 5), "/p/b.jpg": (3, 5)}
            assert w.committed_image_id("ab" * 32) == image
            w.finish("done", {"photos": 1, "faces": 2, "failed": 1})
        info = g.info()
        assert (info.faces, info.labeled_faces, info.failed, info.shards) == (2, 1, 1, 1)
        (shard,) = g.shard_paths()
        ids, vectors = read_shard_embeddings(shard, [2])
        assert ids.tolist() == [2] and vectors.shape == (1, 4)
        assert g.face_records({1, 2})[2].identity == "ann"  # the main face carries the label
        with pytest.raises(ModelMismatch):
            g.stamp_model(stamp(8))


def test_orphan_shards_and_temp_files_are_removed(tmp_path: Path) -> None:
    with Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(4), unit_vectors(3, 4, seed=0))
        (g.shards_dir / "shard-00000042.parquet").write_bytes(b"x")
        (g.shards_dir / ".shard-00000043.parquet.123.tmp").write_bytes(b"x")
        assert sorted(g.remove_orphan_shards()) == [".shard-00000043.parquet.123.tmp", "shard-00000042.parquet"]
        assert len(list(g.shards_dir.iterdir())) == 1


def test_schema_version_and_missing_gallery(tmp_path: Path) -> None:
    with pytest.raises(GalleryNotFound, match="gallery ingest"):
        Gallery.open(tmp_path / "none")
    Gallery.open_or_create(tmp_path / "g").close()
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    with con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (json.dumps(99),))
    con.close()
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        Gallery.open(tmp_path / "g")


def test_threshold_is_stored(tmp_path: Path) -> None:
    with Gallery.open_or_create(tmp_path / "g") as g:
        assert g.calibrated_threshold() is None
        g.set_threshold(0.5, "test", {"n": 1})
        record = g.calibrated_threshold()
        assert record["value"] == 0.5 and record["source"] == "test" and record["report"] == {"n": 1}


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    assert atomic_write(target, b"old") == 3

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_version_1_gallery_is_migrated_forward(tmp_path: Path) -> None:
    with Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(4), unit_vectors(3, 4, seed=0))
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    with con:
        con.execute("ALTER TABLE faces DROP COLUMN ignored")
        con.execute("ALTER TABLE shards DROP COLUMN sha256")
        con.execute("DROP TABLE erasure_log")
        for table in ("face_clusters", "cluster_rejections", "clusters", "api_keys", "kept_out",
                      "pending_erasure_ids", "pending_erasures"):  # new in 4, 5
            con.execute(f"DROP TABLE {table}")
        for trigger in ("faces_mark_templates_update", "faces_mark_templates_delete", "identities_drop_template",
                        "identity_templates_seq_insert", "identity_templates_seq_update",
                        "identity_templates_seq_delete"):
            con.execute(f"DROP TRIGGER {trigger}")  # new in version 5, with the columns and tables below
        for column in ("q_size", "q_inside", "q_sharpness", "q_pose", "quality_issue",
                       "t_ms", "track", "track_start_ms", "track_end_ms", "track_template"):  # new in 5, 6
            con.execute(f"ALTER TABLE faces DROP COLUMN {column}")
        con.execute("DROP INDEX ix_faces_identity_live")  # new in version 6, with pending_syncs
        con.execute("DROP TABLE pending_syncs")
        for table in ("identity_templates", "template_dirty"):
            con.execute(f"DROP TABLE {table}")
        con.execute("DELETE FROM meta WHERE key IN ('templates', 'templates_seq')")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with Gallery.open(tmp_path / "g") as g:
        assert g.delete_faces([1], ignore=True) == 1 and g.live_face_count() == 2
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert con.execute("SELECT count(*) FROM face_clusters").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM pending_erasures").fetchone() == (0,)  # new in version 5
    assert con.execute("SELECT count(*) FROM kept_out").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM pending_syncs").fetchone() == (0,)  # new in version 6
    assert con.execute("SELECT count(*) FROM faces WHERE t_ms IS NULL AND NOT track_template").fetchone() == (3,)
    assert con.execute("SELECT sha256 FROM shards").fetchall() == [(None,)]  # unverified, still readable
    con.close()


def test_a_version_5_gallery_without_quality_columns_is_migrated_forward(tmp_path: Path) -> None:
    # version 5 first held the pending-erasure tables only; the quality columns, templates and kept-out
    # photos joined it later, so a gallery of that first version 5 lacks them and must gain them
    with Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(4), unit_vectors(3, 4, seed=0))
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    with con:
        for trigger in ("faces_mark_templates_update", "faces_mark_templates_delete", "identities_drop_template",
                        "identity_templates_seq_insert", "identity_templates_seq_update",
                        "identity_templates_seq_delete"):
            con.execute(f"DROP TRIGGER {trigger}")
        con.execute("DROP INDEX ix_faces_identity_live")
        for column in ("q_size", "q_inside", "q_sharpness", "q_pose", "quality_issue",
                       "t_ms", "track", "track_start_ms", "track_end_ms", "track_template"):
            con.execute(f"ALTER TABLE faces DROP COLUMN {column}")
        for table in ("pending_syncs", "kept_out", "identity_templates", "template_dirty"):
            con.execute(f"DROP TABLE {table}")
        con.execute("DELETE FROM meta WHERE key IN ('templates', 'templates_seq')")
        con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.close()
    with Gallery.open(tmp_path / "g") as g:
        assert g.delete_faces([1], ignore=True) == 1 and g.live_face_count() == 2
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert con.execute("SELECT count(*) FROM faces WHERE q_size IS NULL AND quality_issue IS NULL").fetchone() == (3,)
    assert con.execute("SELECT count(*) FROM faces WHERE t_ms IS NULL AND NOT track_template").fetchone() == (3,)
    assert con.execute("SELECT count(*) FROM kept_out").fetchone() == (0,)
    con.close()
