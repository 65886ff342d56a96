"""`gallery backup` / `gallery restore`: consistent while writes go on, checked on the way back, and a
backup can be searched where it lies, also read-only."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gallery.app.erasure import erase
from gallery.app.maintenance import check
from gallery.cli import app
from gallery.errors import GalleryError, IndexBusyError
from gallery.faces.models import get_model_spec, registered
from gallery.store import Gallery, append_embedded_faces
from gallery.store.erase import ErasureSelection
from indexer import build_index, load_index, update_index
from indexer.backup import backup, restore
from search import Searcher
from search.decision import BEST_FACE
from tests.helpers.galleries import stamp, unit_vectors

DIM = 16
runner = CliRunner()


@pytest.fixture
def model():
    spec = replace(get_model_spec("facenet-untrained"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test", default_threshold=0.5)
    with registered(spec):
        yield


def make(root: Path, n: int = 300) -> np.ndarray:
    x = unit_vectors(n, DIM, seed=11)
    with Gallery.open_or_create(root) as g:
        for start in range(0, n, 100):
            append_embedded_faces(g, stamp(DIM), x[start:start + 100], identities=[f"p{i % 7}" for i in range(100)])
        build_index(g, factory="IVF4,PQ8x4fs", rerank=True)
    return x


def test_backup_is_consistent_while_writes_go_on_and_restores(tmp_path: Path, model) -> None:
    root = tmp_path / "g"
    x = make(root)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:  # ingests, index updates and erasures all the while
        try:
            with Gallery.open(root) as g:
                n = 0
                while not stop.is_set() and n < 30:
                    ids = append_embedded_faces(g, stamp(DIM), unit_vectors(20, DIM, seed=100 + n))
                    try:
                        update_index(g)
                    except IndexBusyError:  # the backup holds the index for its snapshot: later
                        pass
                    erase(g, ErasureSelection(face_ids=[int(ids[0])]), "faces erase")
                    n += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    reports = [backup(root, tmp_path / f"b{i}") for i in range(3)]
    stop.set()
    thread.join()
    assert not errors, errors
    for report in reports:
        b = Path(report["backup"])
        assert (b / "BACKUP.json").is_file() and report["bytes"]["total"] > 0 and report["mb_per_s"] > 0
        with Gallery.open(b, read_only=True) as g:  # as it lies
            assert [f.detail for f in check(g) if not f.ok and f.area != "erasure"] == []
    restored = tmp_path / "r"
    result = restore(tmp_path / "b2", restored)
    assert result["faces"] > 0
    assert [f.detail for f in check(restored) if not f.ok and f.area != "erasure"] == []
    with load_index(restored) as index:
        assert (index.search(x[:50], 1)[1][:, 0] == np.arange(1, 51)).all()
    # the way back refuses what it cannot trust
    with pytest.raises(GalleryError, match="not an empty folder"):
        restore(tmp_path / "b2", restored)
    broken = tmp_path / "b-broken"
    shutil.copytree(tmp_path / "b1", broken)
    shard = next((broken / "shards").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(GalleryError, match="damaged"):
        restore(broken, tmp_path / "r2")
    (broken / "BACKUP.json").unlink()
    with pytest.raises(GalleryError, match="not a complete backup"):
        restore(broken, tmp_path / "r3")


def test_cli_backup_and_restore(tmp_path: Path, model) -> None:
    make(tmp_path / "g", 100)
    result = runner.invoke(app, ["backup", str(tmp_path / "b"), "--gallery", str(tmp_path / "g"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["shards"] == 1
    result = runner.invoke(app, ["restore", str(tmp_path / "b"), str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["faces"] == 100
    assert runner.invoke(app, ["check", "--gallery", str(tmp_path / "r")]).exit_code == 0


def searched_read_only(root: Path, x: np.ndarray, read_only: bool | None) -> list[str | None]:
    with Searcher(root, k=1, threshold=0.5, rule=BEST_FACE) as searcher:
        assert searcher.gallery.read_only
        return [a.identity for a in searcher.search_embeddings(x[:5])]


def test_a_backup_is_searched_read_only_without_writing_a_byte(tmp_path: Path, model) -> None:
    x = make(tmp_path / "g", 100)
    backup(tmp_path / "g", tmp_path / "b")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "b").rglob("*")}
    with Gallery.open(tmp_path / "b", read_only=True) as g:
        with load_index(g) as index:
            assert (index.search(x[:20], 1)[1][:, 0] == np.arange(1, 21)).all()
        with pytest.raises(GalleryError, match="read-only"):
            with g.writer_lock():
                pass
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "b").rglob("*")} == before  # no -wal, no -shm


def test_a_backup_on_a_read_only_mount_can_be_searched(tmp_path: Path, model) -> None:
    x = make(tmp_path / "g", 100)
    backup(tmp_path / "g", tmp_path / "b")
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a file system is not permitted here (needs CAP_SYS_ADMIN)")
    try:
        shutil.copytree(tmp_path / "b", mount / "b")
        assert subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True).returncode == 0
        answers = searched_read_only(mount / "b", x, None)  # found read-only by itself
        assert answers == [f"p{i % 7}" for i in range(5)]
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
