"""What a gallery holds and the decisions in force: the one builder of `gallery info --json` and of
GET /v1/status (a server adds its own settings and running jobs)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from gallery.app.answers import CalibrationState, GalleryStatus, Identification, IndexState, ServerState
from gallery.errors import NoIndexError
from gallery.store import Gallery


def index_state(g: Gallery) -> IndexState:
    """The index's type, size, build time and freshness (faces not in it yet), and what to run next."""
    from gallery.app.indexing import index_advice
    from indexer.manifest import read_manifest

    try:
        manifest = read_manifest(g.index_dir, g.root)
    except NoIndexError as exc:
        return IndexState(advice=str(exc))
    return IndexState(factory=manifest["factory"], ntotal=manifest["ntotal"], built_at=manifest.get("built_at"),
                      max_face_id=manifest["max_face_id"],
                      unindexed_faces=g.live_face_count(after_face_id=int(manifest["max_face_id"])),
                      advice=index_advice(g))


def status(gallery: Gallery | Path | str, server: ServerState | None = None,
           jobs_running: int | None = None) -> GalleryStatus:
    """The gallery's status (an open Gallery, or a folder opened for the call)."""
    from gallery.store.keep_out import kept_out_count
    from search.threshold import calibration_record, calibration_status, resolve_decision, resolve_one_to_one

    if not isinstance(gallery, Gallery):
        with Gallery.open(gallery) as g:
            return status(g, server, jobs_running)
    g = gallery
    info = g.info()
    decision = resolve_decision(g)
    one, one_source = resolve_one_to_one(g)
    report = (calibration_record(g) or {}).get("report") or {}
    held = info.as_dict()
    stamp = held.pop("model")
    return GalleryStatus(
        **held,
        model=stamp["name"] if stamp else None,
        model_stamp=stamp,
        threshold=decision.threshold,
        threshold_source=decision.source,
        rule=decision.rule.as_dict(),
        one_to_one_threshold=one,
        one_to_one_source=one_source,
        identification=Identification(rule=decision.rule.as_dict(), weight=decision.rule.weight,
                                      fnir_at=report.get("fnir_at"), rank1=report.get("rank1")),
        calibration=CalibrationState(**asdict(calibration_status(g))),
        index=index_state(g),
        problems=g.quick_problems(),
        kept_out=kept_out_count(g),
        jobs_running=jobs_running,
        server=server,
    )
