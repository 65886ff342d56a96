"""The whole photo of a face with the face outlined (the web page's "photos" of a person): scaled to
fit, oriented, the box drawn where the face is, and refused within the same limits as a crop."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from gallery.errors import PhotoRefused
from gallery.faces.crop import photo_with_face

GREEN = (67, 160, 71)


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def test_a_large_photo_is_scaled_to_fit_with_the_face_outlined(tmp_path: Path) -> None:
    photo = tmp_path / "wide.jpg"
    Image.new("RGB", (2000, 1000), (200, 200, 200)).save(photo, quality=95)
    image = photo_with_face(photo, [1000, 400, 1200, 600], max_side=500)
    assert image.size == (500, 250)
    # the box, scaled by 1/4, is outlined: (250, 100)-(300, 150)
    assert near(image.getpixel((250, 125)), GREEN) and near(image.getpixel((275, 100)), GREEN)
    assert near(image.getpixel((275, 125)), (200, 200, 200))  # inside the box: the photo, untouched
    assert near(image.getpixel((50, 50)), (200, 200, 200))


def test_a_small_photo_keeps_its_size_and_an_exif_rotation_is_applied(tmp_path: Path) -> None:
    photo = tmp_path / "portrait.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show it
    Image.new("RGB", (300, 200), (10, 10, 10)).save(photo, exif=exif)
    image = photo_with_face(photo, [20, 20, 80, 80], max_side=800)
    assert image.size == (200, 300)  # oriented as ingest sees it, not enlarged


def test_what_is_not_a_photo_is_refused_with_the_reason(tmp_path: Path) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"not a photo at all")
    with pytest.raises(PhotoRefused, match="not an image"):
        photo_with_face(fake, [0, 0, 10, 10])
