"""Erasure as one durable operation: recorded first (ids only), out of every answer at once, then
carried to every place that can hold the faces; finished by the same command, a later writer or
`gallery repair`; `gallery check` fails until nothing is left. Each test is one way an erasure can be
interrupted, raced or fooled (SIGKILL at a step, a full disk, the index lock held, a build running,
a reader holding the database, staged batches of a killed Ray driver, a relabeled person, a thousand
photos at once), and each ends with a scan of every file under the gallery that decodes Parquet, the
re-rank file and the FAISS index as well as reading raw bytes (tests/helpers/traces.py)."""

from __future__ import annotations

import errno
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from typer.testing import CliRunner

from gallery.cli import app
from gallery.faces.models import registered
from gallery.store import Gallery, append_embedded_faces
from indexer import build_index
from tests.helpers.galleries import stamp, unit_vectors
from tests.helpers.traces import traces

REPO = Path(__file__).resolve().parents[1]
DIM = 32
VICTIM = "Zelda Victimova"
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


class Victim:
    """A synthetic gallery of 1,200 faces in two shards, one person of which is erased."""

    def __init__(self, root: Path, factory: str | None = "IVF16,PQ8np", faces: int = 1200) -> None:
        self.root = root
        x = unit_vectors(faces, DIM, seed=5, clusters=30)
        names = [f"person-{i % 30:02d}" for i in range(faces)]
        names[7::53] = [VICTIM] * len(names[7::53])
        half = faces // 2
        with Gallery.open_or_create(root) as g:
            append_embedded_faces(g, stamp(DIM), x[:half], identities=names[:half], photo_prefix="/archive/first")
            append_embedded_faces(g, stamp(DIM), x[half:], identities=names[half:], photo_prefix="/archive/second")
            if factory is not None:
                build_index(g, factory=factory, rerank=True)
            faces_of = g.identity_faces(VICTIM)
        self.ids = np.asarray([f.face_id for f in faces_of], np.int64)
        self.vectors = x[self.ids - 1]
        self.paths = [f.photo for f in faces_of]

    def left(self) -> list[str]:
        return traces(self.root, texts=[VICTIM, *self.paths], face_ids=self.ids, vectors=self.vectors)

    def erase(self, *extra: str) -> tuple[int, str]:
        return cli("identities", "erase", VICTIM, "--gallery", str(self.root), *extra)

    def check(self) -> tuple[int, str]:
        return cli("check", "--gallery", str(self.root), "--json")


@pytest.fixture
def victim(tmp_path: Path) -> Victim:
    v = Victim(tmp_path / "g")
    assert v.left(), "the scan must see the person before the erasure"
    return v


def model_spec():
    """The synthetic gallery's model, registered for commands that calibrate after a build."""
    from dataclasses import replace

    from gallery.faces.models import get_model_spec

    return replace(get_model_spec("facenet-untrained"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test", default_threshold=0.5)


def problems(check_output: str) -> list[str]:
    return [f["area"] + ": " + f["detail"] for f in json.loads(check_output)["findings"] if not f["ok"]]


# --- 1. the index lock held by another build -------------------------------------------------------


def test_an_erasure_blocked_by_the_index_lock_is_pending_until_finished(victim: Victim) -> None:
    lock = FileLock(victim.root / "index" / ".index.lock")
    lock.acquire()
    try:
        code, out = victim.erase("--wait", "0.2")
        assert code == 3 and "pending" in out and "index" in out, out
        code, out = victim.check()
        assert code == 1 and any(p.startswith("erasure") for p in problems(out)), out
        # the index still holding the faces is the pending erasure's work, named as such (a backup taken
        # at this moment checks clean but for the erasure it carries), never an index fault of its own
        assert any(p.startswith("erasure") and "ids of a pending erasure" in p for p in problems(out)), out
        assert not any(p.startswith("index") for p in problems(out)), out
        code, out = victim.erase("--wait", "0.2")  # the same command again, the lock still held
        assert code == 3 and "pending" in out and "No identity" not in out, out
    finally:
        lock.release()
    code, out = victim.erase("--wait", "0.2")
    assert code == 0 and "finished" in out, out
    assert victim.left() == []
    assert victim.check()[0] == 0


def test_repair_finishes_a_pending_erasure(victim: Victim) -> None:
    lock = FileLock(victim.root / "index" / ".index.lock")
    with lock:
        assert victim.erase("--wait", "0.1")[0] == 3
    code, out = cli("repair", "--gallery", str(victim.root), "--json")
    assert code == 0, out
    assert json.loads(out)["erasures_finished"] == 1
    assert victim.left() == [] and victim.check()[0] == 0


# --- 2. an index build running during the erasure -------------------------------------------------


def test_an_index_build_that_started_before_an_erasure_cannot_commit_the_erased_faces(
        victim: Victim, monkeypatch: pytest.MonkeyPatch) -> None:
    import indexer.build as build

    add = build._add_batch
    erased: list[tuple[int, str]] = []

    def add_and_erase_meanwhile(index, ids, x) -> None:
        if not erased:  # the build has read its faces and shards: erase now, as another process would
            erased.append(victim.erase("--wait", "0.2"))
        add(index, ids, x)

    monkeypatch.setattr(build, "_add_batch", add_and_erase_meanwhile)
    with registered(model_spec()):
        assert cli("index", "build", "--gallery", str(victim.root), "--factory", "IVF16,PQ8np", "--rerank")[0] == 0
    code, out = erased[0]
    assert code == 3 and "pending" in out, out  # the build held the index: the erasure could not reach it
    assert victim.left() == []  # the build re-checked at its commit, and finished the erasure after it
    assert victim.check()[0] == 0


# --- 3/4. staged batches of a killed Ray driver ---------------------------------------------------


def test_staged_batches_left_by_a_killed_ray_driver_are_erased_too(victim: Victim) -> None:
    from gallery.store.staging import StagedPhoto, staging_dir, write_staged

    photo = StagedPhoto(path=victim.paths[0], size=1000, mtime_ns=1, sha256="ab" * 32, width=112, height=112, main=0,
                        boxes=np.asarray([[0, 0, 112, 112]], np.float32), scores=np.ones(1, np.float32),
                        landmarks=np.zeros((1, 5, 2), np.float32), embeddings=victim.vectors[:1])
    staging_dir(victim.root).mkdir()
    write_staged(staging_dir(victim.root), "staged-0123456789abcdef0123456789abcdef.parquet", [photo], stamp(DIM))
    code, out = victim.check()
    assert code == 1 and any(p.startswith("staging") for p in problems(out)), out
    assert victim.erase()[0] == 0
    assert victim.left() == []
    assert victim.check()[0] == 0


# --- 5. a reader holding the database -------------------------------------------------------------

READER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN")
con.execute("SELECT count(*) FROM identities").fetchall()
print("reading", flush=True)
sys.stdin.read()
"""


def test_a_reader_holding_the_database_keeps_the_erasure_pending_not_done(victim: Victim) -> None:
    reader = subprocess.Popen([sys.executable, "-c", READER, str(victim.root / "gallery.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "reading"
        code, out = victim.erase("--wait", "0.5")
        assert code == 3 and "1 reader" in out and "pending" in out, out
        assert victim.check()[0] == 1
    finally:
        reader.communicate("", timeout=30)
    code, out = victim.erase("--wait", "0.5")
    assert code == 0, out
    assert victim.left() == [] and victim.check()[0] == 0


# --- 6. a person relabeled away from an old name --------------------------------------------------


def test_a_person_relabeled_away_from_an_emptied_name_is_erased_with_their_group_photos(tmp_path: Path) -> None:
    x = unit_vectors(6, 8, seed=1)
    with Gallery.open_or_create(tmp_path / "g") as g:
        ids = append_embedded_faces(g, stamp(8), x, identities=["Old Name", None, "Other", None, None, None],
                                    photo_prefix="/archive/Old Name")
        with g.session() as s, s.begin():  # face 2 is a second, unlabeled face in face 1's photo
            s.execute(__import__("sqlalchemy").text(
                "UPDATE faces SET image_id = (SELECT image_id FROM faces WHERE face_id = :a), is_main = 0 "
                "WHERE face_id = :b"), {"a": int(ids[0]), "b": int(ids[1])})
        g.relabel_faces([int(ids[0])], "New Name")  # as `gallery sync` does for a renamed folder
    code, out = cli("identities", "erase", "New Name", "--gallery", str(tmp_path / "g"), "--json")
    assert code == 0, out
    assert json.loads(out)["faces"] == 2 and json.loads(out)["photos"] == 1  # the photo, with its other face
    with Gallery.open(tmp_path / "g") as g:
        assert g.face_records([int(ids[1])]) == {}
    assert traces(tmp_path / "g", texts=["/archive/Old Name/1.jpg"], face_ids=ids[:2], vectors=x[:2]) == []


# --- 7. a thousand photos at once ------------------------------------------------------------------


def test_erasing_1200_photos_and_compacting_after_many_deletions(tmp_path: Path) -> None:
    x = unit_vectors(2400, 8, seed=2)
    with Gallery.open_or_create(tmp_path / "g") as g:
        ids = append_embedded_faces(g, stamp(8), x[:1200], photo_prefix="/archive/many")
        append_embedded_faces(g, stamp(8), x[1200:], photo_prefix="/archive/more")
        build_index(g)
        photos = [r.photo for r in g.face_records(ids.tolist()).values()]
    code, out = cli("photos", "erase", *photos, "--gallery", str(tmp_path / "g"), "--json")
    assert code == 0, out
    assert json.loads(out)["photos"] == 1200
    with Gallery.open(tmp_path / "g") as g:
        g.delete_faces(range(1201, 2301))
    code, out = cli("compact", "--gallery", str(tmp_path / "g"), "--json")
    assert code == 0, out
    assert json.loads(out)["faces_erased"] == 1100
    assert traces(tmp_path / "g", texts=photos[:50], face_ids=np.arange(1, 2301), vectors=x[:2300:97]) == []
    assert cli("check", "--gallery", str(tmp_path / "g"))[0] == 0


# --- 8. leftovers of a killed index build ---------------------------------------------------------

KILLED_BUILD = """
import os, signal, sys
import indexer.build as build
add = build._add_batch
def add_then_die(index, ids, x):
    add(index, ids, x)
    os.kill(os.getpid(), signal.SIGKILL)
build._add_batch = add_then_die
build.build_index(sys.argv[1], factory="IVF16,PQ8np", rerank=True)
"""


def test_a_partial_vectors_file_of_a_killed_index_build_is_reported_and_removed(victim: Victim) -> None:
    before = sorted(p.name for p in (victim.root / "index").iterdir())
    run = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(victim.root)], cwd=REPO, timeout=300)
    assert run.returncode == -9
    partial = sorted(p.name for p in (victim.root / "index").iterdir() if p.name not in before)
    assert any(n.startswith("vectors-") for n in partial), partial
    code, out = victim.check()
    assert code == 1 and any(n in json.dumps(problems(out)) for n in partial), out
    assert cli("repair", "--gallery", str(victim.root))[0] == 0
    assert sorted(p.name for p in (victim.root / "index").iterdir()) == before
    assert victim.check()[0] == 0


# --- SIGKILL and a full disk at the steps of an erasure -------------------------------------------

KILLED_ERASE = """
import os, signal, sys
from dataclasses import replace
import gallery.app.erasure as erasure
place, when = sys.argv[2], sys.argv[3]
def dying(step):
    def run(g, work):
        if when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        out = step.run(g, work)
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(step, run=run)
erasure.STEPS = tuple(dying(s) if s.place == place else s for s in erasure.STEPS)
from gallery.cli import app
app(["identities", "erase", sys.argv[4], "--gallery", sys.argv[1]])
"""


@pytest.mark.parametrize(("place", "when", "finisher"), [
    ("shards", "before", "same command"),   # right after the erasure was recorded
    ("index", "after", "repair"),           # the FAISS file patched, the re-rank rows not yet
    ("enrolled", "before", "index build"),  # every vector file done, folders not yet
])
def test_an_erasure_killed_at_a_step_is_finished_later(victim: Victim, place: str, when: str, finisher: str) -> None:
    enrolled = victim.root / "enrolled" / "x"  # a copy no record names any more (as an erasure leaves it)
    enrolled.mkdir(parents=True)
    (enrolled / "copy.jpg").write_bytes(b"\xff\xd8" + victim.vectors[0].tobytes())
    run = subprocess.run([sys.executable, "-c", KILLED_ERASE, str(victim.root), place, when, VICTIM], cwd=REPO,
                         timeout=300)
    assert run.returncode == -9
    code, out = victim.check()
    assert code == 1 and any(p.startswith("erasure") for p in problems(out)), out
    with Gallery.open(victim.root) as g:  # out of every answer already
        assert not g.face_records(victim.ids.tolist())
    if finisher == "same command":
        code, out = victim.erase()
        assert code == 0 and "finished" in out, out
    elif finisher == "repair":
        assert cli("repair", "--gallery", str(victim.root))[0] == 0
    else:
        with registered(model_spec()):
            code, out = cli("index", "build", "--gallery", str(victim.root), "--factory", "IVF16,PQ8np", "--rerank")
        assert code == 0 and "finished 1 pending erasure" in out, out
    assert victim.left() == []
    assert victim.check()[0] == 0


def test_a_full_disk_during_an_erasure_leaves_it_pending_and_checked(victim: Victim,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import gallery.store.shards as shards

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as m:
        m.setattr(shards, "atomic_write", full)
        code, out = victim.erase()
        assert code == 2 and "disk is full" in out, out
    assert victim.check()[0] == 1
    with Gallery.open(victim.root) as g:
        assert not g.face_records(victim.ids.tolist())
    code, out = victim.erase()
    assert code == 0, out
    assert victim.left() == [] and victim.check()[0] == 0


# --- check proves the negative ----------------------------------------------------------------------


def test_check_finds_erased_ids_left_in_the_index_and_the_rerank_file(victim: Victim) -> None:
    """An erasure of an older version left the index alone: the rows are gone, the vectors are not."""
    con = sqlite3.connect(victim.root / "gallery.db")
    with con:
        ids = ",".join(map(str, victim.ids))
        con.execute(f"DELETE FROM face_clusters WHERE face_id IN ({ids})")
        con.execute(f"DELETE FROM faces WHERE face_id IN ({ids})")
    con.close()
    code, out = victim.check()
    found = problems(out)
    assert code == 1
    assert any(p.startswith("index") and "erased" in p for p in found), found
    assert any("re-rank" in p for p in found), found
    assert any(p.startswith("shards") for p in found), found
    assert cli("repair", "--gallery", str(victim.root))[0] == 0
    assert traces(victim.root, face_ids=victim.ids, vectors=victim.vectors) == []
    assert victim.check()[0] == 0


def test_files_in_the_enrolment_folder_that_no_record_names_are_found_and_removed(victim: Victim) -> None:
    stray = victim.root / "enrolled" / "20240101-deadbeef" / "blob"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not ingested: an upload without a photo extension")
    code, out = victim.check()
    assert code == 1 and any(p.startswith("enrolled") for p in problems(out)), out
    assert cli("repair", "--gallery", str(victim.root))[0] == 0
    assert not stray.exists() and not stray.parent.exists()
    assert victim.check()[0] == 0


def test_a_searcher_open_before_the_erasure_never_answers_with_the_erased_faces(victim: Victim) -> None:
    from search import Searcher

    with registered(model_spec()), Searcher(victim.root, k=3, threshold=0.5) as searcher:
        assert searcher.search_embeddings(victim.vectors[:1], faces_mode=True, k=5)[0].candidates[0].face_id \
            == victim.ids[0]
        with FileLock(victim.root / "index" / ".index.lock"):
            assert victim.erase("--wait", "0.1")[0] == 3  # pending: the index still holds the faces
        time.sleep(0.01)
        found = searcher.search_embeddings(victim.vectors, faces_mode=True, k=20)
        assert not {c.face_id for a in found for c in a.candidates} & set(victim.ids.tolist())
        scores, ids = searcher.index.search(victim.vectors, 20)
        assert not set(ids.ravel().tolist()) & set(victim.ids.tolist())


# --- 15. CLI arguments no command can use are messages, not tracebacks -----------------------------


@pytest.mark.parametrize("args", [
    ["faces", "crop", str(2**63), "-o", "x.jpg"], ["faces", "delete", str(2**63)], ["faces", "erase", str(2**63)],
    ["faces", "relabel", str(2**63), "--name", "x"], ["clusters", "show", str(2**63)],
    ["calibrate", "--target-fpir", "0"],
])
def test_ids_past_sqlite_and_a_zero_fpir_are_refused_with_a_message(tmp_path: Path, args: list[str]) -> None:
    with Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(8), unit_vectors(4, 8, seed=0))
    result = runner.invoke(app, [*args, "--gallery", str(tmp_path / "g")])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert str(2**63 - 1) in result.output or "above 0" in result.output, result.output


def test_calibrating_for_no_false_positives_at_all_is_a_calibration_error() -> None:
    from gallery.errors import CalibrationError
    from search.calibrate import calibrate

    with pytest.raises(CalibrationError, match="above 0"):
        calibrate(None, target_fpir=0)  # type: ignore[arg-type]
