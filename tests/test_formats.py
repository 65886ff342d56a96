"""HEIC/HEIF, AVIF and camera RAW photos: decoded upright (EXIF orientation), giving the same faces as
the JPEG they were made from; a format whose decoder is missing is counted and named, and read once it
is installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gallery.faces import formats
from gallery.faces.decode import decode_photo
from gallery.ingest.scan import scan_photos
from tests.conftest import lfw_available, lfw_photo, requires_lfw
from tests.helpers.rawfiles import write_dng

pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is a dependency: pip install pillow-heif")

# Orientation tag → how the camera stored the pixels (the inverse of what a viewer does to show them).
STORED = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _decode(path: Path, max_side: int = 2048):
    return decode_photo(str(path), path.stat().st_size, path.stat().st_mtime_ns, max_side)


def _save_rotated(src: Image.Image, path: Path, fmt: str, orientation: int) -> Path:
    """`src` stored as a camera held it, with the EXIF orientation that turns it upright again."""
    stored = src.transpose(STORED[orientation]) if STORED[orientation] is not None else src
    exif = Image.Exif()
    exif[0x0112] = orientation
    formats.heif_available()
    stored.save(path, format=fmt, quality=95, exif=exif.tobytes())
    return path


def _synthetic(width: int = 96, height: int = 64) -> Image.Image:
    """A picture whose orientation is visible: a white top-left quarter on black."""
    img = Image.new("RGB", (width, height), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, width // 2, height // 2))
    return img


@pytest.mark.parametrize("fmt,suffix", [("HEIF", ".heic"), ("AVIF", ".avif")])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_heic_and_avif_are_decoded_upright(tmp_path: Path, fmt: str, suffix: str, orientation: int) -> None:
    src = _synthetic()
    photo = _decode(_save_rotated(src, tmp_path / f"x{suffix}", fmt, orientation))
    assert photo.ok, photo.detail
    assert (photo.width, photo.height) == src.size
    diff = np.abs(photo.pixels.astype(int) - np.asarray(src).astype(int)).mean()
    assert diff < 8, f"{fmt} orientation {orientation}: mean pixel difference {diff:.1f}"


@pytest.mark.parametrize("orientation", [1, 6, 8])
@pytest.mark.parametrize("with_preview", [False, True])
def test_dng_is_decoded_upright_from_sensor_data_or_preview(tmp_path: Path, orientation: int,
                                                            with_preview: bool) -> None:
    src = _synthetic(128, 96)
    stored = src.transpose(STORED[orientation]) if STORED[orientation] is not None else src
    # With a preview the sensor data is flat grey: only the preview can give the picture back.
    sensor = np.full_like(np.asarray(stored), 128) if with_preview else np.asarray(stored)
    path = write_dng(tmp_path / "x.dng", sensor, orientation, preview=np.asarray(stored) if with_preview else None)
    photo = _decode(path)
    assert photo.ok, photo.detail
    assert (photo.width, photo.height) == src.size
    top_left = photo.pixels[: 96 // 2 - 4, : 128 // 2 - 4].mean()
    rest = photo.pixels[96 // 2 + 4 :, :].mean()
    assert top_left > rest + 100, (top_left, rest)


@pytest.mark.parametrize("with_preview", [False, True])
def test_a_raw_face_is_cut_and_shown_where_the_ingest_found_it(tmp_path: Path, with_preview: bool) -> None:
    """Crops and photo views decode a RAW photo as the ingest does (upright, preview or sensor data) and
    put a box in the upright photo's pixels on the same place."""
    from gallery.faces.crop import crop_face, photo_with_face

    src = _synthetic(128, 96)
    stored = np.asarray(src.transpose(STORED[6]))
    sensor = np.full_like(stored, 128) if with_preview else stored
    path = write_dng(tmp_path / "x.dng", sensor, 6, preview=stored if with_preview else None)
    white = np.asarray(crop_face(path, [8, 8, 56, 40], margin=0.0, size=32)).mean()
    black = np.asarray(crop_face(path, [72, 56, 120, 88], margin=0.0, size=32)).mean()
    assert white > 200 and black < 60, (white, black)
    view = photo_with_face(path, [8, 8, 56, 40], max_side=256)
    assert view.size == (128, 96)  # upright, never enlarged
    assert view.getpixel((8, 24)) == (67, 160, 71)  # the box's left edge, where the face was found


def test_a_small_preview_is_not_used_when_detection_needs_more(tmp_path: Path) -> None:
    src = np.asarray(_synthetic(256, 192))
    tiny_black_preview = np.zeros((48, 64, 3), np.uint8)
    photo = _decode(write_dng(tmp_path / "x.dng", src, 1, preview=tiny_black_preview))
    assert photo.ok and photo.pixels.shape[:2] == (192, 256)
    assert photo.pixels[:80, :100].mean() > 150  # the sensor data, not the black preview


def test_broken_raw_and_heic_give_a_reason(tmp_path: Path) -> None:
    (tmp_path / "x.nef").write_bytes(b"II*\x00" + b"\x00" * 200)
    (tmp_path / "y.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 200)
    for name in ("x.nef", "y.heic"):
        photo = _decode(tmp_path / name)
        assert not photo.ok and photo.reason in ("decode_error", "not_an_image") and photo.detail


def test_scan_finds_every_supported_format(tmp_path: Path) -> None:
    for name in ("a.HEIC", "b.heif", "c.avif", "d.dng", "e.CR2", "f.nef", "g.arw", "h.cr3", "i.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = sorted(f.path.name for f in scan_photos(tmp_path))
    assert found == ["a.HEIC", "b.heif", "c.avif", "d.dng", "e.CR2", "f.nef", "g.arw", "h.cr3", "i.jpg"]


def test_missing_decoder_is_named_never_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "_heif_registered", False)
    path = _save_rotated(_synthetic(), tmp_path / "x.heic", "HEIF", 1)
    monkeypatch.setattr(formats, "_heif_registered", False)  # saving registered it: pretend it is absent
    photo = _decode(path)
    assert photo.reason == "missing_library"
    assert "pillow-heif" in photo.detail and photo.install == formats.INSTALL_HEIF
    import builtins

    real_import = builtins.__import__

    def no_rawpy(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if name == "rawpy":
            raise ImportError("No module named 'rawpy'")
        return real_import(name, *args, **kwargs)

    dng = write_dng(tmp_path / "x.dng", np.asarray(_synthetic()))
    monkeypatch.setattr(builtins, "__import__", no_rawpy)
    photo = _decode(dng)
    assert photo.reason == "missing_library" and photo.install == formats.INSTALL_RAW


# --- the same faces as the JPEG original (real photos) -------------------------------------------------

@pytest.fixture(scope="module")
def pipeline():
    if not lfw_available():
        pytest.skip("needs the LFW A–J photos")
    from gallery.faces.models import model_for_gallery
    from gallery.faces.pipeline import FacePipeline

    return FacePipeline(model_for_gallery(None), "cpu")


PEOPLE = [("Aaron_Peirsol", 1), ("Abdullah_Gul", 2), ("Alejandro_Toledo", 3)]


@requires_lfw
def test_heic_avif_and_dng_give_the_faces_of_their_jpeg(tmp_path: Path, pipeline) -> None:
    cases = []
    for (name, number), orientation in zip(PEOPLE, (6, 3, 8)):
        jpeg = lfw_photo(name, number)
        src = Image.open(jpeg).convert("RGB")
        stored = src.transpose(STORED[orientation])
        versions = [shutil.copyfile(jpeg, tmp_path / jpeg.name)]
        versions.append(_save_rotated(src, tmp_path / f"{jpeg.stem}.heic", "HEIF", orientation))
        versions.append(_save_rotated(src, tmp_path / f"{jpeg.stem}.avif", "AVIF", orientation))
        versions.append(write_dng(tmp_path / f"{jpeg.stem}.dng", np.asarray(stored), orientation,
                                  preview=np.asarray(stored)))
        cases.append(versions)
    for versions in cases:
        photos = [_decode(Path(v)) for v in versions]
        assert all(p.ok for p in photos), [p.detail for p in photos]
        found = pipeline.embed_photos(photos)
        reference = found[0]
        assert reference.ok and len(reference.boxes) >= 1
        main_box = reference.boxes[reference.main]
        main_vec = reference.embeddings[reference.main]
        for path, faces in zip(versions[1:], found[1:]):
            assert faces.ok, (path, faces.error)
            box = faces.boxes[faces.main]
            assert np.abs(box - main_box).max() < 6, (path, box, main_box)
            assert float(faces.embeddings[faces.main] @ main_vec) > 0.97, path


@requires_lfw
def test_raw_sensor_data_alone_gives_a_face(tmp_path: Path, pipeline) -> None:
    src = Image.open(lfw_photo("Aaron_Peirsol", 1)).convert("RGB")
    path = write_dng(tmp_path / "x.dng", np.asarray(src.transpose(STORED[6])), 6)
    photo = _decode(path)
    assert photo.ok and (photo.width, photo.height) == src.size
    faces = pipeline.embed_photos([photo])[0]
    jpeg = pipeline.embed_photos([_decode(lfw_photo("Aaron_Peirsol", 1))])[0]
    assert faces.ok
    assert float(faces.embeddings[faces.main] @ jpeg.embeddings[jpeg.main]) > 0.9


def test_ingest_counts_files_without_decoder_and_reads_them_once_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gallery.ingest import ingest

    archive = tmp_path / "archive"
    archive.mkdir()
    _save_rotated(_synthetic(), archive / "x.heic", "HEIF", 1)
    monkeypatch.setattr(formats, "_heif_registered", False)
    first = ingest(archive, tmp_path / "g", workers=0, labels="none")
    assert first.failures == {"missing_library": 1} and first.needs_install == {formats.INSTALL_HEIF: 1}
    monkeypatch.setattr(formats, "_heif_registered", None)  # installed now
    second = ingest(archive, tmp_path / "g", workers=0, labels="none")
    assert second.skipped == 0 and second.photos == 1 and not second.needs_install
    assert "missing_library" not in second.failures  # read: a blank picture has no face
