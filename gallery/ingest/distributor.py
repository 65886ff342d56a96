"""Where an ingest runs: this process (gallery.ingest.runner) or a Ray cluster (gallery.ingest.distributed).

The one entry point, `ingest()`, sits above both engines: the runner does not know the distributed
engine, and the distributed engine reuses the runner's commit protocol.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from gallery.ingest.runner import IngestOptions, Ingestor, IngestSummary
from gallery.progress import ProgressFn
from gallery.store import Gallery


def ingest(
    source: Path | str,
    gallery_dir: Path | str,
    options: IngestOptions | None = None,
    on_progress: ProgressFn | None = None,
    engine: str = "local",
    address: str | None = None,
    **overrides: Any,
) -> IngestSummary:
    """Ingest a photo folder (or one photo) into a gallery folder; safe to re-run (it resumes).

    Options come from `options` with any keyword overrides applied (`ingest(src, g, workers=0)`).
    `engine="ray"` reads, decodes and embeds on a Ray cluster (`address`: "auto", HOST:PORT, or None
    for the cluster this process is connected to or a local one) and commits here, exactly once;
    see gallery.ingest.distributed.
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"Unknown ingest engine '{engine}': use local or ray.")
    opts = replace(options or IngestOptions(), **overrides)
    if not Path(source).exists():
        raise FileNotFoundError(f"Photo source '{Path(source).resolve()}' does not exist.")
    if engine == "ray":
        from gallery.ingest.distributed import RayOptions, ray_ingest

        return ray_ingest(source, gallery_dir, opts, RayOptions(address=address), on_progress)
    gallery = Gallery.open_or_create(gallery_dir)
    try:
        return Ingestor(Path(source), gallery, opts).run(on_progress)
    finally:
        gallery.close()
