"""What keeps a gallery searchable after a write: the index policy (`index_advice`), bringing the index
up to date (`refresh_index`), calibrating when due (`calibrate_if_due`), finishing pending erasures, and
the whole sequence every write that adds faces runs (`after_new_faces`): ingest, sync and enrolment,
from the CLI and from the server alike. `gallery index build|update` are here too (`build`, `update`):
the index operation, then the same erasures and calibration.

The index is brought up to date when it is due:
- an index exists and the faces ingested since it was built (the un-indexed tail, searched exactly by
  every query) have passed `search.tail.TAIL_WARN_FACES`: the new faces are folded in (`update`: no retraining);
- no index yet: built only where the caller asks for it (`build_when_missing`): an enrolment, whose
  person must be found by the next search. After an ingest or a sync the first build stays a command
  of its own (`gallery index build`, said in the answer's `next`): it is the step with choices (index
  type, memory budget, GPU) and the cost that grows with the archive (IVF-PQ training), and an archive
  is often ingested in several runs before its first search.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gallery.errors import EmptyGalleryError, NoIndexError
from gallery.store import Gallery

if TYPE_CHECKING:
    from gallery.app.answers import AfterWrite, Calibration, ErasuresFinished, IndexRefresh


def index_advice(gallery: Gallery) -> str | None:
    """What to run after an ingest so that searches stay fast, or None when nothing is needed."""
    from indexer.manifest import read_manifest
    from search.tail import TAIL_WARN_FACES

    try:
        manifest = read_manifest(gallery.index_dir, gallery.root)
    except NoIndexError:
        return f"searches need an index: gallery index build --gallery {gallery.root}"
    tail = gallery.live_face_count(after_face_id=int(manifest["max_face_id"]))
    if tail > TAIL_WARN_FACES:
        return (f"{tail:,} faces are not in the index yet (searched exactly until then); "
                f"fold them in: gallery index update --gallery {gallery.root}")
    return None


def refresh_index(gallery: Path | str, build_when_missing: bool = False) -> IndexRefresh:
    """Bring the index up to date when it is due (see the module docstring): `action` says what was
    done (build, update, none)."""
    from gallery.app.answers import IndexRefresh
    from indexer import build_index, update_index
    from indexer.manifest import has_manifest

    with Gallery.open(gallery) as g:
        manifest: Any = None
        if not has_manifest(g.index_dir):
            if build_when_missing:
                try:
                    manifest = build_index(g)
                except EmptyGalleryError:
                    manifest = None
                action = "build" if manifest is not None else "none"
            else:
                action = "none"
        elif index_advice(g) is not None:
            manifest, action = update_index(g), "update"
        else:
            action = "none"
    return IndexRefresh(action=action, factory=manifest["factory"] if manifest else None,
                        ntotal=manifest["ntotal"] if manifest else None)


def calibrate_if_due(gallery: Path | str) -> Calibration | None:
    """Calibrate the decision rule and thresholds when the rule of search.threshold says so (enough
    identities with a mate, and no calibration yet or a stale one) and there is an index to search;
    the report, or None when nothing was done. Deciding costs one SQLite query; only a calibration
    loads the search machinery. Faces never measured for quality (a gallery from before quality
    measures) are measured first from their stored landmarks, so that the calibration leaves out those
    below the gate."""
    from gallery.app.answers import Calibration
    from search.threshold import TARGET_FPIR, calibration_status, needs_calibration

    with Gallery.open(gallery) as g:
        if g.unmeasured_face_count():
            from gallery.ingest.quality import measure_gallery

            measure_gallery(g)
        if not needs_calibration(calibration_status(g)):
            return None
    from search.calibrate import calibrate
    from search.searcher import Searcher

    try:
        searcher = Searcher(gallery)
    except NoIndexError:
        return None
    with searcher:
        return Calibration.model_validate(calibrate(searcher, target_fpir=TARGET_FPIR).as_dict())


def finish_erasures(gallery: Path | str) -> ErasuresFinished | None:
    """Any writer finishes the erasures an interruption left pending (when no other writer runs); None
    when there were none."""
    from gallery.app.answers import ErasuresFinished
    from gallery.app.erasure import finish_pending_if_any

    outcome = finish_pending_if_any(gallery)
    if outcome is None:
        return None
    return ErasuresFinished(finished=len(outcome.finished), pending=len(outcome.pending), blocked=outcome.blocked)


def after_new_faces(gallery: Path | str, build_when_missing: bool = False, index: bool = True) -> AfterWrite:
    """After a write that added faces (ingest, sync, enrolment): finish pending erasures, bring the index
    up to date when due (`index=False`: leave it, say what is advised), calibrate when due."""
    from gallery.app.answers import AfterWrite, IndexRefresh

    erasures = finish_erasures(gallery)
    refreshed = refresh_index(gallery, build_when_missing) if index else IndexRefresh(action="none")
    calibration = calibrate_if_due(gallery)
    with Gallery.open(gallery) as g:
        advice = index_advice(g)
    return AfterWrite(index=refreshed, erasures=erasures, calibration=calibration, next=advice)


def build(gallery: Path | str, **options: Any) -> dict[str, Any]:
    """`gallery index build`: build (or rebuild) the index with `options` (indexer.build_index), then
    finish pending erasures and calibrate when due. The manifest, with `erasures` and `calibration`."""
    from indexer import build_index

    manifest: dict[str, Any] = dict(build_index(gallery, **options))
    return _after_index(gallery, manifest)


def update(gallery: Path | str) -> dict[str, Any]:
    """`gallery index update`: fold the faces ingested since the last build into the index, then the
    same as `build`."""
    from indexer import update_index

    return _after_index(gallery, dict(update_index(gallery)))


def _after_index(gallery: Path | str, manifest: dict[str, Any]) -> dict[str, Any]:
    erasures = finish_erasures(gallery)
    calibration = calibrate_if_due(gallery)
    manifest["erasures"] = erasures.model_dump() if erasures else None
    manifest["calibration"] = calibration.model_dump() if calibration else None
    return manifest
