"""Faces in videos: frames sampled at a rate plus scene cuts, upright, bounded; faces linked into tracks
stored as searchable faces with their times; labels to the main track; resume per file; erasure of a
whole track; broken videos recorded with a reason."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from gallery.faces.decode import decode_photo

av = pytest.importorskip("av", reason="videos need PyAV: pip install 'face-gallery[video]'")

from gallery.faces.video import MAX_SAMPLES, SAMPLE_FPS, format_time, probe, sample_frames  # noqa: E402
from tests.conftest import lfw_photo, requires_lfw  # noqa: E402
from tests.helpers.videos import encode_frames, write_video  # noqa: E402


def _plain_video(path: Path, segments: list[tuple[float, tuple[int, int, int]]], fps: int = 10,
                 size: tuple[int, int] = (64, 48), pts_step=None) -> Path:  # noqa: ANN001
    """Flat-colour shots; `pts_step(i)`: the pts of frame i (a variable frame rate), in 1/fps units."""
    colours = [colour for seconds, colour in segments for _ in range(int(round(seconds * fps)))]
    frames = ((np.full((size[1], size[0], 3), c, np.uint8), pts_step(n) if pts_step else n)
              for n, c in enumerate(colours))
    return encode_frames(path, frames, fps, size)


def test_frames_are_sampled_at_the_rate_and_at_each_cut(tmp_path: Path) -> None:
    path = _plain_video(tmp_path / "v.mp4", [(2.2, (20, 120, 20)), (1.3, (120, 20, 160)), (1.0, (220, 220, 40))])
    frames = list(sample_frames(str(path)))
    times = [round(f.t, 2) for f in frames]
    cuts = [round(f.t, 2) for f in frames if f.cut]
    assert cuts == [2.2, 3.5]
    assert times == [0.0, 0.5, 1.0, 1.5, 2.0, 2.2, 2.7, 3.2, 3.5, 4.0]
    assert all(f.photo.pixels.shape == (48, 64, 3) for f in frames)


def test_a_variable_frame_rate_is_sampled_by_time(tmp_path: Path) -> None:
    # frames 0.1 s apart, then 0.3 s apart: the samples stay 0.5 s apart in time, not in frame count
    path = _plain_video(tmp_path / "vfr.mp4", [(4.0, (60, 60, 60))],
                        pts_step=lambda i: i if i < 20 else 20 + 3 * (i - 20))
    times = [f.t for f in sample_frames(str(path))]
    gaps = np.diff(times)
    assert times[-1] > 7 and gaps.min() >= 0.5 - 1e-6 and gaps.max() <= 0.5 + 0.3 + 1e-6


def test_rotation_metadata_turns_frames_upright(tmp_path: Path) -> None:
    # stored 64x48 with a white left half; shown turned 90 degrees counterclockwise (display rotation 90),
    # so the white half is the bottom of a 48x64 picture
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32] = 255
    path = encode_frames(tmp_path / "r.mp4", ((img, i) for i in range(5)), 10, (64, 48), rotation=90)
    info = probe(str(path))
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    pixels = next(iter(sample_frames(str(path)))).photo.pixels
    assert pixels.shape == (64, 48, 3)
    assert pixels[40:].mean() > 200 and pixels[:24].mean() < 50


def test_a_two_hour_video_is_sampled_within_bounds(tmp_path: Path) -> None:
    path = _plain_video(tmp_path / "long.mp4", [(7200.0, (90, 90, 90))], fps=1, size=(32, 32))
    info = probe(str(path))
    assert info.duration == pytest.approx(7200, abs=2)
    n, last = 0, 0.0
    for frame in sample_frames(str(path), duration=info.duration):  # streamed: one frame at a time
        n, last = n + 1, frame.t
    assert n <= MAX_SAMPLES and n >= MAX_SAMPLES - 2 and last > 7190
    assert SAMPLE_FPS * 7200 > MAX_SAMPLES  # the rate was lowered to stay within the bound


def test_broken_and_truncated_videos_have_a_recorded_reason(tmp_path: Path) -> None:
    (tmp_path / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    photo = decode_photo(str(tmp_path / "garbage.mp4"), 0, 0, videos=True)
    assert photo.video and photo.reason in ("not_a_video", "decode_error") and photo.detail
    (tmp_path / "empty.mov").write_bytes(b"")
    assert decode_photo(str(tmp_path / "empty.mov"), 0, 0, videos=True).reason == "empty_file"
    # where a photo is expected (a query, an upload), a video is refused with its reason
    assert decode_photo(str(tmp_path / "garbage.mp4"), 0, 0).reason == "not_a_photo"
    from gallery.ingest import ingest

    archive = tmp_path / "archive"
    archive.mkdir()
    whole = _plain_video(tmp_path / "whole.mkv", [(3.0, (10, 200, 10))], size=(64, 48))
    (archive / "cut.mkv").write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    (archive / "garbage.mp4").write_bytes((tmp_path / "garbage.mp4").read_bytes())
    summary = ingest(archive, tmp_path / "g", workers=0, labels="none")
    assert summary.failed == 2 and set(summary.failures) <= {"not_a_video", "decode_error", "no_face"}
    with sqlite3.connect(tmp_path / "g" / "gallery.db") as db:
        rows = db.execute("SELECT path, reason, detail FROM images").fetchall()
    assert len(rows) == 2 and all(reason and detail for _, reason, detail in rows), rows


def test_format_time() -> None:
    assert format_time(12.7) == "00:12" and format_time(3723) == "1:02:03"


# --- the made-up two-person video (LFW faces) -----------------------------------------------------------

def _two_person_video(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_video(folder / "clip.mp4", [(lfw_photo("Aaron_Peirsol", 1), 6.0, (40, 80, 40)),
                                             (lfw_photo("Abdullah_Gul", 1), 4.0, (80, 40, 120))])


def _faces(gallery: Path) -> list[tuple]:
    with sqlite3.connect(gallery / "gallery.db") as db:
        return db.execute(
            "SELECT f.face_id, i.name, f.track, f.t_ms, f.track_start_ms, f.track_end_ms, f.track_template, f.deleted "
            "FROM faces f LEFT JOIN identities i USING (identity_id) ORDER BY f.face_id").fetchall()


@requires_lfw
def test_video_tracks_labels_times_search_crop_erase(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gallery.cli import app
    from gallery.ingest import ingest

    _two_person_video(tmp_path / "archive" / "Aaron_Peirsol")
    summary = ingest(tmp_path / "archive", tmp_path / "g", workers=0)
    assert (summary.videos, summary.video_tracks, summary.video_frames) == (1, 2, 20)
    assert summary.video_seconds == pytest.approx(10.0, abs=0.2)
    faces = _faces(tmp_path / "g")
    tracks = {}
    for _, name, track, t_ms, start, end, _template, _ in faces:
        tracks.setdefault(track, set()).add((name, start, end))
        assert start <= t_ms <= end
    # the longest track (Aaron, 0-6 s) takes the folder's label; Abdullah's (after the cut) is unlabeled
    assert tracks == {1: {("Aaron_Peirsol", 0, 5500)}, 2: {(None, 6000, 9500)}}
    assert sum(f[6] for f in faces) == 2  # one template per track
    runner = CliRunner()
    g = str(tmp_path / "g")
    built = runner.invoke(app, ["index", "build", "--gallery", g])
    assert built.exit_code == 0, built.output
    # Abdullah Gul's photo is answered with the video and the span of his track
    answer = runner.invoke(app, ["search", str(lfw_photo("Abdullah_Gul", 1)), "--gallery", g, "--faces", "--json"])
    assert answer.exit_code in (0, 1), answer.output
    top = json.loads(answer.output.splitlines()[0])["candidates"][0]
    assert top["clip"] == "00:06–00:09" and top["photo"].endswith("clip.mp4")
    table = runner.invoke(app, ["search", str(lfw_photo("Abdullah_Gul", 1)), "--gallery", g, "--faces"])
    assert "00:06–00:09" in table.output and "video" in table.output
    # a crop of a video face comes from its frame
    best = next(f for f in faces if f[2] == 2 and not f[6])
    crop = runner.invoke(app, ["faces", "crop", str(best[0]), "-o", str(tmp_path / "c.png"), "--gallery", g])
    assert crop.exit_code == 0, crop.output
    from PIL import Image

    assert Image.open(tmp_path / "c.png").size == (256, 256)
    assert np.asarray(Image.open(tmp_path / "c.png")).std() > 20  # a face, not a black square
    # erasing one face of a track erases the whole track (its frames and template), nothing else
    erased = runner.invoke(app, ["faces", "erase", str(best[0]), "--gallery", g])
    assert erased.exit_code == 0, erased.output
    left = _faces(tmp_path / "g")
    assert {f[2] for f in left} == {1} and len(left) == 4


@requires_lfw
def test_an_ingest_killed_mid_video_resumes_without_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gallery.faces import tracks
    from gallery.ingest import ingest

    _two_person_video(tmp_path / "archive" / "Aaron_Peirsol")
    real = tracks.TrackLinker.add_frame
    calls = {"n": 0}

    def dies_part_way(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt  # what Ctrl-C or a kill does to the run: nothing after this point
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tracks.TrackLinker, "add_frame", dies_part_way)
    with pytest.raises(KeyboardInterrupt):
        ingest(tmp_path / "archive", tmp_path / "g", workers=0)
    assert _faces(tmp_path / "g") == []  # nothing of the half-read video was committed
    monkeypatch.setattr(tracks.TrackLinker, "add_frame", real)
    first = ingest(tmp_path / "archive", tmp_path / "g", workers=0)
    again = ingest(tmp_path / "archive", tmp_path / "g", workers=0)
    assert first.videos == 1 and first.faces == 8
    assert again.videos == 0 and again.skipped == 1 and again.faces == 0
    assert len(_faces(tmp_path / "g")) == 8


@requires_lfw
def test_sync_follows_a_changed_and_a_removed_video(tmp_path: Path) -> None:
    from gallery.ingest import ingest
    from gallery.ingest.sync import sync

    folder = tmp_path / "archive" / "Aaron_Peirsol"
    video = _two_person_video(folder)
    ingest(tmp_path / "archive", tmp_path / "g", workers=0)
    write_video(video, [(lfw_photo("Aaron_Peirsol", 1), 3.0, (40, 80, 40))])  # re-edited: one shot only
    changed = sync(tmp_path / "archive", tmp_path / "g", workers=0)
    assert changed.changed == 1
    live = [f for f in _faces(tmp_path / "g") if not f[7]]
    assert {f[2] for f in live} == {1} and {f[1] for f in live} == {"Aaron_Peirsol"}
    video.unlink()
    removed = sync(tmp_path / "archive", tmp_path / "g", workers=0)
    assert removed.removed == 1 and not [f for f in _faces(tmp_path / "g") if not f[7]]


@requires_lfw
def test_a_live_photo_is_one_photo_and_one_video(tmp_path: Path) -> None:
    from PIL import Image

    from gallery.faces.formats import heif_available
    from gallery.ingest import ingest

    if not heif_available():
        pytest.skip("needs pillow-heif")
    folder = tmp_path / "archive" / "Aaron_Peirsol"
    folder.mkdir(parents=True)
    Image.open(lfw_photo("Aaron_Peirsol", 1)).save(folder / "IMG_0001.HEIC", format="HEIF", quality=90)
    write_video(folder / "IMG_0001.MOV", [(lfw_photo("Aaron_Peirsol", 1), 2.0, (40, 80, 40))])
    summary = ingest(tmp_path / "archive", tmp_path / "g", workers=0)
    assert summary.photos == 2 and summary.videos == 1 and summary.duplicates == 0
    assert summary.photos_with_faces == 2


def test_a_version_5_gallery_gains_the_video_columns(tmp_path: Path) -> None:
    from gallery.store import Gallery
    from gallery.store.schema import SCHEMA_VERSION
    from gallery.store.writer import append_embedded_faces

    with Gallery.open_or_create(tmp_path / "g") as g:
        stamp = {"name": "test-model", "dim": 4, "preprocessing": "test"}
        vectors = np.eye(4, dtype=np.float32)[:3]
        append_embedded_faces(g, stamp, vectors)
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    with con:
        for column in ("t_ms", "track", "track_start_ms", "track_end_ms", "track_template"):
            con.execute(f"ALTER TABLE faces DROP COLUMN {column}")
        con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.close()
    with Gallery.open(tmp_path / "g") as g:
        assert g.live_face_count() == 3
        records = g.face_records([1, 2, 3])
        assert len(records) == 3 and all(r.clip is None and r.t_ms is None for r in records.values())
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert con.execute("SELECT count(*) FROM faces WHERE track_template = 0 AND t_ms IS NULL").fetchone()[0] == 3
    con.close()


def test_the_distributed_ingest_leaves_videos_to_the_local_one(tmp_path: Path) -> None:
    from gallery.ingest.distributed import decode_batch

    video = _plain_video(tmp_path / "v.mp4", [(1.0, (10, 10, 10))])
    out = decode_batch({"path": np.array([str(video)]), "size": np.array([video.stat().st_size]),
                        "mtime_ns": np.array([video.stat().st_mtime_ns])}, str(tmp_path), 2048, 2**28)
    assert out["reason"] == ["needs_local_ingest"] and "without --engine ray" in out["detail"][0]


def test_a_face_is_cut_from_a_video_frame_decoded_smaller_than_the_video(tmp_path: Path) -> None:
    # a frame over the crop's limit (4096 a side) is decoded smaller: the face's box (video pixels) is
    # scaled with it
    from gallery.faces.crop import MAX_CROP_SIDE, crop_face, photo_with_face

    width = 2 * MAX_CROP_SIDE  # the frame comes out 4096x32
    pixels = np.zeros((64, width, 3), np.uint8)
    pixels[8:56, width - 96 : width - 48] = 255  # a white square near the right end
    path = encode_frames(tmp_path / "v.mp4", ((pixels, n) for n in range(3)), 10, (width, 64))
    box = [width - 88, 16, width - 56, 48]
    face = np.asarray(crop_face(path, box, margin=0.0, size=16, t_ms=100))
    assert face.shape == (16, 16, 3) and face.mean() > 200
    whole = np.asarray(photo_with_face(path, box, max_side=MAX_CROP_SIDE, t_ms=100))
    outline = whole[16, MAX_CROP_SIDE - 44 : MAX_CROP_SIDE - 28]  # the box outlined where it is: x 4052..4068
    assert whole.shape == (32, MAX_CROP_SIDE, 3) and np.abs(outline.astype(int) - (67, 160, 71)).max() < 40
