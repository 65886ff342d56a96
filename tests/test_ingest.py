"""End-to-end ingestion on real LFW photos: labels, multi-face photos, bad inputs, dedup, resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gallery.ingest import IngestOptions, ingest
from gallery.store import Gallery, ModelMismatch
from tests.conftest import REPO, copy_lfw_people, lfw_photo, requires_lfw

pytestmark = requires_lfw


def fast_options(**overrides) -> IngestOptions:
    return replace(IngestOptions(model="facenet-untrained", workers=0, detect_batch_size=8), **overrides)


def gallery_faces(gallery_dir: Path) -> list[tuple]:
    con = sqlite3.connect(gallery_dir / "gallery.db")
    rows = con.execute(
        "SELECT f.face_id, i.sha256, f.x1, f.y1, f.is_main, f.identity_id, f.shard_id "
        "FROM faces f JOIN images i USING (image_id) ORDER BY f.face_id"
    ).fetchall()
    con.close()
    return rows


def parquet_face_ids(gallery_dir: Path) -> list[int]:
    ids: list[int] = []
    for shard in sorted((gallery_dir / "shards").glob("*.parquet")):
        ids.extend(pq.read_table(shard, columns=["face_id"]).column(0).to_pylist())
    return ids


def test_labeled_lfw_ingest_is_plausible(tmp_path: Path) -> None:
    src = tmp_path / "archive"
    copy_lfw_people(src, {"Aaron_Peirsol": 4, "Abdullah_Gul": 8, "Alejandro_Toledo": 8, "Amelie_Mauresmo": 6})
    summary = ingest(src, tmp_path / "g", fast_options())
    assert summary.photos == 26 and summary.failed == 0
    assert summary.photos_with_faces == 26 and summary.faces >= 26
    assert summary.labeled_faces == 26  # exactly one labeled (main) face per LFW photo

    with Gallery.open(tmp_path / "g") as g:
        info = g.info()
        assert info.identities == 4 and info.photos == 26 and info.faces == summary.faces
        assert dict(g.identities()) == {
            "Abdullah_Gul": 8,
            "Alejandro_Toledo": 8,
            "Amelie_Mauresmo": 6,
            "Aaron_Peirsol": 4,
        }
        assert info.model["name"] == "facenet-untrained" and info.dim == 512

    # Shards: unit vectors, ids matching SQLite, boxes inside the 250x250 photo, landmarks in the box.
    table = pq.read_table(next((tmp_path / "g" / "shards").glob("*.parquet")))
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert sorted(table.column("face_id").to_pylist()) == [r[0] for r in gallery_faces(tmp_path / "g")]
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    main_ids = {r[0] for r in con.execute("SELECT face_id FROM faces WHERE is_main")}
    for face_id, box, lm in zip(
        table.column("face_id").to_pylist(), table.column("box").to_pylist(), table.column("landmarks").to_pylist()
    ):
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= 250 and 0 <= y1 < y2 <= 250
        if face_id in main_ids:
            # LFW photos are centred on their subject: the main face is big and near the centre.
            assert x2 - x1 > 60 and abs((x1 + x2) / 2 - 125) < 40 and abs((y1 + y2) / 2 - 125) < 40
            pts = np.asarray(lm).reshape(5, 2)
            assert (pts[:, 0] > x1 - 5).all() and (pts[:, 0] < x2 + 5).all()
            assert pts[0, 0] < pts[1, 0]  # left eye left of right eye
            assert pts[2, 1] > pts[0, 1] and pts[3, 1] > pts[2, 1]  # nose below eyes, mouth below nose
    assert len(main_ids) == 26


def test_multi_face_photo_labels_only_the_main_face(tmp_path: Path) -> None:
    src = tmp_path / "archive" / "Abdullah_Gul"
    src.mkdir(parents=True)
    # A group photo: the labeled person big in the middle, two others smaller on the sides.
    canvas = Image.new("RGB", (900, 400), (128, 128, 128))
    canvas.paste(Image.open(lfw_photo("Aaron_Peirsol", 1)).resize((180, 180)), (20, 110))
    canvas.paste(Image.open(lfw_photo("Abdullah_Gul", 1)).resize((300, 300)), (300, 50))
    canvas.paste(Image.open(lfw_photo("Alejandro_Toledo", 1)).resize((180, 180)), (700, 110))
    canvas.save(src / "group.png")
    summary = ingest(tmp_path / "archive", tmp_path / "g", fast_options())
    assert summary.faces >= 3
    rows = gallery_faces(tmp_path / "g")
    assert len(rows) == summary.faces
    labeled = [r for r in rows if r[5] is not None]
    assert len(labeled) == 1 and labeled[0][4] == 1  # the main face, and only it
    assert 300 <= labeled[0][2] < 450  # ...which is the big central one


def test_bad_inputs_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    src = tmp_path / "archive"
    copy_lfw_people(src, {"Aaron_Peirsol": 3})
    bad = src / "junk"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.JPG").write_text("not a photo")
    data = lfw_photo("Abdullah_Gul", 1).read_bytes()
    (bad / "cut.jpeg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", (200, 200), (90, 90, 90)).save(bad / "wall.png")  # no face
    from tests.test_decode import _png_header_only

    _png_header_only(bad / "bomb.png", 30_000, 30_000)
    summary = ingest(src, tmp_path / "g", fast_options(workers=1))  # through the worker pool
    assert summary.photos_with_faces == 3
    assert summary.failed == 5
    assert summary.failures["empty_file"] == 1 and summary.failures["not_an_image"] == 1
    assert summary.failures["no_face"] == 1 and summary.failures["too_large"] == 1
    assert summary.failures.get("truncated", 0) + summary.failures.get("decode_error", 0) == 1
    with Gallery.open(tmp_path / "g") as g:
        info = g.info()
    assert info.failed == 5 and info.photos == 3
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    reasons = dict(con.execute("SELECT path, reason FROM files WHERE status = 'failed'").fetchall())
    assert reasons[str(bad / "wall.png")] == "no_face"
    # A second run retries nothing: failures are remembered with their reason.
    again = ingest(src, tmp_path / "g", fast_options())
    assert again.photos == 0 and again.skipped == 8 and again.faces == 0


def test_identical_files_are_one_image(tmp_path: Path) -> None:
    src = tmp_path / "archive"
    copy_lfw_people(src, {"Aaron_Peirsol": 2})
    (src / "copies").mkdir()
    (src / "copies" / "same.jpg").write_bytes(lfw_photo("Aaron_Peirsol", 1).read_bytes())
    # commit_interval 0: commits are due after every photo, while the copy's original is in the open batch.
    summary = ingest(src, tmp_path / "g", fast_options(commit_interval=0.0))
    assert summary.duplicates == 1 and summary.photos == 2
    # A later run with another copy elsewhere also sees it as the same image.
    (src / "copies" / "again.jpg").write_bytes(lfw_photo("Aaron_Peirsol", 2).read_bytes())
    second = ingest(src, tmp_path / "g", fast_options())
    assert second.duplicates == 1 and second.faces == 0
    with Gallery.open(tmp_path / "g") as g:
        assert g.info().photos == 2 and g.info().duplicates == 2


def test_model_mismatch_is_refused(tmp_path: Path, lfw_archive: Path) -> None:
    ingest(lfw_archive, tmp_path / "g", fast_options())
    from gallery.faces.models import get_model_spec, registered

    untrained = get_model_spec("facenet-untrained")
    with registered(replace(untrained, name="test-other-model", preprocessing="other")) as other:
        with pytest.raises(ModelMismatch, match="facenet-untrained"):
            ingest(lfw_archive, tmp_path / "g", fast_options(model=other.name))


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    src = tmp_path / "archive"
    copy_lfw_people(src, {"Abdullah_Gul": 6, "Alejandro_Toledo": 6, "Amelie_Mauresmo": 6})
    reference = ingest(src, tmp_path / "ref", fast_options(detect_batch_size=2))  # same batches as below

    cmd = [
        sys.executable,
        "-m",
        "gallery.cli",
        "ingest",
        str(src),
        "--gallery",
        str(tmp_path / "g"),
        "--model",
        "facenet-untrained",
        "--workers",
        "1",
        "--batch-size",
        "2",
        "--shard-size",
        "3",
        "--commit-interval",
        "0",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db_path = tmp_path / "g" / "gallery.db"
    deadline = time.time() + 120
    shards = 0
    while time.time() < deadline and proc.poll() is None:
        if db_path.exists():
            try:
                con = sqlite3.connect(db_path, timeout=1)
                shards = con.execute("SELECT count(*) FROM shards").fetchone()[0]
                con.close()
            except sqlite3.OperationalError:
                shards = 0
            if shards >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"ingest ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(gallery_faces(tmp_path / "g"))
    assert 0 < partial < reference.faces

    result = subprocess.run([*cmd, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    resumed = json.loads(result.stdout)
    assert resumed["skipped"] > 0

    rows = gallery_faces(tmp_path / "g")
    ref_rows = gallery_faces(tmp_path / "ref")

    # Every face exactly once: the same faces per photo as an uninterrupted run, at the same places
    # (within 3 px: CPU conv kernels differ slightly with batch size), and no photo twice.
    def faces_by_photo(rs: list[tuple]) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = {}
        for r in rs:
            out.setdefault(r[1], []).append((r[2], r[3]))
        return {k: sorted(v) for k, v in out.items()}

    got, want = faces_by_photo(rows), faces_by_photo(ref_rows)
    assert got.keys() == want.keys()
    for sha, boxes in want.items():
        assert len(got[sha]) == len(boxes), sha
        assert np.allclose(np.asarray(got[sha]), np.asarray(boxes), atol=3.0), sha
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    assert con.execute("SELECT count(*), count(DISTINCT sha256) FROM images").fetchone() == (18, 18)
    con.close()
    # One id everywhere: Parquet holds exactly the committed faces (crash leftovers are removed).
    assert sorted(parquet_face_ids(tmp_path / "g")) == [r[0] for r in rows]
    assert not list((tmp_path / "g" / "shards").glob("*.tmp"))


def test_orphan_shard_from_a_crash_is_removed(tmp_path: Path, lfw_archive: Path) -> None:
    ingest(lfw_archive, tmp_path / "g", fast_options())
    stray = tmp_path / "g" / "shards" / "shard-00000099.parquet"
    stray.write_bytes(b"half-written")
    (tmp_path / "g" / "shards" / "shard-00000100.parquet.tmp").write_bytes(b"x")
    summary = ingest(lfw_archive, tmp_path / "g", fast_options())
    assert summary.orphans_removed == 2 and not stray.exists()
