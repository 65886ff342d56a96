"""What the service writes, through the same Python API as the CLI: ingest of a server-side folder
(then index and calibrate, as the CLI advises after an ingest), enrolment of uploaded photos under a
name, and erasure.

Enrolment holds the gallery's writer lock from the moment it saves a photo until the photo is
ingested and named, so an erasure (which deletes every enrolled file no record names) never sees a
half-done enrolment; it is idempotent by content: a photo the gallery already holds is not saved
again, so a retried request adds nothing. Erasure reaches the enrolled copies through
indexer.erasure (the server records its enrolment folder in the gallery)."""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from gallery.errors import EmptyGalleryError
from gallery.progress import ProgressFn
from gallery.server.config import MAX_ENROL_PHOTOS, ServeConfig
from gallery.server.service import ApiError
from gallery.server.uploads import check_decodes, clean_name
from gallery.store import Gallery

# Pillow's format -> the extension the ingest's scan reads it by
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


def refresh_index(gallery: Path) -> dict[str, Any] | None:
    """After new faces: build the index when there is none yet, or fold the new faces in when the
    un-indexed tail has grown past the point where `gallery ingest` would advise an update."""
    from indexer import build_index, update_index
    from indexer.manifest import has_manifest
    from search.tail import index_advice

    with Gallery.open(gallery) as g:
        if not has_manifest(g.index_dir):
            try:
                manifest = build_index(g)
            except EmptyGalleryError:
                return None
            return {"action": "build", "factory": manifest["factory"], "ntotal": manifest["ntotal"]}
        if index_advice(g) is not None:
            manifest = update_index(g)
            return {"action": "update", "factory": manifest["factory"], "ntotal": manifest["ntotal"]}
    return {"action": "none"}


def calibrate_if_due(gallery: Path) -> dict | None:
    from search.calibrate import refresh_threshold

    report = refresh_threshold(gallery)
    return report.as_dict() if report is not None else None


def finish_erasures(gallery: Path) -> dict[str, int] | None:
    """Any writer finishes erasures an interruption left pending (when no other writer runs)."""
    from indexer.erasure import finish_pending_if_any

    outcome = finish_pending_if_any(gallery)
    return None if outcome is None else {"finished": len(outcome.finished), "pending": len(outcome.pending)}


def ingest_folder(config: ServeConfig, path: str, labels: str, workers: int | None,
                  on_progress: ProgressFn) -> dict[str, Any]:
    """The work of an ingest job: `gallery ingest` of the files whose real path lies inside the
    server's roots (links out of them are skipped and counted), then the index and the threshold
    brought up to date."""
    from gallery.ingest import IngestOptions
    from gallery.ingest.runner import Ingestor
    from gallery.ingest.scan import scan_photos

    outside: list[Path] = []
    scanned = list(scan_photos(Path(path), within=[Path(r) for r in config.ingest_roots], on_outside=outside.append))
    gallery = Gallery.open_or_create(config.gallery)
    try:
        summary = Ingestor(Path(path), gallery, IngestOptions(labels=labels, workers=workers, device=config.device),
                           scanned).run(on_progress)
    finally:
        gallery.close()
    index = refresh_index(config.gallery_path)
    return {**summary.as_dict(), "outside_roots": len(outside), "index": index,
            "erasures": finish_erasures(config.gallery_path), "calibration": calibrate_if_due(config.gallery_path)}


def _refuse_path(problem: str) -> None:
    raise ApiError(422, "bad_request", problem)


def allowed_ingest_path(config: ServeConfig, path: str) -> Path:
    """The folder, resolved (links included), when it lies inside one of the roots the server was
    started with. Only absolute paths: a relative one would depend on the server's working folder."""
    if not config.ingest_roots:
        raise ApiError(403, "ingest_disabled", "This server reads no server-side folders: start it with "
                                               "--ingest-root DIR to allow ingests from DIR.")
    if "\x00" in path:
        _refuse_path("A path cannot hold a NUL character.")
    if not os.path.isabs(path):
        _refuse_path(f"'{path[:200]}' is not an absolute path: give the full path of a folder inside "
                     f"{', '.join(config.ingest_roots)}.")
    resolved = Path(path).resolve()
    for root in config.ingest_roots:
        real_root = Path(root).resolve()
        if resolved == real_root or resolved.is_relative_to(real_root):
            if not resolved.exists():
                raise ApiError(400, "not_found", f"'{resolved}' does not exist on the server.")
            return resolved
    raise ApiError(403, "outside_roots", f"'{resolved}' is outside the folders this server may read "
                                         f"({', '.join(config.ingest_roots)}).")


def _photo_name(filename: str | None, data: bytes, index: int) -> str:
    """`NN-name.ext` with the extension of the photo's real format (an upload named `blob` is still
    a JPEG), so that the ingest reads it; a format the ingest does not read is refused."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind = img.format or ""
    except (UnidentifiedImageError, OSError, ValueError):
        kind = ""  # check_decodes says what is wrong with it
    stem = Path(clean_name(filename, "photo")).stem or "photo"
    return f"{index:02d}-{stem}{EXTENSIONS.get(kind, Path(clean_name(filename, 'photo.jpg')).suffix or '.jpg')}"


def enrol(config: ServeConfig, gallery: Gallery, name: str, photos: list[tuple[str | None, bytes]]) -> dict[str, Any]:
    """Photos of one person: kept in the enrolment folder (unless the gallery holds them already),
    ingested, and their main faces named (see the module docstring)."""
    from gallery.ingest import IngestOptions, ingest

    name = name.strip()
    if not name:
        raise ApiError(400, "bad_request", "Enrolment needs a name.")
    if not photos:
        raise ApiError(400, "bad_request", "Enrolment needs at least one photo (multipart field 'file').")
    if len(photos) > MAX_ENROL_PHOTOS:
        raise ApiError(400, "bad_request", f"At most {MAX_ENROL_PHOTOS} photos per enrolment request.")
    hashes = [hashlib.sha256(data).hexdigest() for _, data in photos]
    folder = Path(config.enrol_dir).resolve() / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
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
                check_decodes(path, filename, config.max_upload_bytes)
            if saved:
                ingest(folder, config.gallery, IngestOptions(labels="none", workers=0, device=config.device))
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
    index = refresh_index(config.gallery_path)
    return {"identity": name, "photos": len(photos), "faces_labeled": len(labeled), "face_ids": labeled,
            "no_face": no_face, "duplicates": len(photos) - len(saved), "saved": len(saved) - len(empty),
            "index": index, "erasures": finish_erasures(config.gallery_path),
            "calibration": calibrate_if_due(config.gallery_path)}


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or holding the photos just enrolled


def erase(config: ServeConfig, command: str, lock_wait_s: float, **selection: Any) -> dict[str, Any]:
    """`indexer.erasure.erase`: every file of the gallery, the enrolled copies included. The answer says
    what becomes of the photo archive (`archive`), which erasure never touches."""
    from gallery.store.erase import ErasureSelection
    from indexer.erasure import erase as run_erase

    report = run_erase(config.gallery, ErasureSelection(**selection), command, lock_wait_s=lock_wait_s).as_dict()
    photos = f"{report['photos']} erased photo{'' if report['photos'] == 1 else 's'}"
    report["archive"] = (
        f"The photo archive is not touched; ingest and sync keep the {photos} out from now on (a keyed fingerprint "
        "of each, nothing readable). `gallery photos admit PATH...` lets them in again."
        if selection.get("keep_out") else
        f"The photo archive is not touched: if it still holds the {photos}, the next ingest or sync of it reads them "
        "in again. Delete them there, or keep them out with `gallery photos keep-out PATH...`.")
    return report
