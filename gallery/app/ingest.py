"""Ingest then refresh: the one sequence after which new photos are answered, for `gallery ingest`,
`gallery sync` and the server's ingest jobs alike.

    ingest (or sync) -> finish pending erasures -> update the index when due -> calibrate when due

The index is updated when the faces ingested since its build have passed the point where every query
pays for searching them exactly (gallery.app.indexing); a gallery without an index gets the advice to
build one (`next`), not a build: the first build is the step with choices (index type, memory budget,
GPU) and the cost that grows with the archive, and an archive is often ingested in several runs before
its first search. Both doors used to differ (the server built and updated the index, the CLI only
advised); now an ingest leaves the gallery in the same state whichever door it came through.
"""

from __future__ import annotations

from pathlib import Path

from gallery.app.answers import IngestAnswer, SyncAnswer
from gallery.app.indexing import after_new_faces
from gallery.ingest import IngestOptions
from gallery.progress import ProgressFn


def ingest_then_refresh(source: Path | str, gallery: Path | str, options: IngestOptions,
                        on_progress: ProgressFn | None = None, engine: str = "local", address: str | None = None,
                        actors: int | None = None, ray_progress: bool = False,
                        within: list[Path] | None = None, index: bool = True) -> IngestAnswer:
    """Ingest `source` into `gallery` (created if new), then keep it searchable (module docstring).

    `within`: only files whose real path lies inside these folders are read (a server's roots; those
    outside are counted in `outside_roots`). `index=False` leaves the index as it is (the answer's
    `next` says what to run)."""
    outside: list[Path] = []
    if engine == "ray":
        from gallery.ingest.distributed import RayOptions, ray_ingest

        summary = ray_ingest(source, gallery, options, RayOptions(address=address, actors=actors,
                                                                   progress=ray_progress), on_progress)
    elif within is not None:
        from gallery.ingest.runner import Ingestor
        from gallery.ingest.scan import scan_photos
        from gallery.store import Gallery

        scanned = list(scan_photos(Path(source), within=within, on_outside=outside.append))
        g = Gallery.open_or_create(gallery)
        try:
            summary = Ingestor(Path(source), g, options, scanned).run(on_progress)
        finally:
            g.close()
    else:
        from gallery.ingest import ingest

        summary = ingest(source, gallery, options, on_progress=on_progress)
    after = after_new_faces(gallery, index=index)
    return IngestAnswer(**summary.as_dict(), **after.model_dump(), outside_roots=len(outside))


def sync_then_refresh(source: Path | str, gallery: Path | str, options: IngestOptions, retry_failed: bool = False,
                      on_progress: ProgressFn | None = None, index: bool = True) -> SyncAnswer:
    """`gallery sync`: the gallery follows the archive, then the same refresh as an ingest."""
    from gallery.ingest.sync import sync

    summary = sync(source, gallery, options, retry_failed=retry_failed, on_progress=on_progress)
    after = after_new_faces(gallery, index=index)
    return SyncAnswer(**summary.as_dict(), **after.model_dump())
