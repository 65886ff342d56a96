"""Erase faces, photos or a person from every file of a gallery, and finish erasures that were
interrupted: the durable erasure use case, above the store's and the index's places.

An erasure is one durable operation (see gallery.store.erase): it is recorded first, in the
transaction that deletes its rows (ids only: never a name, a path or a vector), so its faces leave
every answer at once; then it is carried to every place that can still hold them, in the order of
`STEPS`, one function per place:

    shards    the Parquet shards that held a face are rewritten without it
    index     the ids are removed from the FAISS index (indexer.erasure)
    rerank    the ids' rows of the re-rank vectors file are overwritten with zeros (indexer.erasure)
    staging   staged batches of an interrupted distributed ingest are dropped
    enrolled  copies of erased photos in the enrolment folders are deleted
    server    a killed server's folder and finished job records are deleted
    sqlite    the WAL is checkpointed into the database and truncated (checked: a reader holding an
              old snapshot keeps the erased rows alive until it lets go)

A place that cannot be reached now (the index lock held by a build, readers holding the database)
leaves the erasure pending with the reason; the same command, `gallery repair`, an index build or
update, an ingest, sync or enrolment (CLI or server), or any later erasure finishes it, and `gallery
check` fails until then. An index build that started before the erasure takes its faces out at its
commit (indexer.build), so no build commits an erased face. To erase one more place, add one step here.

What it does not reach: copies outside the gallery folder (backups, exported CSVs, crops written
elsewhere, the photo archive itself) and the free blocks of the filesystem.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gallery.errors import GalleryBusy, NotInGallery
from gallery.store import Gallery
from gallery.store import erase as store
from gallery.store.erase import ErasureSelection, ErasureWork, PendingRecord, StepBlocked
from indexer.erasure import DEFAULT_LOCK_WAIT_S, remove_from_index, zero_rerank_rows
from indexer.loaded import as_gallery

__all__ = ["DEFAULT_LOCK_WAIT_S", "STEPS", "ErasureReport", "ErasureStep", "FinishOutcome", "erase",
           "finish_pending", "finish_pending_if_any"]


@dataclass(frozen=True)
class ErasureStep:
    """One place an erasure reaches: `run(gallery, work)` returns facts for the report, or raises
    StepBlocked when the place cannot be reached now."""

    place: str
    run: Callable[[Gallery, ErasureWork], dict[str, Any]]


# The places an erasure reaches, in order (see the module docstring). Identity templates, where a
# gallery keeps them, are one more step.
STEPS: tuple[ErasureStep, ...] = (
    ErasureStep("shards", store.rewrite_shards),
    ErasureStep("index", remove_from_index),
    ErasureStep("rerank", zero_rerank_rows),
    ErasureStep("staging", store.clear_staging),
    ErasureStep("enrolled", store.remove_enrolled_copies),
    ErasureStep("server", store.clear_server_records),
    ErasureStep("sqlite", store.checkpoint_wal),
)


@dataclass
class FinishOutcome:
    """What one attempt to finish the pending erasures did."""

    finished: list[PendingRecord] = field(default_factory=list)
    pending: list[PendingRecord] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)  # place -> why it was not reached
    facts: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # faces, photos, identities of the finished ones


def _brief(exc: BaseException) -> str:
    """An exception as a record may keep it: its kind, never its text (which can name a path)."""
    if isinstance(exc, OSError) and exc.errno:
        return f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror})"
    return type(exc).__name__


def finish_pending(gallery: Gallery | str | Path, lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
                   sweep: bool = False) -> FinishOutcome:
    """Carry every pending erasure to every place it has not reached (with sweep=True, also clean
    every place of what the gallery no longer holds). Takes the writer lock: GalleryBusy while
    another writer runs. A failure other than StepBlocked (a full disk) is raised; the erasure stays
    pending with the steps it completed."""
    g, owned = as_gallery(gallery)
    try:
        with g.writer_lock():
            records = store.pending_records(g)
            if not records and not sweep:
                return FinishOutcome(counts={"faces": 0, "photos": 0, "identities": 0})
            work = store.pending_work(g, records, lock_wait_s, sweep)
            ids = [r.erasure_id for r in records]
            outcome = FinishOutcome()
            for step in STEPS:
                todo = [r.erasure_id for r in records if step.place not in r.done]
                if not todo and not sweep:
                    continue
                try:
                    outcome.facts.update(step.run(g, work) or {})
                except StepBlocked as exc:
                    outcome.blocked[step.place] = str(exc)
                    continue
                except BaseException as exc:
                    if ids:
                        store.note_problem(g, ids, f"{step.place}: stopped by {_brief(exc)}")
                    raise
                if todo:
                    store.mark_done(g, todo, step.place)
            if ids:
                store.note_problem(g, ids, "; ".join(f"{p}: {why}" for p, why in outcome.blocked.items()) or None)
            outcome.finished = store.complete(g, [s.place for s in STEPS])
            outcome.pending = store.pending_records(g)
            outcome.counts = store.logged_counts(g, outcome.finished)
            return outcome
    finally:
        if owned:
            g.close()


def finish_pending_if_any(gallery: Gallery | str | Path, lock_wait_s: float = 0.0) -> FinishOutcome | None:
    """After another write: finish pending erasures when there are any and the gallery is free (no
    other writer); None when there was nothing to do or it could not start."""
    g, owned = as_gallery(gallery)
    try:
        if not store.pending_records(g):
            return None
        try:
            return finish_pending(g, lock_wait_s)
        except GalleryBusy:
            return None
    finally:
        if owned:
            g.close()


@dataclass
class ErasureReport:
    command: str
    faces: int
    photos: int
    identities: int
    shards_rewritten: int
    index: str  # "patched", "rebuilt", "unchanged", "none" (no index yet), "pending"
    seconds: float
    status: str = "done"  # done | pending
    pending: dict[str, str] = field(default_factory=dict)  # place -> why it is not reached yet
    finished_earlier: int = 0  # erasures of earlier commands finished by this one
    detail: str | None = None
    enrolled_files_removed: int = 0
    places: dict[str, Any] = field(default_factory=dict)  # what each place reached did (counts, states)
    kept_out: int = 0  # erased photos that ingest and sync keep out from now on

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def message(self, gallery: Path | str) -> str:
        """One paragraph for a person: what happened, and what to run next when it is pending."""
        if self.status == "pending":
            why = "; ".join(f"{place}: {reason}" for place, reason in self.pending.items())
            return (f"erasure pending: {why}. The faces are out of every answer already, but not yet out of every "
                    f"file. It is finished by the same command, `gallery repair --gallery {gallery}`, or the next "
                    "index build; `gallery check` fails until then.")
        if self.detail:  # the selection was erased by an earlier, interrupted run of the command
            return f"finished {self.finished_earlier} pending erasure(s). {self.detail}"
        earlier = f"; finished {self.finished_earlier} pending erasure(s) too" if self.finished_earlier else ""
        return (f"erased {self.faces} faces and {self.photos} photos from every file of the gallery "
                f"({self.shards_rewritten} shards rewritten, index {self.index}, {self.seconds:.1f} s){earlier}")


def _index_state(outcome: FinishOutcome) -> str:
    if "index" in outcome.blocked:
        return "pending"
    return str(outcome.facts.get("index", "none"))


def erase(gallery: Gallery | str | Path, selection: ErasureSelection, command: str,
          lock_wait_s: float = DEFAULT_LOCK_WAIT_S) -> ErasureReport:
    """Erase the selection from every file of the gallery (see the module docstring); earlier pending
    erasures are finished too. A selection that names nothing raises NotInGallery, unless an earlier
    erasure was pending (the same command run again after an interruption): then that is finished."""
    t0 = time.perf_counter()
    g, owned = as_gallery(gallery)
    try:
        with g.writer_lock(nested=True):  # finish_pending below enters it
            detail = None
            try:
                recorded = store.record_erasure(g, selection, command)
            except NotInGallery:
                if not store.pending_records(g):
                    raise
                recorded, detail = None, "Nothing the command names is in the gallery any more."
            outcome = finish_pending(g, lock_wait_s)
        mine = recorded.erasure_id if recorded else None
        counts = (dict(faces=recorded.faces, photos=recorded.photos, identities=recorded.identities) if recorded
                  else {"faces": 0, "photos": 0, "identities": 0})
        return ErasureReport(
            command, counts["faces"], counts["photos"], counts["identities"],
            int(outcome.facts.get("shards_rewritten", 0)), _index_state(outcome), round(time.perf_counter() - t0, 3),
            status="pending" if outcome.pending else "done", pending=dict(outcome.blocked) if outcome.pending else {},
            finished_earlier=sum(1 for r in outcome.finished if r.erasure_id != mine and r.command != "repair"),
            detail=detail, enrolled_files_removed=int(outcome.facts.get("enrolled_files_removed", 0)),
            places=outcome.facts, kept_out=recorded.kept_out if recorded else 0)
    finally:
        if owned:
            g.close()


