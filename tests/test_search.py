"""The query half on real LFW photos with the real offline model (dlib-resnet): who is this?"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gallery.app.verify import verify
from gallery.cli import app
from gallery.ingest import IngestOptions, ingest
from search import NoIndexError, Searcher
from search.calibrate import calibrate
from tests.conftest import copy_lfw_people, lfw_photo, requires_lfw

pytestmark = requires_lfw

KNOWN = [
    "Ariel_Sharon",
    "Colin_Powell",
    "Donald_Rumsfeld",
    "Gerhard_Schroeder",
    "Hugo_Chavez",
    "Jacques_Chirac",
    "Jean_Chretien",
    "Ari_Fleischer",
    "Bill_Clinton",
    "Gray_Davis",
]
UNKNOWN = ["Amelie_Mauresmo", "Andre_Agassi", "Alvaro_Uribe"]
PER_PERSON = 4  # photos 1..4 in the gallery; photo 5 is the held-out query
runner = CliRunner()


def options(**kw) -> IngestOptions:
    return replace(IngestOptions(model="dlib-resnet", workers=0, detect_batch_size=8, device="cpu"), **kw)


@pytest.fixture(scope="module")
def labeled_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("search")
    copy_lfw_people(root / "archive", {name: PER_PERSON for name in KNOWN})
    ingest(root / "archive", root / "g", options())
    from indexer import build_index

    build_index(root / "g")
    return root / "g"


def test_no_index_yet_says_how_to_build(tmp_path: Path) -> None:
    copy_lfw_people(tmp_path / "a", {"Ariel_Sharon": 1})
    ingest(tmp_path / "a", tmp_path / "g", options())
    with pytest.raises(NoIndexError, match="gallery index build --gallery"):
        Searcher(tmp_path / "g")
    result = runner.invoke(app, ["search", str(lfw_photo("Ariel_Sharon", 5)), "--gallery", str(tmp_path / "g")])
    assert result.exit_code == 2 and "gallery index build" in result.output


def test_held_out_photo_of_known_person_comes_first(labeled_gallery: Path) -> None:
    with Searcher(labeled_gallery, k=3, device="cpu") as searcher:
        for name in KNOWN[:5]:
            found, answers = searcher.search(lfw_photo(name, PER_PERSON + 1), largest_only=True)
            assert found.ok and len(answers) == 1
            answer = answers[0]
            assert answer.candidates[0].identity == name, (name, answer.candidates)
            assert answer.identity == name and not answer.unknown
            assert [c.identity for c in answer.candidates] == list(dict.fromkeys(c.identity for c in answer.candidates))
            assert answer.candidates[0].photo.endswith(".jpg")
            assert 1 <= answer.candidates[0].faces_in_neighbours <= PER_PERSON


def test_unknown_person_is_unknown_after_calibration(labeled_gallery: Path) -> None:
    with Searcher(labeled_gallery, device="cpu") as searcher:
        report = calibrate(searcher, target_fpir=0.01)
    assert report.nonmated_searches == len(KNOWN) * PER_PERSON
    assert report.mated_searches == len(KNOWN) * PER_PERSON
    assert 0 <= report.fpir <= 0.01 and 0 <= report.fnir <= 1 and report.rank1 > 0.8
    assert report.genuine_scores["p50"] > report.impostor_scores["p50"]
    with Searcher(labeled_gallery, device="cpu") as searcher:
        assert searcher.threshold == pytest.approx(report.threshold)
        assert searcher.threshold_source.startswith("calibrated")
        unknown = [searcher.search(lfw_photo(name, 1), largest_only=True)[1][0] for name in UNKNOWN]
        assert sum(a.unknown for a in unknown) >= 2, [(a.candidates[0].identity, a.score) for a in unknown]
        for a in unknown:
            if a.unknown:
                assert a.identity is None and a.candidates and not a.candidates[0].above_threshold
        known = searcher.search(lfw_photo(KNOWN[0], PER_PERSON + 1), largest_only=True)[1][0]
        assert known.identity == KNOWN[0]
    info = json.loads(runner.invoke(app, ["info", "--gallery", str(labeled_gallery), "--json"]).output)
    assert info["threshold"] == pytest.approx(report.threshold) and "calibrated" in info["threshold_source"]


def test_multi_face_query_answers_every_face(labeled_gallery: Path, tmp_path: Path) -> None:
    canvas = Image.new("RGB", (520, 260), (120, 120, 120))
    canvas.paste(Image.open(lfw_photo("Colin_Powell", 6)), (0, 5))
    canvas.paste(Image.open(lfw_photo("Hugo_Chavez", 6)), (265, 5))
    canvas.save(tmp_path / "two.jpg", quality=95)
    with Searcher(labeled_gallery, device="cpu", threshold=0.0) as searcher:
        found, answers = searcher.search(tmp_path / "two.jpg")
        top = {a.candidates[0].identity for a in answers if a.face["det_score"] > 0.99}
        assert {"Colin_Powell", "Hugo_Chavez"} <= top
        assert all(a.face["box"][0] >= 0 for a in answers)
        _, main_only = searcher.search(tmp_path / "two.jpg", largest_only=True)
        assert len(main_only) == 1 and len(answers) >= 2


def test_json_schema_and_batch_output_with_a_bad_query(labeled_gallery: Path, tmp_path: Path) -> None:
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "a.jpg").write_bytes(lfw_photo("Jacques_Chirac", 7).read_bytes())
    (queries / "b.jpg").write_bytes(lfw_photo("Bill_Clinton", 7).read_bytes())
    (queries / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = runner.invoke(
        app,
        [
            "search",
            str(queries),
            "--gallery",
            str(labeled_gallery),
            "--json",
            "--largest-only",
            "-k",
            "3",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 1  # one query could not be answered; the others were
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(lines) == 3
    by_query = {Path(r["query"]).name: r for r in lines}
    assert by_query["broken.jpg"]["error"] in {"truncated", "decode_error", "not_an_image"}
    for name, person in (("a.jpg", "Jacques_Chirac"), ("b.jpg", "Bill_Clinton")):
        r = by_query[name]
        assert {"query", "face", "identity", "unknown", "score", "candidates"} <= set(r)
        assert set(r["face"]) >= {"box", "det_score"} and len(r["face"]["box"]) == 4
        assert isinstance(r["unknown"], bool) and isinstance(r["score"], float)
        assert 1 <= len(r["candidates"]) <= 3
        assert {"identity", "score", "photo"} <= set(r["candidates"][0])
        assert r["candidates"][0]["identity"] == person
    out_csv = tmp_path / "results.csv"
    result = runner.invoke(
        app,
        [
            "search",
            str(queries),
            "--gallery",
            str(labeled_gallery),
            "--output",
            str(out_csv),
            "--largest-only",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 1
    rows = out_csv.read_text().strip().splitlines()
    assert rows[0].startswith("query,face_index") and len(rows) == 4
    out_jsonl = tmp_path / "results.jsonl"
    runner.invoke(
        app,
        [
            "search",
            str(queries),
            "--gallery",
            str(labeled_gallery),
            "--output",
            str(out_jsonl),
            "--largest-only",
            "--device",
            "cpu",
        ],
    )
    assert len(out_jsonl.read_text().strip().splitlines()) == 3


def test_deleted_faces_never_appear(labeled_gallery: Path, tmp_path: Path) -> None:
    import shutil

    g = tmp_path / "g"
    shutil.copytree(labeled_gallery, g)
    con = sqlite3.connect(g / "gallery.db")
    with con:
        deleted = [
            r[0]
            for r in con.execute(
                "SELECT face_id FROM faces JOIN identities USING (identity_id) WHERE name = 'Gray_Davis'"
            )
        ]
        con.execute(f"UPDATE faces SET deleted = 1 WHERE face_id IN ({','.join(map(str, deleted))})")
    con.close()
    assert deleted
    with Searcher(g, k=10, device="cpu") as searcher:
        _, answers = searcher.search(lfw_photo("Gray_Davis", 1), largest_only=True)
        assert all(c.identity != "Gray_Davis" for c in answers[0].candidates)
        _, faces = searcher.search(lfw_photo("Gray_Davis", 1), largest_only=True, faces_mode=True, k=40)
        assert not {c.face_id for c in faces[0].candidates} & set(deleted)


def test_faces_mode_on_an_unlabeled_gallery(tmp_path: Path) -> None:
    copy_lfw_people(tmp_path / "archive", {"Hugo_Chavez": 3, "Jean_Chretien": 3, "Gray_Davis": 3})
    ingest(tmp_path / "archive", tmp_path / "g", options(labels="none"))
    from indexer import build_index

    build_index(tmp_path / "g")
    result = runner.invoke(
        app,
        [
            "search",
            str(lfw_photo("Jean_Chretien", 9)),
            "--gallery",
            str(tmp_path / "g"),
            "--faces",
            "--json",
            "-k",
            "3",
            "--largest-only",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[0])
    assert len(record["candidates"]) == 3
    assert all(c["identity"] is None for c in record["candidates"])
    # "Where else does this person appear?": the nearest faces are in Jean Chretien's photos.
    assert "Jean_Chretien" in record["candidates"][0]["photo"]
    assert record["candidates"][0]["score"] >= record["candidates"][1]["score"]


def test_verify_same_and_different(labeled_gallery: Path) -> None:
    same = verify(lfw_photo("Colin_Powell", 1), lfw_photo("Colin_Powell", 8), device="cpu")
    diff = verify(lfw_photo("Colin_Powell", 1), lfw_photo("Hugo_Chavez", 8), device="cpu")
    assert same.same and not diff.same and same.score > diff.score
    result = runner.invoke(
        app,
        [
            "verify",
            str(lfw_photo("Colin_Powell", 1)),
            str(lfw_photo("Colin_Powell", 8)),
            "--gallery",
            str(labeled_gallery),
            "--json",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["same"] is True and data["model"] == "dlib-resnet"


def test_search_embeddings_api_matches_photo_search(labeled_gallery: Path) -> None:
    with Searcher(labeled_gallery, k=2, device="cpu") as searcher:
        found, answers = searcher.search(lfw_photo("Donald_Rumsfeld", 5), largest_only=True)
        again = searcher.search_embeddings(np.stack([found.faces[0].embedding]))
        assert again[0].candidates[0].identity == answers[0].candidates[0].identity
        assert again[0].score == pytest.approx(answers[0].score)
        with pytest.raises(ValueError, match="dimension"):
            searcher.search_embeddings(np.zeros((1, 7), np.float32))
