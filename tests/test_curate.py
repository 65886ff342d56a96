"""Tending a gallery: rename, merge, delete, relabel, ignore, crop, labels import/export, and an
already-open searcher seeing every change at its next query."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gallery.cli import app
from gallery.faces.models import get_model_spec, registered
from gallery.store import Gallery, append_embedded_faces
from indexer import build_index
from search import Searcher
from search.decision import BEST_FACE
from tests.helpers.galleries import stamp, unit_vectors

DIM = 16
runner = CliRunner()


@pytest.fixture
def gallery(tmp_path: Path):
    """40 faces of 4 people (ann, bob, cy, dee), photos written to disk so that crops work."""
    spec = replace(get_model_spec("facenet-untrained"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test", default_threshold=0.5)
    centres = unit_vectors(4, DIM, seed=1)
    rng = np.random.default_rng(0)
    x = np.repeat(centres, 10, axis=0) + 0.05 * rng.standard_normal((40, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    names = [n for n in ("ann", "bob", "cy", "dee") for _ in range(10)]
    photos = tmp_path / "photos"
    photos.mkdir()
    with registered(spec), Gallery.open_or_create(tmp_path / "g") as g:
        ids = append_embedded_faces(g, stamp(DIM), x.astype(np.float32), identities=names,
                                    photo_prefix=str(photos), box=(40, 30, 90, 100))
        for i in ids:
            Image.new("RGB", (160, 140), (int(i) * 5 % 255, 80, 120)).save(photos / f"{int(i)}.jpg")
        build_index(g)
        yield tmp_path / "g", x, centres


def cli(*args: str) -> dict | list:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_open_searcher_sees_rename_merge_relabel_delete(gallery) -> None:
    root, x, centres = gallery
    g = str(root)
    with Searcher(root, k=2, threshold=0.5, rule=BEST_FACE) as searcher:
        assert searcher.search_embeddings(centres[:1])[0].identity == "ann"
        cli("identities", "rename", "ann", "Ann Lee", "--gallery", g)
        assert searcher.search_embeddings(centres[:1])[0].identity == "Ann Lee"
        cli("identities", "merge", "bob", "cy", "--into", "Bob", "--gallery", g)
        assert searcher.search_embeddings(centres[2:3])[0].identity == "Bob"
        counts = {i["identity"]: i["faces"] for i in cli("identities", "--gallery", g)}
        assert counts == {"Bob": 20, "Ann Lee": 10, "dee": 10}
        shown = cli("identities", "show", "dee", "--gallery", g)
        dee_faces = [f["face_id"] for f in shown["faces"]]
        assert len(dee_faces) == 10 and shown["faces"][0]["photo"].endswith(".jpg")
        cli("faces", "relabel", *map(str, dee_faces[:3]), "--name", "Dee", "--gallery", g)
        assert {i["identity"] for i in cli("identities", "--gallery", g)} >= {"Dee", "dee"}
        cli("faces", "delete", *map(str, dee_faces), "--gallery", g)
        answer = searcher.search_embeddings(centres[3:4], faces_mode=True, k=40)[0]
        assert not {c.face_id for c in answer.candidates} & set(dee_faces)
        cli("identities", "delete", "Ann Lee", "--gallery", g)
        after = searcher.search_embeddings(centres[:1])[0]
        assert after.candidates[0].identity != "Ann Lee"


def test_errors_are_messages(gallery) -> None:
    root, _, _ = gallery
    g = str(root)
    for args, text in [
        (["identities", "rename", "nobody", "x"], "No identity named 'nobody'"),
        (["identities", "rename", "ann", "bob"], "gallery identities merge"),
        (["identities", "merge", "ann", "--into", "ann"], "Nothing to merge"),
        (["faces", "delete", "99999"], "No face with id 99999"),
        (["faces", "relabel", "1"], "exactly one of --name"),
    ]:
        result = runner.invoke(app, [*args, "--gallery", g])
        assert result.exit_code == 2 and text in result.output and "Traceback" not in result.output, result.output


def test_ignore_crop_and_labels_round_trip(gallery, tmp_path: Path) -> None:
    root, _, _ = gallery
    g = str(root)
    assert cli("faces", "ignore", "1", "2", "--gallery", g) == {"ignored": 2}
    with Gallery.open(root) as gal:
        assert gal.live_face_count() == 38
    crop = tmp_path / "face.png"
    result = runner.invoke(app, ["faces", "crop", "5", "--gallery", g, "-o", str(crop), "--size", "64", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"face_id": 5, "photo": str(tmp_path / "photos" / "5.jpg"),
                                         "output": str(crop), "size": [64, 64]}
    assert Image.open(crop).size == (64, 64)
    gone = runner.invoke(app, ["faces", "crop", "1", "--gallery", g, "-o", str(crop)])
    assert gone.exit_code == 2 and "No live face with id 1" in gone.output

    exported = tmp_path / "labels.csv"
    assert cli("labels", "export", str(exported), "--gallery", g) == {"faces": 38, "output": str(exported)}
    rows = list(csv.reader(exported.open()))
    assert rows[0] == ["face_id", "path", "identity"] and len(rows) == 39
    # rename everyone called "bob" in the file, unlabel one face, and import it back
    edited = [[r[0], r[1], "Robert" if r[2] == "bob" else r[2]] for r in rows]
    edited[-1][2] = ""
    with open(exported, "w", newline="") as fh:
        csv.writer(fh).writerows(edited)
    counts = cli("labels", "import", str(exported), "--gallery", g)
    assert counts == {"relabeled": 10, "unlabeled": 1, "unchanged": 27}  # changes counted, not rows
    names = {i["identity"]: i["faces"] for i in cli("identities", "--gallery", g)}
    assert names["Robert"] == 10 and "bob" not in names
    # a photo path labels its main face; a row naming nothing changes nothing
    path_rows = tmp_path / "by_path.csv"
    path_rows.write_text(f"{rows[5][1]},Someone\nmissing.jpg,Nobody\n")
    bad = runner.invoke(app, ["labels", "import", str(path_rows), "--gallery", g])
    assert bad.exit_code == 2 and "nothing was changed" in bad.output
    path_rows.write_text(f"{rows[5][1]},Someone\n")
    assert cli("labels", "import", str(path_rows), "--gallery", g) == {"relabeled": 1, "unlabeled": 0, "unchanged": 0}
    unbalanced = tmp_path / "broken.csv"
    unbalanced.write_text('5,"Ann\n6,Bob\n')
    broken = runner.invoke(app, ["labels", "import", str(unbalanced), "--gallery", g])
    assert broken.exit_code == 2 and "broken.csv:" in broken.output and "not valid CSV" in broken.output


def test_review_findings_on_labels_and_names(gallery, tmp_path: Path) -> None:
    """Found by a new-user review: silent or misleading outcomes of label edits."""
    root, _, _ = gallery
    g = str(root)
    rows = tmp_path / "rows.csv"
    rows.write_text("1,Ann\n999,Nobody\n")
    out = runner.invoke(app, ["labels", "import", str(rows), "--gallery", g])
    assert out.exit_code == 2 and "rows.csv:2" in out.output and "nothing" in out.output
    rows.write_text("1,Ann\n2,Bob\n1,Cy\n")
    out = runner.invoke(app, ["labels", "import", str(rows), "--gallery", g])
    assert out.exit_code == 2 and "rows.csv:3" in out.output and "first on line 1" in out.output
    rows.write_text("")
    assert "no label rows" in runner.invoke(app, ["labels", "import", str(rows), "--gallery", g]).output
    assert "is a folder" in runner.invoke(app, ["labels", "import", str(tmp_path), "--gallery", g]).output
    rows.write_text('3,"multi\nline"\n')  # stored as given, shown as an escape a person can type back
    assert runner.invoke(app, ["labels", "import", str(rows), "--gallery", g]).exit_code == 0
    assert "multi\\nline" in runner.invoke(app, ["identities", "--gallery", g]).output
    assert runner.invoke(app, ["identities", "show", "multi\nline", "--gallery", g]).exit_code == 0
    assert runner.invoke(app, ["faces", "delete", "4", "--gallery", g]).exit_code == 0
    out = runner.invoke(app, ["faces", "relabel", "4", "--name", "Y", "--gallery", g])
    assert out.exit_code == 2 and "deleted or ignored" in out.output
    out = runner.invoke(app, ["faces", "crop", "5", "--gallery", g, "-o", str(tmp_path / "crop.txt")])
    assert out.exit_code == 2 and "Cannot write a crop" in out.output and "Traceback" not in out.output
    out = runner.invoke(app, ["info", "--gallery", str(rows)])
    assert out.exit_code == 2 and "is a file, not a gallery folder" in out.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no photos")
    out = runner.invoke(app, ["search", str(empty), "--gallery", g])
    assert out.exit_code == 2 and "No photos found" in out.output
    out = runner.invoke(app, ["search", str(empty), "--gallery", g, "--output", str(tmp_path / "x.txt")])
    assert out.exit_code == 2 and ".csv or .jsonl" in out.output
