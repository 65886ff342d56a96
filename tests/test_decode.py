"""Decoding: every image mode becomes RGB, EXIF orientation is applied, bad files get a reason."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gallery.faces.decode import DRAFT_SLACK, MAX_SIDE, decode_photo, draft_size


def _decode(path: Path, max_side: int = 2048):
    st = path.stat() if path.exists() else None
    return decode_photo(str(path), st.st_size if st else 0, st.st_mtime_ns if st else 0, max_side)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares huge dimensions: what a decompression bomb looks like before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16", "1", "RGB"])
def test_any_mode_becomes_rgb(tmp_path: Path, mode: str) -> None:
    rgb = Image.fromarray((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8))
    if mode == "I;16":
        img = Image.fromarray((np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) * 20).astype(np.uint16))
        path = tmp_path / "x.png"
    else:
        img = rgb.convert(mode)
        path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    photo = _decode(path)
    assert photo.ok, photo.detail
    assert photo.pixels.shape == (40, 60, 3) and photo.pixels.dtype == np.uint8
    assert (photo.width, photo.height) == (60, 40)
    assert photo.sha256 and len(photo.sha256) == 64


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    Image.new("RGBA", (32, 32), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (_decode(tmp_path / "clear.png").pixels == 255).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (80, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 40, 40))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    photo = _decode(tmp_path / "rot.jpg")
    assert photo.ok
    assert photo.pixels.shape[:2] == (80, 40)  # displayed portrait
    assert (photo.width, photo.height) == (40, 80)
    assert photo.pixels[:30].mean() > 200 and photo.pixels[-30:].mean() < 50  # white half now on top


def test_large_photo_is_downsized_with_scale(tmp_path: Path) -> None:
    Image.new("RGB", (3000, 1000), (10, 20, 30)).save(tmp_path / "wide.png")
    photo = _decode(tmp_path / "wide.png", max_side=1500)
    assert photo.pixels.shape == (500, 1500, 3)
    assert photo.scale == pytest.approx(0.5)
    assert (photo.width, photo.height) == (3000, 1000)


def test_draft_size_only_where_the_dct_can_halve_within_the_slack() -> None:
    assert draft_size(250, 250, 2048) is None and draft_size(1920, 1080, 2048) is None
    assert draft_size(3800, 2850, 2048) is None  # half would be 1900: more than 5% under 2048
    w, h = draft_size(4032, 3024, 2048)  # a 12 MP phone photo: half is 2016, within the slack
    assert w == pytest.approx(2048 * (1 - DRAFT_SLACK), abs=1) and w <= 4032 // 2
    assert h == pytest.approx(w * 3024 / 4032, abs=1)


def _smooth_photo(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 127 // (width + height))],
                    axis=2).astype(np.uint8)


def test_large_jpeg_decodes_from_the_dct_at_half_size(tmp_path: Path) -> None:
    """4000×3000 with max_side 2048: the decoder's 1/2 scaling gives 2000×1500 with no resize, close
    to the full decode resized to that size."""
    Image.fromarray(_smooth_photo(4000, 3000)).save(tmp_path / "big.jpg", quality=92)
    photo = _decode(tmp_path / "big.jpg", max_side=2048)
    assert photo.ok and photo.pixels.shape == (1500, 2000, 3)
    assert photo.scale == pytest.approx(0.5) and (photo.width, photo.height) == (4000, 3000)
    with Image.open(tmp_path / "big.jpg") as full:
        reference = np.asarray(full.convert("RGB").resize((2000, 1500), Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(photo.pixels.astype(np.float32) - reference).mean() < 2.0


def test_huge_jpeg_is_drafted_then_resized_to_max_side(tmp_path: Path) -> None:
    Image.fromarray(_smooth_photo(5000, 2500)).save(tmp_path / "huge.jpg", quality=90)
    photo = _decode(tmp_path / "huge.jpg", max_side=1024)  # 1/4 scaling gives 1250, then resized
    assert photo.pixels.shape == (512, 1024, 3) and photo.scale == pytest.approx(1024 / 5000)


def test_zero_bytes(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    photo = _decode(tmp_path / "empty.jpg")
    assert photo.reason == "empty_file" and photo.pixels is None


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("this is a shopping list, not a photo")
    assert _decode(tmp_path / "notes.jpg").reason == "not_an_image"


def test_truncated_jpeg(tmp_path: Path) -> None:
    Image.fromarray((np.random.default_rng(1).random((300, 300, 3)) * 255).astype(np.uint8)).save(
        tmp_path / "full.jpg", quality=90
    )
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    photo = _decode(tmp_path / "cut.jpg")
    assert photo.reason in {"truncated", "decode_error"} and photo.detail


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    photo = decode_photo(str(tmp_path / "gone.jpg"), 10, 0)
    assert photo.reason == "unreadable" and photo.sha256 is None


def test_decompression_bomb_refused_without_decoding(tmp_path: Path) -> None:
    _png_header_only(tmp_path / "bomb.png", 30_000, 30_000)  # 900 MP declared in a few bytes
    photo = _decode(tmp_path / "bomb.png")
    assert photo.reason == "too_large"


def test_absurd_dimensions_refused(tmp_path: Path) -> None:
    _png_header_only(tmp_path / "strip.png", MAX_SIDE + 1, 20)
    assert _decode(tmp_path / "strip.png").reason == "too_large"
