"""Erasure that really erases: after `identities erase`, no file under the gallery holds the person's
name, photo paths or embedding bytes; search never returns them; the rest still answers as before."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gallery.app.erasure import erase
from gallery.app.maintenance import compact
from gallery.cli import app
from gallery.faces.models import get_model_spec, registered
from gallery.store import Gallery, append_embedded_faces
from gallery.store.erase import ErasureSelection
from gallery.store.templates import normalised
from indexer import build_index, index_info
from search import Searcher
from search.decision import BEST_FACE
from tests.conftest import copy_lfw_people, lfw_photo, requires_lfw
from tests.helpers.galleries import stamp, unit_vectors
from tests.test_templates import assert_templates_follow

DIM = 32
runner = CliRunner()


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    """Every (file, needle) pair where a file under root contains the needle's bytes."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {n[:40]!r}" for n in needles if n in data]
    return hits


@pytest.mark.parametrize("factory", [None, "IVF16,PQ8"])
def test_erase_identity_leaves_no_byte_behind(tmp_path: Path, factory: str | None) -> None:
    spec = replace(get_model_spec("facenet-untrained"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test", default_threshold=0.5)
    x = unit_vectors(2000, DIM, seed=3, clusters=40)
    names = [f"person-{i % 40:02d}" for i in range(2000)]
    victim = "Zelda Victimova"
    names[::97] = [victim] * len(names[::97])
    with registered(spec):
        with Gallery.open_or_create(tmp_path / "g") as g:
            append_embedded_faces(g, stamp(DIM), x[:1000], identities=names[:1000], photo_prefix="/archive/a")
            append_embedded_faces(g, stamp(DIM), x[1000:], identities=names[1000:], photo_prefix="/archive/b")
            build_index(g, factory=factory, rerank=True if factory else None)
            victim_ids = [f.face_id for f in g.identity_faces(victim)]
            victim_paths = [f.photo for f in g.identity_faces(victim)]
        probe = x[np.asarray(victim_ids) - 1][:1]
        other = x[5:6]
        with Searcher(tmp_path / "g", k=3, threshold=0.5, rule=BEST_FACE) as searcher:
            assert searcher.search_embeddings(probe)[0].identity == victim
            before_other = searcher.search_embeddings(other)[0]

        needles = [victim.encode(), *(p.encode() for p in victim_paths)]
        needles += [x[i - 1].astype(np.float32).tobytes() for i in victim_ids]
        # the victim's template: the stored float64 sum and the renormalised float32 template
        with Gallery.open(tmp_path / "g") as g:
            [(count, total)] = g.identity_templates(
                {i for i in g.face_identity_ids(victim_ids).values() if i is not None}).values()
        assert count == len(victim_ids)
        template_needles = [total.tobytes(), normalised(total).tobytes()]
        before = files_holding(tmp_path / "g", needles)
        assert any("gallery.db" in h for h in before) and any("index/" in h for h in before)  # the scan can see
        assert files_holding(tmp_path / "g", template_needles[:1])  # the template's bytes are there to find
        needles += template_needles

        report = erase(tmp_path / "g", ErasureSelection(identity=victim), "identities erase")
        assert report.faces == len(victim_ids) and report.identities == 1 and report.shards_rewritten == 2
        assert report.index == "patched"

        assert files_holding(tmp_path / "g", needles) == []
        with Gallery.open(tmp_path / "g") as g:
            assert_templates_follow(g)  # everyone else's template is intact
        with Searcher(tmp_path / "g", k=3, threshold=0.5, rule=BEST_FACE) as searcher:
            found = searcher.search_embeddings(probe, faces_mode=True, k=50)[0]
            assert not {c.face_id for c in found.candidates} & set(victim_ids)
            assert all(c.identity != victim for c in searcher.search_embeddings(probe)[0].candidates)
            after_other = searcher.search_embeddings(other)[0]
            assert after_other.identity == before_other.identity
            assert after_other.score == pytest.approx(before_other.score, abs=1e-5)
        assert index_info(tmp_path / "g")["ntotal"] == 2000 - len(victim_ids)
        con = sqlite3.connect(tmp_path / "g" / "gallery.db")
        log = con.execute("SELECT command, faces, identities FROM erasure_log").fetchall()
        con.close()
        assert log == [("identities erase", len(victim_ids), 1)]


def test_compact_reclaims_deleted_faces(tmp_path: Path) -> None:
    with Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(8), unit_vectors(100, 8, seed=0))
        append_embedded_faces(g, stamp(8), unit_vectors(100, 8, seed=1))
        build_index(g)
        g.delete_faces(range(1, 81))  # 80% of the first shard, 40% of the gallery
    result = compact(tmp_path / "g")
    assert result == {"shards_rewritten": 1, "faces_erased": 80, "index": "patched", "status": "done"}
    with Gallery.open(tmp_path / "g") as g:
        assert [r.n_faces for r in g.shard_rows()] == [20, 100] and g.live_face_count() == 120
    assert index_info(tmp_path / "g")["ntotal"] == 120


@requires_lfw
def test_erase_a_real_person_through_the_cli(tmp_path: Path) -> None:
    src = tmp_path / "archive"
    copy_lfw_people(src, {"Aaron_Peirsol": 3, "Abdullah_Gul": 3, "Alejandro_Toledo": 3})
    g = str(tmp_path / "g")
    for args in (["ingest", str(src), "--workers", "0"], ["index", "build"]):
        result = runner.invoke(app, [*args, "--gallery", g])
        assert result.exit_code == 0, result.output
    assert files_holding(tmp_path / "g", [b"Abdullah_Gul"])  # before: the name is in the database
    result = runner.invoke(app, ["identities", "erase", "Abdullah_Gul", "--gallery", g, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["photos"] == 3
    assert files_holding(tmp_path / "g", [b"Abdullah_Gul", b"Abdullah"]) == []
    search = runner.invoke(app, ["search", str(lfw_photo("Abdullah_Gul", 4)), "--gallery", g, "--json", "-k", "5"])
    assert search.exit_code == 0
    assert all(c["identity"] != "Abdullah_Gul" for r in map(json.loads, search.stdout.splitlines())
               for c in r["candidates"])
    names = {i["identity"] for i in json.loads(runner.invoke(app, ["identities", "-g", g, "--json"]).stdout)}
    assert names == {"Aaron_Peirsol", "Alejandro_Toledo"}


def test_erase_faces_and_photos_and_remove_photos_through_the_cli(tmp_path: Path) -> None:
    spec = replace(get_model_spec("facenet-untrained"), name=stamp(8)["name"], dim=8, input_size=0,
                   preprocessing="test")
    g = str(tmp_path / "g")
    with registered(spec):
        with Gallery.open_or_create(tmp_path / "g") as gal:
            append_embedded_faces(gal, stamp(8), unit_vectors(10, 8, seed=0), identities=["a"] * 5 + ["b"] * 5,
                                  photo_prefix="/archive")
            build_index(gal)
        erased = runner.invoke(app, ["faces", "erase", "1", "2", "--gallery", g, "--json"])
        assert erased.exit_code == 0, erased.output
        assert json.loads(erased.stdout)["faces"] == 2 and json.loads(erased.stdout)["photos"] == 2
        photo = runner.invoke(app, ["photos", "erase", "/archive/3.jpg", "--gallery", g, "--json"])
        assert photo.exit_code == 0 and json.loads(photo.stdout)["faces"] == 1
        removed = runner.invoke(app, ["photos", "remove", "/archive/4.jpg", "--gallery", g, "--json"])
        assert removed.exit_code == 0 and json.loads(removed.stdout) == {"faces_deleted": 1}
        missing = runner.invoke(app, ["photos", "erase", "/archive/nope.jpg", "--gallery", g])
        assert missing.exit_code == 2 and "No photo at" in missing.output
        with Gallery.open(tmp_path / "g") as gal:
            assert gal.live_face_count() == 6 and gal.info().deleted_faces == 1 and gal.max_face_id() == 10
            assert files_holding(tmp_path / "g", [b"/archive/1.jpg", b"/archive/3.jpg"]) == []
        assert index_info(tmp_path / "g")["ntotal"] == 7
