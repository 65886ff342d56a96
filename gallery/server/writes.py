"""What the service writes, through the same Python API as the CLI: ingest (then index and calibrate,
as the CLI advises after an ingest), enrolment of uploaded photos under a name, and erasure (which
also removes the enrolled copies of erased photos: an erased person leaves no file behind here)."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from gallery.errors import EmptyGalleryError
from gallery.progress import ProgressFn
from gallery.server.config import MAX_ENROL_PHOTOS, ServeConfig
from gallery.server.service import ApiError
from gallery.server.uploads import check_decodes, clean_name
from gallery.store import Gallery


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
    from search.threshold import refresh_threshold

    report = refresh_threshold(gallery)
    return report.as_dict() if report is not None else None


def ingest_folder(config: ServeConfig, path: str, labels: str, workers: int | None,
                  on_progress: ProgressFn) -> dict[str, Any]:
    """The work of an ingest job: `gallery ingest`, then the index and the threshold brought up to date."""
    from gallery.ingest import IngestOptions, ingest

    summary = ingest(path, config.gallery, IngestOptions(labels=labels, workers=workers, device=config.device),
                     on_progress=on_progress)
    index = refresh_index(config.gallery_path)
    return {**summary.as_dict(), "index": index, "calibration": calibrate_if_due(config.gallery_path)}


def allowed_ingest_path(config: ServeConfig, path: str) -> Path:
    """The folder, resolved, when it lies inside one of the roots the server was started with."""
    if not config.ingest_roots:
        raise ApiError(403, "ingest_disabled", "This server reads no server-side folders: start it with "
                                               "--ingest-root DIR to allow ingests from DIR.")
    resolved = Path(path).expanduser().resolve()
    for root in config.ingest_roots:
        if resolved == Path(root).resolve() or resolved.is_relative_to(Path(root).resolve()):
            if not resolved.exists():
                raise ApiError(400, "not_found", f"'{resolved}' does not exist on the server.")
            return resolved
    raise ApiError(403, "outside_roots", f"'{resolved}' is outside the folders this server may read "
                                         f"({', '.join(config.ingest_roots)}).")


def enrol(config: ServeConfig, gallery: Gallery, name: str, photos: list[tuple[str | None, bytes]]) -> dict[str, Any]:
    """Photos of one person: kept in the enrolment folder, ingested, and their main faces named."""
    from gallery.ingest import IngestOptions, ingest

    name = name.strip()
    if not name:
        raise ApiError(400, "bad_request", "Enrolment needs a name.")
    if not photos:
        raise ApiError(400, "bad_request", "Enrolment needs at least one photo (multipart field 'file').")
    if len(photos) > MAX_ENROL_PHOTOS:
        raise ApiError(400, "bad_request", f"At most {MAX_ENROL_PHOTOS} photos per enrolment request.")
    folder = Path(config.enrol_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    paths: list[tuple[str, Path]] = []
    try:
        for i, (filename, data) in enumerate(photos):
            path = folder / f"{i:02d}-{clean_name(filename, 'photo.jpg')}"
            path.write_bytes(data)
            check_decodes(path, filename, config.max_upload_bytes)
            paths.append((filename or path.name, path))
        summary = ingest(folder, config.gallery, IngestOptions(labels="none", workers=0, device=config.device))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    labeled, no_face = [], []
    for filename, path in paths:
        face_id = gallery.main_face_of_path(str(path.resolve()))
        (labeled.append(face_id) if face_id is not None else no_face.append(filename))
    if labeled:
        gallery.relabel_faces(labeled, name)
    index = refresh_index(config.gallery_path)
    return {"identity": name, "photos": len(paths), "faces_labeled": len(labeled), "face_ids": labeled,
            "no_face": no_face, "duplicates": summary.duplicates, "index": index,
            "calibration": calibrate_if_due(config.gallery_path)}


def erase(config: ServeConfig, gallery: Gallery, command: str, **selection: Any) -> dict[str, Any]:
    """`indexer.erasure.erase`, then the enrolled copies of photos the gallery no longer holds."""
    from gallery.store.edits import image_ids_at_paths
    from gallery.store.erase import ErasureSelection
    from indexer.erasure import erase as run_erase

    enrol_root = Path(config.enrol_dir).resolve()
    if selection.get("identity"):
        photos = {f.photo for f in gallery.identity_faces(selection["identity"])}
    else:
        records = gallery.face_records(selection.get("face_ids") or [])
        photos = {r.photo for r in records.values()}
    enrolled = [p for p in photos if Path(p).resolve().is_relative_to(enrol_root)]
    report = run_erase(config.gallery, ErasureSelection(**selection), command).as_dict()
    with gallery.session() as s:
        still = image_ids_at_paths(s, enrolled)
    removed = 0
    for p in enrolled:
        if p not in still and Path(p).exists():
            Path(p).unlink()
            removed += 1
            folder = Path(p).parent
            if folder != enrol_root and not any(folder.iterdir()):
                folder.rmdir()  # an enrolment folder left empty
    report["enrolled_files_removed"] = removed
    return report
