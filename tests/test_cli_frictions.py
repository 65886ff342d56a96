"""What a new user tripped over on the command line: ingest progress without a total, silent limits,
counts of rows instead of changes, raw JSON, out-of-order hints, erased people coming back with the
next sync, names without faces. Made-up photos and synthetic galleries only: nothing here skips."""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gallery.cli import app
from gallery.cli.search import _verdict
from gallery.faces.models import get_model_spec, registered
from gallery.ingest import IngestOptions, ingest
from gallery.ingest.reader import PhotoReader
from gallery.ingest.scan import PhotoCount, scan_photos
from gallery.progress import Progress, RateMeter, format_seconds
from gallery.server.jobs import Jobs
from gallery.store import Gallery, append_embedded_faces
from gallery.store.schema import SCHEMA_VERSION
from indexer import build_index
from search.cluster import cluster_gallery
from tests.helpers.galleries import stamp, unit_vectors

runner = CliRunner()
OPTIONS = IngestOptions(model="facenet-untrained", workers=0, detect_batch_size=4)


def noise_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Photos of noise (no face: each is recorded as `no_face`, a photo all the same)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"p{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles))


# --- ingest progress: done/total, rate, time left -------------------------------------------------

def test_rate_meter_measures_recent_work_and_time_left() -> None:
    now = [0.0]
    meter = RateMeter(window=10.0, min_span=2.0, clock=lambda: now[0])
    assert meter.update(0, 100) == (None, None)  # nothing measured yet
    now[0] = 1.0
    assert meter.update(10, 90) == (None, None)  # under min_span
    now[0] = 4.0
    rate, eta = meter.update(40, 60)
    assert rate == pytest.approx(10.0) and eta == pytest.approx(6.0)
    for t in range(5, 40):  # slows to 1 unit/s: the window forgets the fast start
        now[0] = float(t)
        rate, eta = meter.update(40 + (t - 4), 60 - (t - 4))
    assert rate == pytest.approx(1.0, rel=0.15) and eta == pytest.approx(25 / rate)
    assert meter.update(75, None)[1] is None  # no total, no time left
    assert format_seconds(42) == "42 s" and format_seconds(754) == "12 min 34 s"
    assert format_seconds(3 * 3600 + 5 * 60) == "3 h 05 min" and format_seconds(None) == "?"


def test_photo_count_counts_what_the_scan_finds_and_the_reader_knows_the_total(tmp_path: Path) -> None:
    noise_photos(tmp_path / "a", 3)
    noise_photos(tmp_path / "a" / "b", 4, seed=1)
    (tmp_path / "a" / "notes.txt").write_text("not a photo")
    count = PhotoCount(tmp_path / "a")
    count._thread.join(timeout=30)
    assert count.total == len(list(scan_photos(tmp_path / "a"))) == 7
    reader = PhotoReader(tmp_path / "a", lambda paths: {}, 0, 256, 4)
    assert reader.total is None  # nothing counted before the run starts
    files = reader.new_files()
    next(files)
    reader._count._thread.join(timeout=30)
    assert reader.total == 7  # known from the count while the scan is still at its first file
    assert len(list(files)) == 6 and reader.total == 7


def test_ingest_reports_done_of_total_photos_and_faces(tmp_path: Path) -> None:
    noise_photos(tmp_path / "photos", 6)
    events: list[Progress] = []
    summary = ingest(tmp_path / "photos", tmp_path / "g", OPTIONS, on_progress=events.append)
    assert summary.photos == 6 and summary.failed == 6
    last = events[-1]
    assert (last.stage, last.done, last.total) == ("ingest", 6, 6)
    assert last.message.startswith("6 of 6 photos (100%) · 0 faces")
    dones = [e.done for e in events]
    assert dones == sorted(dones) and all(e.total in (None, 6) for e in events)
    # a resume: every file is skipped unread, and still counted as done
    events.clear()
    ingest(tmp_path / "photos", tmp_path / "g", OPTIONS, on_progress=events.append)
    assert not events or (events[-1].done, events[-1].total) == (6, 6)


def test_a_server_job_records_rate_and_time_left(tmp_path: Path) -> None:
    jobs = Jobs(tmp_path / "jobs")

    def work(on_progress):
        on_progress(Progress("ingest", 30, 120, "30 of 120 photos", rate=4.0, eta_seconds=22.5))
        return {"ok": True}

    job = jobs.start("ingest", {}, work)
    for _ in range(100):
        record = jobs.get(job["job"])
        if record and record["state"] == "done":
            break
        time.sleep(0.05)
    assert record["progress"] == {"stage": "ingest", "done": 30, "total": 120, "message": "30 of 120 photos",
                                  "rate": 4.0, "eta_seconds": 22.5}


# --- hints after the answer, on stdout --------------------------------------------------------------

def test_ingest_says_what_next_on_stdout_after_its_summary(tmp_path: Path) -> None:
    noise_photos(tmp_path / "photos", 2)
    result = runner.invoke(app, ["ingest", str(tmp_path / "photos"), "--gallery", str(tmp_path / "g"),
                                 "--model", "facenet-untrained", "--workers", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "next:" not in result.stderr
    assert "failed photos" in result.stdout and "next: searches need an index" in result.stdout
    assert result.stdout.index("failed photos") < result.stdout.index("next:")


# --- search --faces, plurals, info ---------------------------------------------------------------

def test_search_titles_say_what_was_found() -> None:
    faces_mode = {"mode": "faces", "identity": None, "unknown": False, "threshold": 0.91,
                  "candidates": [{"above_threshold": True}, {"above_threshold": False}]}
    assert "1 gallery face above the threshold" in _verdict(faces_mode) and "None" not in _verdict(faces_mode)
    faces_mode["candidates"] = [{"above_threshold": False}]
    assert "no gallery face above the threshold" in _verdict(faces_mode)
    assert "Ann" in _verdict({"mode": "identities", "identity": "Ann", "unknown": False, "candidates": [],
                              "threshold": 0.5, "statistic": 0.6})
    assert "unknown" in _verdict({"mode": "identities", "identity": None, "unknown": True, "candidates": [],
                                  "threshold": 0.5, "statistic": 0.4})


DIM = 16


@pytest.fixture
def small_gallery(tmp_path: Path):
    """12 faces of 3 people (ann, bob, cy) and an index."""
    spec = replace(get_model_spec("facenet-untrained"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test", default_threshold=0.5)
    names = [n for n in ("ann", "bob", "cy") for _ in range(4)]
    with registered(spec), Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(DIM), unit_vectors(12, DIM, seed=0), identities=names,
                              photo_prefix=str(tmp_path / "photos"))
        build_index(g)
        yield tmp_path / "g"


def test_info_shows_the_model_readably(small_gallery: Path) -> None:
    result = runner.invoke(app, ["info", "--gallery", str(small_gallery)])
    assert result.exit_code == 0, result.output
    assert f"{stamp(DIM)['name']}, {DIM}-d embeddings" in result.stdout and "preprocessing test" in result.stdout
    assert '{"name"' not in result.stdout  # not the raw stamp
    data = json.loads(runner.invoke(app, ["info", "--gallery", str(small_gallery), "--json"]).stdout)
    assert data["model_stamp"] == stamp(DIM) and data["kept_out"] == 0  # JSON keeps the stamp as stored


def test_one_face_is_singular(small_gallery: Path) -> None:
    g = str(small_gallery)
    assert runner.invoke(app, ["faces", "relabel", "5", "--name", "dee", "--gallery", g]).stdout.startswith(
        "1 face now 'dee'")
    result = runner.invoke(app, ["identities", "delete", "dee", "--gallery", g])
    assert "its 1 face is now unlabeled" in result.stdout


# --- labels: changes counted, LF line endings -----------------------------------------------------

def test_labels_export_writes_lf_and_an_unchanged_import_changes_nothing(small_gallery: Path, tmp_path: Path) -> None:
    g = str(small_gallery)
    exported = tmp_path / "labels.csv"
    assert runner.invoke(app, ["labels", "export", str(exported), "--gallery", g]).exit_code == 0
    data = exported.read_bytes()
    assert b"\r\n" not in data and data.count(b"\n") == 13
    result = runner.invoke(app, ["labels", "import", str(exported), "--gallery", g, "--json"])
    assert json.loads(result.stdout) == {"relabeled": 0, "unlabeled": 0, "unchanged": 12}
    rows = list(csv.reader(exported.open()))
    rows[1][2], rows[2][2] = "bob", ""  # one ann face to bob, one made unlabeled
    with open(exported, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    result = runner.invoke(app, ["labels", "import", str(exported), "--gallery", g])
    assert result.stdout.startswith("1 face relabeled, 1 made unlabeled, 10 unchanged")


# --- identities without live faces -----------------------------------------------------------------

def test_identities_left_without_live_faces_are_listed_apart(small_gallery: Path) -> None:
    g = str(small_gallery)
    with Gallery.open(small_gallery) as gal:
        cy = [f.face_id for f in gal.identity_faces("cy")]
    assert runner.invoke(app, ["faces", "delete", *map(str, cy), "--gallery", g]).exit_code == 0
    listed = runner.invoke(app, ["identities", "--gallery", g])
    assert "2 identities" in listed.stdout and "cy" not in listed.stdout.split("more name")[0]
    assert "1 more name with no live face left" in listed.stdout and "--all" in listed.stdout
    everything = runner.invoke(app, ["identities", "--gallery", g, "--all"])
    assert "1 name with no live face left" in everything.stdout and "cy" in everything.stdout
    data = json.loads(runner.invoke(app, ["identities", "--gallery", g, "--json"]).stdout)
    assert {"identity": "cy", "faces": 0} in data  # JSON: every name with its live count
    limited = runner.invoke(app, ["identities", "--gallery", g, "--limit", "1"])
    assert "showing 1 of 2 identities (--limit 0 for all)" in limited.stdout


# --- clusters: the limit is said -------------------------------------------------------------------

def test_clusters_list_says_how_many_it_does_not_show(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    centres = unit_vectors(6, 32, seed=5)
    x = np.repeat(centres, 4, axis=0) + 0.02 * rng.standard_normal((24, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(32), x.astype(np.float32))
    assert cluster_gallery(tmp_path / "g", threshold=0.5, floor=0.45).clusters == 6
    limited = runner.invoke(app, ["clusters", "--gallery", str(tmp_path / "g"), "--limit", "4", "--no-suggest"])
    assert limited.exit_code == 0, limited.output
    assert "showing 4 of 6 clusters (--limit 0 for all)" in limited.stdout
    everything = runner.invoke(app, ["clusters", "--gallery", str(tmp_path / "g"), "--limit", "0", "--no-suggest"])
    assert "6 clusters, largest first" in everything.stdout and "showing" not in everything.stdout


# --- erasure and the archive: kept out of the next sync ------------------------------------------

def test_an_erased_photo_stays_out_of_the_next_sync_until_admitted(tmp_path: Path) -> None:
    photos = noise_photos(tmp_path / "archive", 3)
    g = str(tmp_path / "g")
    first = ingest(tmp_path / "archive", tmp_path / "g", OPTIONS)
    assert first.photos == 3
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    (sha,) = con.execute("SELECT sha256 FROM images WHERE path = ?", (str(photos[0]),)).fetchone()
    con.close()
    erased = runner.invoke(app, ["photos", "erase", str(photos[0]), "--gallery", g])
    assert erased.exit_code == 0, erased.output
    assert "1 photo" in erased.stdout and "archive is not touched" in erased.stdout
    assert "keep them out" in erased.stdout and "gallery photos admit" in erased.stdout
    # nothing of the photo in any file: not its path, not its content hash (only a keyed fingerprint)
    assert files_holding(tmp_path / "g", [str(photos[0]).encode(), sha.encode(), bytes.fromhex(sha)]) == []

    synced = runner.invoke(app, ["sync", str(tmp_path / "archive"), "--gallery", g, "--workers", "0", "--json"])
    report = json.loads(synced.stdout)
    assert report["added"] == 0 and report["kept_out"] == 1 and report["ingest"]["photos"] == 0
    assert json.loads(runner.invoke(app, ["info", "--gallery", g, "--json"]).stdout)["kept_out"] == 1
    copy = tmp_path / "archive" / "copy.png"
    copy.write_bytes(photos[0].read_bytes())  # the content is kept out, whatever its path
    report = json.loads(runner.invoke(app, ["sync", str(tmp_path / "archive"), "--gallery", g, "--workers", "0",
                                            "--json"]).stdout)
    assert report["added"] == 0 and report["kept_out"] == 2

    admitted = runner.invoke(app, ["photos", "admit", str(photos[0]), "--gallery", g])
    assert admitted.exit_code == 0 and "1 let in again" in admitted.stdout
    report = json.loads(runner.invoke(app, ["sync", str(tmp_path / "archive"), "--gallery", g, "--workers", "0",
                                            "--json"]).stdout)
    assert report["kept_out"] == 0 and report["ingest"]["photos"] == 1 and report["ingest"]["duplicates"] == 1


def test_erasing_without_keep_out_says_the_next_sync_brings_them_back(tmp_path: Path) -> None:
    photos = noise_photos(tmp_path / "archive", 2)
    g = str(tmp_path / "g")
    ingest(tmp_path / "archive", tmp_path / "g", OPTIONS)
    erased = runner.invoke(app, ["photos", "erase", str(photos[1]), "--gallery", g, "--no-keep-out"])
    assert erased.exit_code == 0, erased.output
    assert "reads them in again" in erased.stdout and "gallery photos keep-out" in erased.stdout
    report = json.loads(runner.invoke(app, ["sync", str(tmp_path / "archive"), "--gallery", g, "--workers", "0",
                                            "--json"]).stdout)
    assert report["added"] == 1 and report["kept_out"] == 0
    # the remedy after the fact: keep the file out by its content
    kept = runner.invoke(app, ["photos", "keep-out", str(tmp_path / "archive"), "--gallery", g, "--json"])
    result = json.loads(kept.stdout)
    assert result["photos"] == 2 and result["changed"] == 2 and len(result["in_gallery"]) == 2
    assert json.loads(runner.invoke(app, ["photos", "erase", str(photos[1]), "--gallery", g, "--json"]).stdout
                      )["kept_out"] == 0  # already kept out
    report = json.loads(runner.invoke(app, ["sync", str(tmp_path / "archive"), "--gallery", g, "--workers", "0",
                                            "--json"]).stdout)
    assert report["added"] == 0 and report["kept_out"] == 1


def test_a_version_4_gallery_gains_the_kept_out_table(tmp_path: Path) -> None:
    with Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(4), unit_vectors(3, 4, seed=0))
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    with con:
        con.execute("DROP TABLE kept_out")
        for (trigger,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            con.execute(f"DROP TRIGGER {trigger}")  # version 4 had no template triggers either
        for column in ("q_size", "q_inside", "q_sharpness", "q_pose", "quality_issue",  # as version 4 was
                       "t_ms", "track", "track_start_ms", "track_end_ms", "track_template"):
            con.execute(f"ALTER TABLE faces DROP COLUMN {column}")
        con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    con.close()
    with Gallery.open(tmp_path / "g") as g:
        from gallery.store.keep_out import kept_out_count

        assert kept_out_count(g) == 0 and g.live_face_count() == 3
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()
