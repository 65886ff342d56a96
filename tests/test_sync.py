"""`gallery sync`: the gallery follows the archive on disk (removed, changed, renamed, new, failed)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from typer.testing import CliRunner

from gallery.cli import app
from gallery.ingest import IngestOptions, ingest
from gallery.ingest.sync import sync
from gallery.store import Gallery
from tests.conftest import copy_lfw_people, lfw_photo, requires_lfw

pytestmark = requires_lfw
runner = CliRunner()
OPTIONS = IngestOptions(model="facenet-untrained", workers=0, detect_batch_size=8)


def live_faces_by_photo(gallery: Path) -> dict[str, list[str | None]]:
    with Gallery.open(gallery) as g:
        out: dict[str, list[str | None]] = {}
        for f in g.face_details():
            out.setdefault(Path(f.photo).name, []).append(f.identity)
        return out


def test_sync_follows_removed_changed_renamed_new_and_fixed_files(tmp_path: Path) -> None:
    src = tmp_path / "archive"
    copy_lfw_people(src, {"Aaron_Peirsol": 2, "Abdullah_Gul": 2, "Alejandro_Toledo": 1})
    broken = src / "Abdullah_Gul" / "broken.jpg"
    broken.write_bytes(b"not a photo yet")
    first = ingest(src, tmp_path / "g", OPTIONS)
    assert first.photos == 6 and first.failed == 1
    assert live_faces_by_photo(tmp_path / "g")["Alejandro_Toledo_0001.jpg"] == ["Alejandro_Toledo"]

    time.sleep(0.01)  # mtimes must move
    (src / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg").unlink()  # removed
    shutil.copyfile(lfw_photo("Aaron_Peirsol", 3), src / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")  # changed
    (src / "Alejandro_Toledo").rename(src / "Alejandro_Toledo_Renamed")  # renamed folder
    copy_lfw_people(src, {"Amelie_Mauresmo": 1})  # new
    shutil.copyfile(lfw_photo("Abdullah_Gul", 3), broken)  # fixed

    summary = sync(src, tmp_path / "g", OPTIONS)
    # one new person, one changed file, one removed file, one fixed failure, one renamed folder's file
    # (a move is counted once, not as a new file plus a removed one)
    assert (summary.added, summary.changed, summary.removed, summary.retried, summary.moved) == (1, 1, 1, 1, 1)
    assert summary.relabeled == 1 and summary.faces_removed >= 2
    after = live_faces_by_photo(tmp_path / "g")
    assert "Abdullah_Gul_0001.jpg" not in after  # removed file: its faces left
    assert after["Aaron_Peirsol_0001.jpg"].count("Aaron_Peirsol") == 1  # changed: new faces, old ones gone
    assert "Alejandro_Toledo_Renamed" in after["Alejandro_Toledo_0001.jpg"]  # moved: kept, new folder label
    assert "Amelie_Mauresmo" in after["Amelie_Mauresmo_0001.jpg"] and "broken.jpg" in after
    with Gallery.open(tmp_path / "g") as g:
        photos = {Path(f.photo).name for f in g.face_details()}
        assert len(photos) == 6 and g.info().failed == 0

    # nothing changed: nothing is read again
    result = runner.invoke(app, ["sync", str(src), "--gallery", str(tmp_path / "g"), "--workers", "0", "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["unchanged"] == 6 and again["ingest"]["photos"] == 0 and again["faces_removed"] == 0
    assert (again["added"], again["changed"], again["removed"], again["retried"]) == (0, 0, 0, 0)


def test_retry_failed_reads_unchanged_failures_again(tmp_path: Path) -> None:
    src = tmp_path / "archive"
    copy_lfw_people(src, {"Aaron_Peirsol": 1})
    (src / "Aaron_Peirsol" / "empty.jpg").write_bytes(b"")
    ingest(src, tmp_path / "g", OPTIONS)
    assert sync(src, tmp_path / "g", OPTIONS).retried == 0
    retried = sync(src, tmp_path / "g", OPTIONS, retry_failed=True)
    assert retried.retried == 1 and retried.ingest["failed"] == 1  # still empty: recorded again, once
    with Gallery.open(tmp_path / "g") as g:
        assert g.info().failed == 1


def sync_state(gallery: Path) -> tuple:
    """Everything a sync decides: each face (live or not, its label, its photo) and each file record."""
    import sqlite3

    con = sqlite3.connect(gallery / "gallery.db")
    try:
        faces = sorted(con.execute(
            "SELECT f.face_id, f.deleted, i.name, im.path FROM faces f LEFT JOIN identities i "
            "ON i.identity_id = f.identity_id JOIN images im ON im.image_id = f.image_id"))
        files = sorted(con.execute("SELECT path, status, image_id FROM files"))
        pending = con.execute("SELECT count(*) FROM pending_syncs").fetchone()[0]
    finally:
        con.close()
    return faces, files, pending


@requires_lfw
def test_an_interrupted_sync_ends_where_an_uninterrupted_one_would(tmp_path: Path, monkeypatch) -> None:
    """Was: after Ctrl-C or a kill, photos removed from the archive stayed live for good and a renamed
    folder kept its old label (the list of photos to retire lived only in memory)."""
    import pytest

    from gallery.ingest.runner import Ingestor

    src = tmp_path / "photos"
    copy_lfw_people(src, {"Aaron_Peirsol": 3, "Abdullah_Gul": 3, "Alejandro_Toledo": 2})
    ingest(src, tmp_path / "g0", OPTIONS)
    for photo in sorted((src / "Aaron_Peirsol").iterdir())[:2]:  # removed from the archive
        photo.unlink()
    (src / "Abdullah_Gul").rename(src / "Abdullah")  # a renamed folder: its label follows
    shutil.copytree(tmp_path / "g0", tmp_path / "whole")
    sync(src, tmp_path / "whole", OPTIONS)
    expected = sync_state(tmp_path / "whole")
    assert expected[2] == 0 and any(name == "Abdullah" for _, _, name, _ in expected[0])

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed")

    for n, (target, name) in enumerate([(Ingestor, "run"), (Gallery, "move_photo"),
                                        (Gallery, "retire_photos_without_files"), (Gallery, "finish_sync")]):
        copy = tmp_path / f"g{n + 1}"
        shutil.copytree(tmp_path / "g0", copy)
        with monkeypatch.context() as patch:
            patch.setattr(target, name, boom)
            with pytest.raises(KeyboardInterrupt):
                sync(src, copy, OPTIONS)
        assert sync_state(copy)[2] == 1  # the diff is recorded
        sync(src, copy, OPTIONS)  # the same command again
        assert sync_state(copy) == expected, name


@requires_lfw
def test_a_photo_read_again_keeps_its_faces_curation(tmp_path: Path) -> None:
    """A changed file is read again into new face rows: they take the old faces' labels by box."""
    from PIL import Image as PILImage

    src = tmp_path / "photos"
    copy_lfw_people(src, {"Aaron_Peirsol": 2})
    ingest(src, tmp_path / "g", OPTIONS)
    photo = sorted((src / "Aaron_Peirsol").iterdir())[0]
    with Gallery.open(tmp_path / "g") as g:
        face = g.main_face_of_path(str(photo.resolve()))
        g.relabel_faces([face], "Zed")  # the user's correction
    PILImage.open(photo).resize((200, 200)).save(photo, quality=80)  # edited: new content, same face
    summary = sync(src, tmp_path / "g", OPTIONS)
    assert summary.changed == 1 and summary.curation_kept == 1
    with Gallery.open(tmp_path / "g") as g:
        new = g.main_face_of_path(str(photo.resolve()))
        assert new != face and g.face_records([new])[new].identity == "Zed"
