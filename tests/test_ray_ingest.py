"""Distributed ingest on Ray Data, run in local mode: the same gallery as the local ingest, exactly once.

Ray starts once for the module with RAY_CPUS logical CPUs (a 2-core machine suffices): the embedding actor
reserves 2 of them (RayOptions.actor_cpus), so the decode tasks always have 2 slots and the actor can
never starve them. The killed-job test runs the CLI in a subprocess that joins this Ray (--address).
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
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gallery.ingest import IngestOptions, IngestSummary, ingest
from tests.conftest import LFW_IMAGES, REPO, lfw_available, lfw_photo

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False


def needs_ray_and_lfw(test):
    test = pytest.mark.skipif(not HAVE_RAY, reason="needs Ray Data: pip install 'face-gallery[ray]'")(test)
    return pytest.mark.skipif(not lfw_available(), reason=f"needs the LFW A–J photos at {LFW_IMAGES} "
                                                          "(../shared/data/lfw-aj beside the repository)")(test)


RAY_CPUS = 4  # logical CPUs: 2 for the one embedding actor, 2 for decode tasks (see the module docstring)
PEOPLE = {"Aaron_Peirsol": 3, "Abdullah_Gul": 4, "Alejandro_Toledo": 4, "Amelie_Mauresmo": 3}


def options(**overrides) -> IngestOptions:
    """MTCNN's answer for a photo depends slightly on which photos share its detection batch (CPU kernels
    differ with the batch's size and padding): galleries compared face by face detect one photo at a time."""
    return replace(IngestOptions(model="facenet-untrained", workers=0, detect_batch_size=1), **overrides)


@pytest.fixture(scope="module")
def ray_address() -> str:
    import ray

    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False, object_store_memory=512 * 2**20)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14 LFW photos of 4 people (symlinks), a duplicate, and 4 files that cannot give a face."""
    src = tmp_path_factory.mktemp("ray") / "archive"
    for name, count in PEOPLE.items():
        (src / name).mkdir(parents=True)
        for i in range(1, count + 1):
            (src / name / lfw_photo(name, i).name).symlink_to(lfw_photo(name, i))
    (src / "copies").mkdir()
    (src / "copies" / "same.jpg").symlink_to(lfw_photo("Abdullah_Gul", 1))  # same content: one image
    bad = src / "junk"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.JPG").write_text("not a photo")
    data = lfw_photo("Alejandro_Toledo", 1).read_bytes()
    (bad / "cut.jpeg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", (200, 200), (90, 90, 90)).save(bad / "wall.png")  # no face
    return src


@pytest.fixture(scope="module")
def local_ref(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IngestSummary]:
    gallery = tmp_path_factory.mktemp("ref") / "g"
    return gallery, ingest(archive, gallery, options())


def db_rows(gallery: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(gallery / "gallery.db")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def content(gallery: Path) -> dict:
    """What the gallery holds, independent of id order: files, photos by content, faces per photo."""
    files = {p: (status, reason) for p, status, reason in db_rows(gallery, "SELECT path, status, reason FROM files")}
    images = {sha: (status, reason, n) for sha, status, reason, n in
              db_rows(gallery, "SELECT sha256, status, reason, n_faces FROM images")}
    faces: dict[str, list] = {}
    for sha, x1, y1, x2, y2, main, name in db_rows(
        gallery,
        "SELECT i.sha256, f.x1, f.y1, f.x2, f.y2, f.is_main, d.name FROM faces f JOIN images i USING (image_id) "
        "LEFT JOIN identities d ON d.identity_id = f.identity_id",
    ):
        faces.setdefault(sha, []).append((x1, y1, x2, y2, main, name))
    return {"files": files, "images": images, "faces": {k: sorted(v) for k, v in faces.items()}}


def assert_same_gallery(got: Path, want: Path) -> None:
    a, b = content(got), content(want)
    assert a["files"] == b["files"]  # every file once, same status and failure reason
    assert a["images"] == b["images"]  # same photos (by content), same outcome, same face counts
    assert a["faces"].keys() == b["faces"].keys()
    for sha, faces in b["faces"].items():
        mine = a["faces"][sha]
        assert [f[4:] for f in mine] == [f[4:] for f in faces], sha  # main face and its label
        # CPU conv kernels differ slightly with the detection batch's make-up: boxes agree within 3 px
        np.testing.assert_allclose(np.array([f[:4] for f in mine]), np.array([f[:4] for f in faces]), atol=3.0)
    # one id everywhere: Parquet holds exactly the committed faces, and nothing is left staged
    parquet_ids = sorted(i for s in (got / "shards").glob("*.parquet")
                         for i in pq.read_table(s, columns=["face_id"]).column(0).to_pylist())
    assert parquet_ids == [r[0] for r in db_rows(got, "SELECT face_id FROM faces ORDER BY face_id")]
    assert not (got / "staging").exists()


@needs_ray_and_lfw
def test_ray_ingest_equals_local_even_when_a_worker_dies_and_a_rerun_adds_nothing(
    ray_address: str, archive: Path, local_ref: tuple[Path, IngestSummary], tmp_path: Path
) -> None:
    ref_gallery, ref = local_ref
    killed: list[int] = []

    def kill_the_embedding_actor(_event) -> None:
        """At the first committed batch, kill the actor's process: Ray restarts it and retries its batches."""
        if not killed:
            for proc in psutil.process_iter(["cmdline"]):
                if any("EmbedStage" in part for part in proc.info["cmdline"] or []):
                    proc.kill()
                    killed.append(proc.pid)

    summary = ingest(archive, tmp_path / "g", options(), on_progress=kill_the_embedding_actor, engine="ray")
    assert killed, "no embedding actor process was found to kill"
    assert summary.device.startswith("ray: 1 actor(s) on cpu")
    for key in ("files_seen", "photos", "photos_with_faces", "faces", "labeled_faces", "duplicates", "failed",
                "failures"):
        assert getattr(summary, key) == getattr(ref, key), key
    # bad files are recorded with the local ingest's reasons
    assert summary.failures["empty_file"] == 1 and summary.failures["not_an_image"] == 1
    assert summary.failures["no_face"] == 1
    assert summary.failures.get("truncated", 0) + summary.failures.get("decode_error", 0) == 1
    assert summary.duplicates == 1 and summary.labeled_faces == sum(PEOPLE.values())
    assert_same_gallery(tmp_path / "g", ref_gallery)

    again = ingest(archive, tmp_path / "g", options(), engine="ray")
    assert again.photos == 0 and again.faces == 0 and again.skipped == summary.files_seen
    assert again.device.endswith("nothing to read)")  # no cluster work at all


@needs_ray_and_lfw
def test_interrupted_driver_leaves_staged_work_that_is_committed_once(
    ray_address: str, archive: Path, local_ref: tuple[Path, IngestSummary], tmp_path: Path
) -> None:
    """The driver stops after taking its first staged file (uncommitted); the next run commits the
    staged files left behind without recomputing them, and staged files that were already committed
    (a driver killed between commit and clean-up) add nothing."""
    gallery = tmp_path / "g"

    def stop(_event) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest(archive, gallery, options(), on_progress=stop, engine="ray")
    left = sorted((gallery / "staging").glob("staged-*.parquet"))
    assert left, "the interrupted run left no staged file"
    assert db_rows(gallery, "SELECT count(*) FROM faces") == [(0,)]
    kept = tmp_path / "kept"
    kept.mkdir()
    for path in left:
        shutil.copy2(path, kept / path.name)

    from gallery.ingest.distributed import RayIngestor, RayOptions
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        runner = RayIngestor(archive, g, options(), RayOptions())
        runner.run()
    assert runner.staged_reused >= 1  # the staged work was committed, not computed again
    assert_same_gallery(gallery, local_ref[0])

    # staged files whose photos are already committed (as a driver killed after its commit leaves them)
    (gallery / "staging").mkdir()
    for path in kept.iterdir():
        shutil.copy2(path, gallery / "staging" / path.name)
    (gallery / "staging" / ".staged-0000.parquet.123.tmp").write_bytes(b"half")  # a killed worker's
    again = ingest(archive, gallery, options(), engine="ray")
    assert again.photos == 0 and again.faces == 0
    assert_same_gallery(gallery, local_ref[0])  # also: the staging folder is gone


@needs_ray_and_lfw
def test_killed_job_then_the_same_command_has_every_face_once(
    ray_address: str, archive: Path, local_ref: tuple[Path, IngestSummary], tmp_path: Path
) -> None:
    gallery = tmp_path / "g"
    cmd = [sys.executable, "-m", "gallery.cli", "ingest", str(archive), "--gallery", str(gallery),
           "--model", "facenet-untrained", "--engine", "ray", "--address", ray_address, "--batch-size", "1",
           "--shard-size", "3", "--commit-interval", "0", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db_path = gallery / "gallery.db"
    deadline = time.time() + 150
    shards = 0
    while time.time() < deadline and proc.poll() is None:
        if db_path.exists():
            try:
                shards = db_rows(gallery, "SELECT count(*) FROM shards")[0][0]
            except sqlite3.OperationalError:
                shards = 0
            if shards >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"the job ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = db_rows(gallery, "SELECT count(*) FROM faces")[0][0]
    assert 0 < partial < local_ref[1].faces

    result = subprocess.run([*cmd[:-1], "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = json.loads(result.stdout)
    assert resumed["skipped"] > 0 and resumed["files_seen"] == local_ref[1].files_seen
    assert_same_gallery(gallery, local_ref[0])


def test_staged_files_round_trip_and_are_checked(tmp_path: Path) -> None:
    """The store's staging format: photos with several faces, none, or a failure keep their rows;
    names depend on the photos only; another model's file, a damaged vector and temp files are handled."""
    from gallery.errors import DamagedData
    from gallery.store.staging import StagedPhoto, read_staged, remove_partial, staged_name, write_staged

    stamp = {"name": "m", "dim": 3, "input_size": 8, "preprocessing": "p"}
    unit = np.eye(3, dtype=np.float32)
    photos = [
        StagedPhoto("a.jpg", 10, 1, "aa", 50, 40, main=1, boxes=np.arange(8, dtype=np.float32).reshape(2, 4),
                    scores=np.array([0.95, 0.99], np.float32),
                    landmarks=np.arange(20, dtype=np.float32).reshape(2, 5, 2), embeddings=unit[:2]),
        StagedPhoto("b.jpg", 11, 2, None, reason="unreadable", detail="PermissionError: denied"),
        StagedPhoto("c.jpg", 12, 3, "cc", 30, 30, reason="no_face", detail="no face found by the detector"),
        StagedPhoto("d.jpg", 13, 4, "dd", 60, 60, main=0, boxes=np.ones((1, 4), np.float32),
                    scores=np.ones(1, np.float32), landmarks=np.ones((1, 5, 2), np.float32), embeddings=unit[2:]),
    ]
    keys = [(p.path, p.size, p.mtime_ns) for p in photos]
    assert staged_name(keys) == staged_name(keys[::-1]) != staged_name(keys[:3])
    name = staged_name(keys)
    write_staged(tmp_path, name, photos, stamp)
    back = read_staged(tmp_path / name, stamp)
    assert [(p.path, p.size, p.mtime_ns, p.sha256, p.reason, p.detail, p.main) for p in back] == [
        (p.path, p.size, p.mtime_ns, p.sha256, p.reason, p.detail, p.main) for p in photos]
    for got, want in zip(back, photos):
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.landmarks, want.landmarks)
        if want.embeddings is None:
            assert got.embeddings is None
        else:
            np.testing.assert_array_equal(got.embeddings, want.embeddings)

    with pytest.raises(DamagedData, match="another model"):
        read_staged(tmp_path / name, {**stamp, "name": "other"})
    bad = replace(photos[3], embeddings=np.full((1, 3), 2.0, np.float32))
    with pytest.raises(DamagedData, match="not finite unit vectors"):
        write_staged(tmp_path, "staged-bad.parquet", [bad], stamp)
    (tmp_path / ".staged-x.parquet.1.tmp").write_bytes(b"half")
    assert remove_partial(tmp_path) == [".staged-x.parquet.1.tmp"] and (tmp_path / name).exists()
    (tmp_path / "staged-cut.parquet").write_bytes((tmp_path / name).read_bytes()[:100])
    with pytest.raises(DamagedData, match="cannot be read"):
        read_staged(tmp_path / "staged-cut.parquet", stamp)
