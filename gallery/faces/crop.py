"""A face cut from its original photo, with a margin, so that a person can judge a label by eye."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from gallery.errors import NotInGallery


def crop_face(photo: Path | str, box: list[float], margin: float = 0.4, size: int | None = 256) -> Image.Image:
    """The box (x1, y1, x2, y2 in the oriented photo's pixels) grown by `margin` of its size on each
    side, clipped to the photo, square-padded and resized to `size` (None: native resolution)."""
    try:
        with Image.open(photo) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
    except OSError as exc:
        raise NotInGallery(
            f"The photo of this face cannot be read any more ({photo}: {exc}). It may have moved or changed; "
            "`gallery sync` brings the gallery up to date with the archive."
        ) from None
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    square = Image.new("RGB", (max(1, round(side)), max(1, round(side))), (0, 0, 0))
    right, bottom = min(img.width, left + round(side)), min(img.height, top + round(side))
    region = img.crop((max(0, left), max(0, top), right, bottom))
    square.paste(region, (max(0, -left), max(0, -top)))
    return square.resize((size, size), Image.Resampling.LANCZOS) if size else square
