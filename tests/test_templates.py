"""Identity templates follow every change to who a face is, whether it is live, and whether it passes the
quality gate, in the same transaction: ingest, relabel, rename, merge, delete, ignore, labels import,
cluster naming, quality updates, a migrated gallery, and a failed edit that changes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from gallery.store import FileRecord, Gallery, GalleryWriter, append_embedded_faces
from gallery.store.clusters import NewCluster
from gallery.store.templates import normalised, refresh_templates
from tests.helpers.galleries import stamp, unit_vectors

DIM = 8


def expected_templates(g: Gallery) -> dict[str, tuple[int, np.ndarray]]:
    """name -> (faces, template) recomputed from scratch: live, labeled, good-quality faces."""
    con = sqlite3.connect(g.db_path)
    rows = con.execute("SELECT f.face_id, i.name FROM faces f JOIN identities i ON i.identity_id = f.identity_id "
                       "WHERE f.deleted = 0 AND f.quality_issue IS NULL ORDER BY f.face_id").fetchall()
    con.close()
    out: dict[str, list[int]] = {}
    for face_id, name in rows:
        out.setdefault(name, []).append(face_id)
    return {name: (len(ids), normalised(g.read_embeddings(ids).astype(np.float64).sum(axis=0)))
            for name, ids in out.items()}


def stored_templates(g: Gallery) -> dict[str, tuple[int, np.ndarray]]:
    con = sqlite3.connect(g.db_path)
    rows = con.execute("SELECT i.name, t.faces, t.total FROM identity_templates t "
                       "JOIN identities i ON i.identity_id = t.identity_id").fetchall()
    dangling = con.execute("SELECT count(*) FROM identity_templates WHERE identity_id NOT IN "
                           "(SELECT identity_id FROM identities)").fetchone()[0]
    marked = con.execute("SELECT count(*) FROM template_dirty").fetchone()[0]
    con.close()
    assert dangling == 0 and marked == 0
    return {name: (n, normalised(np.frombuffer(total, np.float64))) for name, n, total in rows}


def assert_templates_follow(g: Gallery) -> None:
    expected, stored = expected_templates(g), stored_templates(g)
    assert sorted(stored) == sorted(expected)
    for name, (n, template) in expected.items():
        assert stored[name][0] == n, name
        np.testing.assert_allclose(stored[name][1], template, atol=1e-6, err_msg=name)


@pytest.fixture
def g(tmp_path: Path):
    x = unit_vectors(30, DIM, seed=4, clusters=3)
    names = [("ann", "bob", "cy")[i % 3] for i in range(30)]
    with Gallery.open_or_create(tmp_path / "g") as gallery:
        append_embedded_faces(gallery, stamp(DIM), x[:20], identities=names[:20], photo_prefix="/p/a")
        append_embedded_faces(gallery, stamp(DIM), x[20:], identities=names[20:], photo_prefix="/p/b")
        assert_templates_follow(gallery)
        yield gallery


def test_edits_keep_templates(g: Gallery) -> None:
    g.relabel_faces([1, 2], "bob")
    assert_templates_follow(g)
    g.relabel_faces([3], None)
    assert_templates_follow(g)
    ann_id = g.face_identity_ids([4])[4]
    g.rename_identity("ann", "Ann Lee")  # the template belongs to the identity, not the name
    assert_templates_follow(g)
    assert g.face_identity_ids([4])[4] == ann_id
    g.merge_identities(["Ann Lee", "cy"], into="Cyan")
    assert_templates_follow(g)
    assert "Ann Lee" not in stored_templates(g) and stored_templates(g)["Cyan"][0] == 18
    g.delete_faces([5, 6])
    assert_templates_follow(g)
    g.delete_faces([7], ignore=True)
    assert_templates_follow(g)
    g.apply_labels([(1, "8", "dee"), (2, "9", None), (3, "/p/b/21.jpg", "dee")])
    assert_templates_follow(g)
    g.delete_identity("dee")
    assert_templates_follow(g)
    assert "dee" not in stored_templates(g)
    g.delete_photos(["/p/b/22.jpg"])
    assert_templates_follow(g)


def test_a_failed_edit_changes_no_template(g: Gallery) -> None:
    g.delete_faces([1])
    before = stored_templates(g)
    with pytest.raises(Exception, match="deleted or ignored"):
        g.relabel_faces([1, 4], "bob")  # face 1 is deleted: the whole relabel is refused
    after = stored_templates(g)
    assert {n: c for n, (c, _) in after.items()} == {n: c for n, (c, _) in before.items()}
    assert_templates_follow(g)


def test_quality_verdicts_enrol_and_leave(g: Gallery) -> None:
    flagged = {1: {"q_size": 10.0, "q_inside": 1.0, "q_sharpness": 50.0, "q_pose": 0.0,
                   "quality_issue": "too small: 10 px (< 24)"}}
    g.set_face_quality(flagged)
    assert_templates_follow(g)
    assert stored_templates(g)["ann"][0] == 9
    g.set_face_quality({1: {**flagged[1], "quality_issue": None}})
    assert stored_templates(g)["ann"][0] == 10
    assert_templates_follow(g)


def test_cluster_naming_and_joining_keep_templates(g: Gallery) -> None:
    g.relabel_faces([10, 11, 12], None)
    [cluster] = g.save_clustering([NewCluster([10, 11, 12], 10)], {}, [], settings={"method": "average"})
    g.name_cluster(cluster, "Zed")
    assert_templates_follow(g)
    assert stored_templates(g)["Zed"][0] == 3
    g.relabel_faces([13], None)
    identity_id = g.face_identity_ids([10])[10]
    g.save_clustering([], {cluster: [13]}, [], labels={identity_id: [13]})
    assert_templates_follow(g)
    assert stored_templates(g)["Zed"][0] == 4


def test_ingest_commit_adds_good_faces_only(tmp_path: Path) -> None:
    x = unit_vectors(3, DIM, seed=9)
    with Gallery.open_or_create(tmp_path / "g") as gallery, gallery.writer_lock():
        writer = GalleryWriter(gallery, stamp(DIM), "/src", {})
        good = {"q_size": 80.0, "q_inside": 1.0, "q_sharpness": 60.0, "q_pose": 0.1, "quality_issue": None}
        for i, issue in enumerate([None, "blurred: sharpness 3 (< 25)", None]):
            image_id = writer.alloc_image_id()
            writer.add_photo(FileRecord(f"/src/p{i}.jpg", 1, 1, f"{i:064d}"), image_id, 100, 100, "eve", 0,
                             np.array([[0, 0, 50, 50]], np.float32), np.array([0.99], np.float32),
                             np.zeros((1, 5, 2), np.float32), x[i : i + 1], [{**good, "quality_issue": issue}])
        writer.commit({"photos": 3, "faces": 3, "failed": 0})
        writer.finish("done", {"photos": 3, "faces": 3, "failed": 0})
        assert stored_templates(gallery)["eve"][0] == 2
        np.testing.assert_allclose(stored_templates(gallery)["eve"][1], normalised(x[[0, 2]].sum(0).astype(float)),
                                   atol=1e-6)
        assert_templates_follow(gallery)


def test_an_old_gallery_gets_its_templates_and_refresh_is_idempotent(g: Gallery, tmp_path: Path) -> None:
    expected = expected_templates(g)
    con = sqlite3.connect(g.db_path)
    with con:
        con.execute("DELETE FROM identity_templates")
        con.execute("DELETE FROM meta WHERE key = 'templates'")
    con.close()
    with Gallery.open(g.root) as again:  # opening builds them once
        assert_templates_follow(again)
        assert sorted(stored_templates(again)) == sorted(expected)
        ids = list(again.face_identity_ids(range(1, 31)).values())
        with again.session() as s, s.begin():
            refresh_templates(s, [i for i in ids if i is not None])
            refresh_templates(s, [i for i in ids if i is not None])
        assert_templates_follow(again)


def test_check_deep_finds_a_wrong_template_and_repair_mends_it(g: Gallery) -> None:
    from gallery.store.integrity import check_store, repair_store

    assert [f for f in check_store(g, deep=True) if f.area == "templates"][0].ok
    con = sqlite3.connect(g.db_path)
    with con:  # a template that no longer matches its faces (as a bug or an edit outside the product would leave)
        con.execute("UPDATE identity_templates SET faces = faces + 1 WHERE identity_id = "
                    "(SELECT identity_id FROM identities WHERE name = 'bob')")
    con.close()
    finding = [f for f in check_store(g, deep=True) if f.area == "templates"][0]
    assert not finding.ok and "1 identity templates disagree" in finding.detail and "repair" in finding.fix
    assert repair_store(g)["templates_rebuilt"] == 3
    assert_templates_follow(g)


def test_template_search_is_exact_up_to_its_limit_and_empty_past_it(tmp_path: Path) -> None:
    from search.templates import TemplateSearch

    x = unit_vectors(6, 4, seed=3)
    with Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(4), x, identities=["a", "a", "b", "b", "c", "c"])
        within, past = TemplateSearch(g, limit=3), TemplateSearch(g, limit=2)
        try:
            scores, ids = within.search(x[:1], 5)  # three identities: three templates, then padding
            assert within.enabled and (ids[0, :3] >= 0).all() and np.all(np.diff(scores[0, :3]) <= 0)
            assert (ids[0, 3:] == -1).all() and np.isneginf(scores[0, 3:]).all()
            scores, ids = past.search(x[:1], 5)  # more identities than the limit: nothing is scanned
            assert not past.enabled and (ids == -1).all() and np.isneginf(scores).all()
        finally:
            within.close()
            past.close()
