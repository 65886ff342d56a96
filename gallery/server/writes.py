"""What the service writes, through the application layer (gallery.app) as the CLI does: ingest of a
server-side folder (only inside the roots the server was started with), enrolment of uploaded photos
under a name, and erasure. This module adds what is the server's own: its roots, its enrolment
folder, its upload limit and device."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gallery.app.answers import EnrolAnswer, ErasureAnswer, IngestAnswer
from gallery.progress import ProgressFn
from gallery.server.config import ServeConfig
from gallery.server.service import ApiError
from gallery.store import Gallery


def ingest_folder(config: ServeConfig, path: str, labels: str, workers: int | None,
                  on_progress: ProgressFn) -> IngestAnswer:
    """The work of an ingest job: `gallery ingest` of the files whose real path lies inside the
    server's roots (links out of them are skipped and counted), then the same refresh as the CLI's."""
    from gallery.app.ingest import ingest_then_refresh
    from gallery.ingest import IngestOptions

    return ingest_then_refresh(Path(path), config.gallery_path,
                               IngestOptions(labels=labels, workers=workers, device=config.device), on_progress,
                               within=[Path(r) for r in config.ingest_roots])


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


def enrol(config: ServeConfig, gallery: Gallery, name: str, photos: list[tuple[str | None, bytes]]
          ) -> dict[str, Any]:
    """gallery.app.people.enrol into the server's enrolment folder (erasure reaches the copies kept
    there: the server records the folder in the gallery), within the server's upload limit; the
    EnrolAnswer as the JSON the job records and the API answers."""
    from gallery.app.people import enrol as run_enrol

    answer: EnrolAnswer = run_enrol(gallery, name, photos, config.enrol_dir, device=config.device,
                                    max_photo_bytes=config.max_upload_bytes)
    return answer.model_dump(mode="json")


def erase(config: ServeConfig, command: str, lock_wait_s: float, **selection: Any) -> ErasureAnswer:
    """gallery.app.people.erase: every file of the gallery, the enrolled copies included."""
    from gallery.app.people import erase as run_erase

    return run_erase(config.gallery, command, lock_wait_s, **selection)
