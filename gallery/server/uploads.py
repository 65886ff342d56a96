"""Uploaded photos: read within the upload limit, kept in a temporary file, and decoded by the
ingest's own decoder, so a bad upload is refused with the same reason an ingest records
(not_an_image, truncated, too_large for a decompression bomb, ...), as a 4xx answer."""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gallery.faces.decode import decode_photo
from gallery.server.service import ApiError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def clean_name(filename: str | None, fallback: str = "upload") -> str:
    """A file name safe to put in a folder (no path, no odd characters), keeping the extension."""
    name = _UNSAFE.sub("_", Path(filename or "").name).strip("._") or fallback
    return name[-120:]


def from_base64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", f"'{field}' is not valid base64.") from None


@contextmanager
def photo_file(data: bytes, filename: str | None, folder: Path | None = None) -> Iterator[Path]:
    """The bytes in a temporary file (removed afterwards) for the file-based pipeline."""
    suffix = Path(clean_name(filename)).suffix[:10]
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def refuse_failed(error: str | None, detail: str | None, filename: str | None) -> None:
    """Raise the 4xx answer for a photo the pipeline could not use (no face: 422 too)."""
    if error is None:
        return
    raise ApiError(422, error, f"{filename or 'upload'}: {detail or error}", file=filename)


def check_decodes(path: Path, filename: str | None, max_bytes: int) -> None:
    """Decode once as ingest would, refusing what ingest would record as failed."""
    photo = decode_photo(str(path), path.stat().st_size, 0, max_file_bytes=max_bytes)
    refuse_failed(photo.reason, photo.detail, filename)
