"""The gallery never lies and never hangs: each numbered finding has a test here.

1 damaged shards are named, never indexed or served; 2 special and huge files are refused without
reading; 3 killed runs leave no process behind, SIGTERM exits 130; 4 lost shards, half-created
galleries and damaged databases are found and repaired or refused; 5 faults are messages, not
tracebacks; 6 names cannot inject markup or escapes, CSV is strict, numeric options are validated.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gallery.cli import app
from gallery.faces.decode import decode_photo
from gallery.faces.models import get_model_spec, registered
from gallery.store import Gallery, append_embedded_faces
from gallery.store.integrity import wal_problem
from gallery.store.shards import file_sha256
from indexer import build_index
from search.decision import BEST_FACE
from tests.conftest import REPO, copy_lfw_people, lfw_photo, requires_lfw
from tests.helpers.galleries import stamp, unit_vectors

runner = CliRunner()
DIM = 8


def invoke(*args: str) -> tuple[int, str]:
    """(exit code, stdout, or everything printed for a command without --json)."""
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stdout if "--json" in args else result.output


@pytest.fixture
def synthetic(tmp_path: Path):
    """Two shards of 20 faces (people p0..p3) with a flat index, under a registered test model."""
    spec = replace(get_model_spec("facenet-untrained"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test", default_threshold=0.5)
    with registered(spec), Gallery.open_or_create(tmp_path / "g") as g:
        for seed in (0, 1):
            append_embedded_faces(g, stamp(DIM), unit_vectors(20, DIM, seed=seed),
                                  identities=[f"p{i % 4}" for i in range(20)], photo_prefix=f"/archive/{seed}")
        build_index(g)
        yield tmp_path / "g"


# --- 1. a damaged shard is named, never indexed -------------------------------------------------------


@pytest.mark.parametrize("position", [0.0, 0.2, 0.45, 0.6, 0.8, 0.95, 1.0])
def test_random_bytes_in_a_shard_are_caught(synthetic: Path, position: float) -> None:
    shard = sorted((synthetic / "shards").glob("*.parquet"))[1]
    data = bytearray(shard.read_bytes())
    at = min(int(position * len(data)), len(data) - 64)
    data[at : at + 64] = np.random.default_rng(int(position * 100)).bytes(64)
    shard.write_bytes(bytes(data))
    code, out = invoke("index", "build", "--gallery", str(synthetic))
    assert code == 2 and shard.name in out and "gallery repair" in out
    code, out = invoke("check", "--gallery", str(synthetic))
    assert code == 1 and shard.name in out
    code, out = invoke("repair", "--gallery", str(synthetic), "--json")
    result = json.loads(out)  # the flat index holds every vector: nothing is lost
    assert code == 0 and result["faces_dropped"] == 0 and result["restored_from"] == {"flat-index": 20}
    assert invoke("check", "--gallery", str(synthetic))[0] == 0
    assert invoke("index", "build", "--gallery", str(synthetic))[0] == 0


def test_huge_vectors_with_a_valid_checksum_are_refused(synthetic: Path) -> None:
    """The 1e38 case of the finding: a shard rewritten with absurd vectors (and its checksum updated,
    as an old gallery without checksums would be) is still refused, not indexed."""
    shard = sorted((synthetic / "shards").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    flat = np.full(20 * DIM, 1e38, np.float32)
    table = table.set_column(2, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(flat), DIM))
    pq.write_table(table, shard)
    con = sqlite3.connect(synthetic / "gallery.db")
    with con:
        con.execute("UPDATE shards SET sha256 = ?, bytes = ? WHERE filename = ?",
                    (file_sha256(shard), shard.stat().st_size, shard.name))
    con.close()
    code, out = invoke("index", "build", "--gallery", str(synthetic))
    assert code == 2 and "not finite unit vectors" in out and shard.name in out


# --- 2. special and huge files -------------------------------------------------------------------------


def test_special_and_huge_files_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    sparse = tmp_path / "huge.jpg"
    with open(sparse, "wb") as fh:
        fh.truncate(300 * 2**20)  # 300 MiB, no data blocks
    t0 = time.monotonic()
    assert decode_photo(str(fifo), 0, 0).reason == "not_a_regular_file"  # a FIFO never hangs
    assert "character device" in (decode_photo(str(zero), 0, 0).detail or "")
    huge = decode_photo(str(sparse), 0, 0)
    assert huge.reason == "file_too_large" and huge.sha256 is None  # refused before reading
    assert decode_photo(str(sparse), 0, 0, max_file_bytes=2**30).reason == "not_an_image"
    assert time.monotonic() - t0 < 30


def test_ingest_records_special_files_and_search_answers_them(tmp_path: Path, synthetic: Path) -> None:
    src = tmp_path / "archive"
    src.mkdir()
    os.mkfifo(src / "pipe.jpg")
    (src / "zero.jpg").symlink_to("/dev/zero")
    code, out = invoke("ingest", str(src), "--gallery", str(tmp_path / "new"), "--model", "facenet-untrained",
                       "--workers", "1", "--json")
    assert code == 0, out
    assert json.loads(out)["failures"] == {"not_a_regular_file": 2}
    code, out = invoke("search", str(src / "pipe.jpg"), "--gallery", str(synthetic), "--json", "--device", "cpu")
    assert code == 1 and json.loads(out.splitlines()[0])["error"] == "not_a_regular_file"


# --- 3. killed runs leave nothing behind -----------------------------------------------------------


def _ingest_process(tmp_path: Path, src: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    cmd = [sys.executable, "-m", "gallery.cli", "ingest", str(src), "--gallery", str(tmp_path / "g"), "--model",
           "facenet-untrained", "--workers", "2", "--batch-size", "2", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    parent = psutil.Process(proc.pid)
    deadline = time.time() + 120
    children: list[psutil.Process] = []
    while time.time() < deadline and proc.poll() is None:
        children = parent.children(recursive=True)
        if len(children) >= 3:  # two decode workers and the resource tracker
            break
        time.sleep(0.1)
    assert proc.poll() is None and len(children) >= 2, "the ingest ended before its workers could be seen"
    return proc, children


@requires_lfw
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_no_worker_survives_its_parent(tmp_path: Path, sig: signal.Signals) -> None:
    src = tmp_path / "archive"
    copy_lfw_people(src, {"George_W_Bush": 40})
    proc, children = _ingest_process(tmp_path, src)
    time.sleep(1.0)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, [p.pid for p in alive]
    if sig == signal.SIGTERM:
        assert code == 130, proc.stderr.read().decode()[-2000:]
        stderr = proc.stderr.read().decode()
        assert "Traceback" not in stderr and "interrupted" in stderr
        con = sqlite3.connect(tmp_path / "g" / "gallery.db")
        assert con.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
        con.close()


# --- 4. damage that can be repaired (or is refused) ---------------------------------------------------


def test_a_deleted_shard_is_found_and_repaired_for_reingest(synthetic: Path) -> None:
    shard = sorted((synthetic / "shards").glob("*.parquet"))[0]
    shard.unlink()
    code, out = invoke("info", "--gallery", str(synthetic))
    assert code == 0 and "missing" in out
    code, out = invoke("check", "--gallery", str(synthetic), "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"] and any("missing" in f["detail"] for f in report["findings"])
    code, out = invoke("repair", "--gallery", str(synthetic), "--json")
    result = json.loads(out)
    assert result["shards_rebuilt"] == 1 and result["faces_restored"] == 20 and result["index"] == "ok"
    with Gallery.open(synthetic) as g:
        assert g.live_face_count() == 40 and g.quick_problems() == []


def test_a_shard_with_no_copy_and_no_photo_is_dropped_for_reingest(synthetic: Path) -> None:
    """Only what no copy and no photo restores is dropped, each face named with the reason."""
    shutil.rmtree(synthetic / "index")
    sorted((synthetic / "shards").glob("*.parquet"))[0].unlink()
    code, out = invoke("repair", "--gallery", str(synthetic), "--json")
    result = json.loads(out)
    assert code == 0 and result["shards_dropped"] == 1 and result["photos_to_reingest"] == 20
    assert result["faces_dropped"] == 20 and len(result["dropped"]) == 20
    assert all("photo is gone" in d["why"] and d["photo"].startswith("/archive/0") for d in result["dropped"])
    assert result["index"] == "rebuilt"  # the gallery had one: rebuilt with its own settings
    with Gallery.open(synthetic) as g:
        assert g.live_face_count() == 20 and g.quick_problems() == []


def test_half_created_gallery_is_finished_and_stale_runs_closed(tmp_path: Path, synthetic: Path) -> None:
    half = tmp_path / "half"
    (half / "shards").mkdir(parents=True)
    (half / "index").mkdir()
    (half / ".ingest.lock").touch()
    with Gallery.open_or_create(half) as g:  # was refused forever
        assert g.info().faces == 0
    con = sqlite3.connect(synthetic / "gallery.db")
    with con:
        con.execute("INSERT INTO runs (started_at, source, status, photos, faces, failed, args) "
                    "VALUES (0, 'x', 'running', 0, 0, 0, '{}')")
    con.close()
    code, out = invoke("check", "--gallery", str(synthetic), "--json")
    assert code == 1 and any("still marked running" in f["detail"] for f in json.loads(out)["findings"])
    assert json.loads(invoke("repair", "--gallery", str(synthetic), "--json")[1])["stale_runs_closed"] == 1
    assert invoke("check", "--gallery", str(synthetic))[0] == 0


def test_a_damaged_database_is_refused_by_writers(synthetic: Path) -> None:
    db = synthetic / "gallery.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in gallery.db itself
    con.close()
    data = bytearray(db.read_bytes())
    page = 4096
    for n in range(2, len(data) // page):  # scribble over every page but the schema's
        data[n * page + 100 : n * page + 400] = b"\xff" * 300
    db.write_bytes(bytes(data))
    code, out = invoke("index", "build", "--gallery", str(synthetic))
    assert code == 2 and ("damaged" in out or "database" in out)
    code, out = invoke("check", "--gallery", str(synthetic))
    assert code in (1, 2) and "database" in out


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_an_unopenable_database_is_a_finding_with_the_way_out(synthetic: Path, damage: str) -> None:
    """Was: check and repair exited 2 with "`gallery check` tells" (a loop)."""
    db = synthetic / "gallery.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\0" * 100 + data[100:])
    for command in ("check", "repair"):
        code, out = invoke(command, "--gallery", str(synthetic), "--json")
        assert code == 1, out
        text = json.dumps(json.loads(out))
        assert "cannot be opened" in text and "gallery restore" in text and "check --gallery" not in text
    code, out = invoke("info", "--gallery", str(synthetic))
    assert code == 2 and "gallery restore" in out and "tells" not in out


# --- 5. faults are messages ---------------------------------------------------------------------------


def test_truncated_index_and_garbage_manifest_are_messages(synthetic: Path) -> None:
    manifest = json.loads((synthetic / "index" / "manifest.json").read_text())
    index_file = synthetic / "index" / manifest["index_file"]
    index_file.write_bytes(index_file.read_bytes()[:100])
    code, out = invoke("search", "/nonexistent.jpg", "--gallery", str(synthetic))
    # a damaged index is never read: the search is answered by an exact scan, with the way out
    assert code == 1 and "/nonexistent.jpg: unreadable" in out
    assert "is damaged" in out and "exact scan" in out and "gallery repair" in out
    assert invoke("check", "--gallery", str(synthetic))[0] == 1
    (synthetic / "index" / "manifest.json").write_text("{not json")
    code, out = invoke("search", "/nonexistent.jpg", "--gallery", str(synthetic))
    assert code == 2 and "manifest" in out and "gallery index build" in out


def test_csv_faults_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    long_field = tmp_path / "long.csv"
    long_field.write_text("a.jpg,ok\nb.jpg," + "x" * 140_000 + "\n")
    code, out = invoke("ingest", str(tmp_path / "photos"), "--gallery", str(tmp_path / "g"), "--model",
                       "facenet-untrained", "--labels", f"csv:{long_field}")
    assert code == 2 and "long.csv:2" in out and "not valid CSV" in out
    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text('a.jpg,"Ann\nb.jpg,Bob\nc.jpg,Cy\n')
    code, out = invoke("ingest", str(tmp_path / "photos"), "--gallery", str(tmp_path / "g"), "--model",
                       "facenet-untrained", "--labels", f"csv:{unclosed}")
    assert code == 2 and "unclosed.csv:" in out and "not valid CSV" in out
    conflict = tmp_path / "conflict.csv"  # was: the first row won in silence
    conflict.write_text("path,identity\na.jpg,Ann\nb.jpg,Bob\n./a.jpg,Eve\nb.jpg,Bob\n")
    code, out = invoke("ingest", str(tmp_path / "photos"), "--gallery", str(tmp_path / "g"), "--model",
                       "facenet-untrained", "--labels", f"csv:{conflict}")
    assert code == 2 and "conflict.csv:4" in out and "line 2" in out and "Ann" in out and "Eve" in out


# --- 6. safe output, strict input ---------------------------------------------------------------------


def test_names_cannot_inject_markup_or_escapes(synthetic: Path) -> None:
    with Gallery.open(synthetic) as g:
        g.rename_identity("p0", "[/]")
        g.rename_identity("p1", "[link=http://x]evil[/link]")
        g.rename_identity("p2", "\x1b[31mred\x1b[0m\rok")
    code, out = invoke("identities", "--gallery", str(synthetic))
    assert code == 0 and "[/]" in out and "[link=http://x]evil[/link]" in out
    assert "\x1b" not in out and "\r" not in out
    assert "\\x1b[31mred\\x1b[0m\\rok" in out  # shown inert, readable and typeable
    with Gallery.open(synthetic) as g:
        assert "\x1b[31mred\x1b[0m\rok" in {n for n, _ in g.identities()}  # stored as given


@pytest.mark.parametrize("option", [["--threshold", "nan"], ["--threshold", "inf"], ["--threshold", "-1000"],
                                    ["--nprobe", "0"], ["--nprobe", "-5"]])
def test_numeric_options_are_validated(synthetic: Path, option: list[str]) -> None:
    result = runner.invoke(app, ["search", str(lfw_photo("Aaron_Peirsol", 1)), "--gallery", str(synthetic),
                                 *option])
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_ids_are_never_reused_after_repair_or_erasure(tmp_path: Path) -> None:
    """Found by a new-user review: repairing a one-shard gallery reused face and shard ids, and the
    re-ingested faces were invisible (the index "covered" them)."""
    spec = replace(get_model_spec("facenet-untrained"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test", default_threshold=0.5)
    x = unit_vectors(12, DIM, seed=4)
    with registered(spec):
        with Gallery.open_or_create(tmp_path / "g") as g:
            append_embedded_faces(g, stamp(DIM), x[:6], identities=["a"] * 6)
            build_index(g)
        shard = next((tmp_path / "g" / "shards").glob("*.parquet"))
        shard.write_bytes(b"garbage" + shard.read_bytes()[7:])
        for vectors in (tmp_path / "g" / "index").glob("index-*"):  # no copy of a vector left anywhere
            vectors.write_bytes(b"garbage")
        result = json.loads(invoke("repair", "--gallery", str(tmp_path / "g"), "--json")[1])
        assert result["shards_dropped"] == 1 and result["index"].startswith("removed")
        assert invoke("check", "--gallery", str(tmp_path / "g"))[0] == 0
        with Gallery.open(tmp_path / "g") as g:
            new = append_embedded_faces(g, stamp(DIM), x[6:], identities=["b"] * 6)
            assert new.min() > 6 and g.shard_rows()[0].shard_id == 2
            build_index(g)
            g.delete_faces([int(new.max())])
        invoke("faces", "erase", str(int(new.max())), "--gallery", str(tmp_path / "g"))
        with Gallery.open(tmp_path / "g") as g:
            again = append_embedded_faces(g, stamp(DIM), x[:1], identities=["c"])
            assert int(again[0]) == int(new.max()) + 1  # the erased id is not given out again
        from search import Searcher

        with Searcher(tmp_path / "g", k=1, threshold=0.5, rule=BEST_FACE) as searcher:
            assert searcher.search_embeddings(x[6:7])[0].identity == "b"
            assert searcher.search_embeddings(x[:1])[0].identity == "c"  # in the un-indexed tail


def test_a_garbled_wal_that_loses_a_committed_relabel_is_a_finding(synthetic: Path, tmp_path: Path) -> None:
    """SQLite replays the log up to a frame whose checksum fails and drops the rest without a word."""
    keep = sqlite3.connect(synthetic / "gallery.db")  # holds the log open: no checkpoint at close
    keep.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with Gallery.open(synthetic) as g:
        g.relabel_faces([1], "Zed")
    crashed = tmp_path / "crashed"  # the files as a crash left them
    crashed.mkdir()
    for name in ("gallery.db", "gallery.db-wal"):
        shutil.copyfile(synthetic / name, crashed / name)
    shutil.copytree(synthetic / "shards", crashed / "shards")
    keep.close()
    wal = crashed / "gallery.db-wal"
    assert wal.stat().st_size > 32 and wal_problem(crashed / "gallery.db") is None  # intact: no finding
    data = bytearray(wal.read_bytes())
    data[-100] ^= 0xFF  # one byte of the last frame
    wal.write_bytes(bytes(data))
    code, out = invoke("check", "--gallery", str(crashed), "--json")
    findings = json.loads(out)["findings"]
    assert code == 1 and any("garbled" in f["detail"] and "lost" in f["detail"] for f in findings), findings
    with Gallery.open(crashed) as g:
        assert g.face_records([1])[1].identity != "Zed"  # the relabel is indeed gone: the finding was true
