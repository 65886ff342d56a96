"""Uploaded photos: kept in a temporary file, and refused with the reason an ingest records
(not_an_image, truncated, too_large for a decompression bomb, no_face, ...), as a 4xx answer. The
upload limit itself is the Limits middleware's (gallery.server.limits)."""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gallery.fsutil import clean_name
from gallery.server.service import ApiError


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
