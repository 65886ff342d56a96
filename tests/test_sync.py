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
