"""People: enrol photos of a person under a name, and erase faces, photos or a person for good.

Enrolment holds the gallery's writer lock from the moment it saves a photo until the photo is
ingested and named, so an erasure (which deletes every enrolled file no record names) never sees a
half-done enrolment; it is idempotent by content: a photo the gallery already holds is not saved
again, so a retried enrolment adds nothing. Then the gallery is kept searchable as after an ingest
(gallery.app.indexing.after_new_faces), except that an enrolment also builds the first index: the
person enrolled must be found by the very next search.

Erasure (gallery.app.erasure) reaches every file of the gallery, the enrolled copies included; the
answer says what becomes of the photo archive, which erasure never touches.
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from pathlib import Path
from typing import Any

from gallery.app.answers import EnrolAnswer, ErasureAnswer
from gallery.errors import GalleryError, PhotoRefused
from gallery.fsutil import clean_name
from gallery.store import Gallery

MAX_ENROL_PHOTOS = 20  # photos per enrolment
# Pillow's format -> the extension the ingest's scan reads it by
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


def check_decodes(path: Path, filename: str | None, max_bytes: int) -> None:
    """Decode once as ingest would, refusing (PhotoRefused, with the ingest's reason) what ingest would
    record as failed."""
    from gallery.faces.decode import decode_photo

    photo = decode_photo(str(path), path.stat().st_size, 0, max_file_bytes=max_bytes)
    if photo.reason is not None:
        raise PhotoRefused(photo.reason, f"{filename or 'upload'}: {photo.detail or photo.reason}", file=filename)


def _photo_name(filename: str | None, data: bytes, index: int) -> str:
    """`NN-name.ext` with the extension of the photo's real format (an upload named `blob` is still
    a JPEG), so that the ingest reads it; a format the ingest does not read is refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            kind = img.format or ""
    except (UnidentifiedImageError, OSError, ValueError):
        kind = ""  # check_decodes says what is wrong with it
    stem = Path(clean_name(filename, "photo")).stem or "photo"
    return f"{index:02d}-{stem}{EXTENSIONS.get(kind, Path(clean_name(filename, 'photo.jpg')).suffix or '.jpg')}"


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or holding the photos just enrolled


def enrol(gallery: Gallery, name: str, photos: list[tuple[str | None, bytes]], enrol_dir: Path | str,
          device: str = "auto", max_photo_bytes: int = 20 * 2**20) -> EnrolAnswer:
    """Photos of one person (file name, bytes): kept in a new folder under `enrol_dir` (unless the
    gallery holds them already), ingested, and their main faces named; then the index and the
    calibration brought up to date (see the module docstring)."""
    from gallery.app.indexing import after_new_faces
    from gallery.ingest import IngestOptions, ingest

    name = name.strip()
    if not name:
        raise GalleryError("Enrolment needs a name.")
    if not photos:
        raise GalleryError("Enrolment needs at least one photo (multipart field 'file').")
    if len(photos) > MAX_ENROL_PHOTOS:
        raise GalleryError(f"At most {MAX_ENROL_PHOTOS} photos per enrolment request.")
    hashes = [hashlib.sha256(data).hexdigest() for _, data in photos]
    folder = Path(enrol_dir).resolve() / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    saved: dict[str, Path] = {}  # content -> the file this request saved it as
    with gallery.writer_lock(nested=True):  # the ingest below enters it
        held = gallery.photos_by_content(hashes)
        try:
            for i, ((filename, data), sha) in enumerate(zip(photos, hashes)):
                main, status, _ = held.get(sha, (None, None, None))
                if (main is not None and status == "done") or sha in saved:
                    continue  # the gallery (or this request) has it already: named below, not saved again
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / _photo_name(filename, data, i)
                path.write_bytes(data)
                saved[sha] = path
                check_decodes(path, filename, max_photo_bytes)
            if saved:
                ingest(folder, gallery.root, IngestOptions(labels="none", workers=0, device=device))
        except BaseException:
            for path in saved.values():
                path.unlink(missing_ok=True)
            _remove_if_empty(folder)
            raise
        held = gallery.photos_by_content(hashes)
        labeled: list[int] = []
        no_face: list[str] = []
        for (filename, _), sha in zip(photos, hashes):
            face_id = held.get(sha, (None, None, None))[0]
            if face_id is None:
                no_face.append(filename or "upload")
            elif face_id not in labeled:
                labeled.append(face_id)
        empty = [str(p) for sha, p in saved.items() if held.get(sha, (None, None, None))[0] is None]
        for path in empty:  # nothing to enrol in it: neither kept nor remembered
            Path(path).unlink(missing_ok=True)
        gallery.forget_files(empty)
        _remove_if_empty(folder)
        if labeled:
            gallery.relabel_faces(labeled, name)
    after = after_new_faces(gallery.root, build_when_missing=True)
    return EnrolAnswer(identity=name, photos=len(photos), faces_labeled=len(labeled), face_ids=labeled,
                       no_face=no_face, duplicates=len(photos) - len(saved), saved=len(saved) - len(empty),
                       **after.model_dump())


def archive_note(photos: int, keep_out: bool) -> str:
    """What becomes of the photo archive after an erasure of `photos` photos (never touched by it)."""
    erased = f"{photos} erased photo{'' if photos == 1 else 's'}"
    if keep_out:
        return (f"The photo archive is not touched; ingest and sync keep the {erased} out from now on (a keyed "
                "fingerprint of each, nothing readable). `gallery photos admit PATH...` lets them in again.")
    return (f"The photo archive is not touched: if it still holds the {erased}, the next ingest or sync of it "
            "reads them in again. Delete them there, or keep them out with `gallery photos keep-out PATH...`.")


def erase(gallery: Gallery | Path | str, command: str, lock_wait_s: float = 30.0, keep_out: bool = True,
          **selection: Any) -> ErasureAnswer:
    """Erase the selection (identity=NAME, face_ids=[...] or paths=[...]) from every file of the gallery
    (gallery.app.erasure.erase), keeping its photos out of later ingests unless `keep_out=False`."""
    from gallery.app.erasure import erase as run_erase
    from gallery.store.erase import ErasureSelection

    report = run_erase(gallery, ErasureSelection(**selection, keep_out=keep_out), command, lock_wait_s=lock_wait_s)
    return ErasureAnswer(**report.as_dict(), archive=archive_note(report.photos, keep_out))
