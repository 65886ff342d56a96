"""`gallery check` and `gallery repair`, the store's side: the database, the shards, the runs, and
the places an erasure must reach that the store owns.

Checks: SQLite `quick_check` (`integrity_check` with deep=True); every committed shard present, of
its recorded size and checksum, with its recorded row count and exactly the face ids SQLite gives it
(a vector without a face row is an erased face still on disk); shard files no row names (crash
leftovers); runs still marked running with no writer alive; erasures recorded but not finished;
with no writer running, staged batches of a killed distributed ingest, files in the enrolment folders
that no record names, and the folders of servers that were killed; with deep=True every embedding
finite and unit length.

Repairs: a lost or damaged shard is written again from the copies of its vectors that the caller
finds (the index folder's, the photos': gallery.store.restore), so its faces keep their ids and every
curation; only faces nothing restored are dropped from SQLite (with the records of photos left without
a face, so the next ingest reads them again) and recorded as a pending erasure so that the index
sheds them too (indexer.health finishes it); leftover shard files are deleted; stale runs are closed
as interrupted. A damaged database cannot be repaired in
place: the finding says how to recover.
"""

from __future__ import annotations

import sqlite3
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, text, update
from sqlalchemy.exc import DatabaseError

from gallery.errors import DamagedData
from gallery.store.erase import (
    enrolled_leftovers,
    pending_records,
    server_leftovers,
    staged_leftovers,
)
from gallery.store.restore import LostFace, Recovered, lost_faces, rebuild_shard, salvage_landmarks
from gallery.store.schema import Face, Run
from gallery.store.shards import SHARD_PREFIX, shard_face_ids
from gallery.store.templates import build_all_templates, template_problems

if TYPE_CHECKING:
    from gallery.store.gallery import Gallery


@dataclass
class Finding:
    area: str  # database | shards | runs | vectors | index
    ok: bool
    detail: str
    fix: str | None = None  # the command that mends it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DATABASE_WAY_OUT = ("A damaged gallery.db cannot be mended in place: restore the gallery from a backup "
                    "(gallery restore BACKUP NEW_FOLDER), or ingest the photo archive into a new gallery folder "
                    "(the shards hold vectors and boxes but not the names, paths and curation that were in it).")


def unopenable_database(root: Path, exc: BaseException) -> Finding:
    """The finding for a gallery.db that SQLite cannot open at all (truncated, its header garbled)."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
    size = (root / "gallery.db").stat().st_size if (root / "gallery.db").is_file() else 0
    return Finding("database", False, f"{root / 'gallery.db'} ({size:,} bytes) cannot be opened: {reason} (the file "
                   "is truncated or its header is garbled)", DATABASE_WAY_OUT)


def damaged_shards(gallery: Gallery) -> dict[int, str]:
    """shard id -> what is wrong with it (missing, size, checksum, rows, ids)."""
    out: dict[int, str] = {}
    for row in gallery.shard_rows():
        problem = gallery.shard_problem(row)
        if problem is None:
            with gallery.session() as s:
                recorded = np.asarray(sorted(s.scalars(select(Face.face_id).where(Face.shard_id == row.shard_id))))
            stored = np.sort(shard_face_ids(gallery.shards_dir / row.filename))
            extra = np.setdiff1d(stored, recorded)  # vectors without a row: an unfinished erasure
            if np.setdiff1d(recorded, stored).size:
                problem = f"{np.setdiff1d(recorded, stored).size} faces recorded in SQLite are missing from it"
            elif extra.size:
                problem = f"holds {extra.size} vectors of erased faces (an erasure was interrupted)"
        if problem is not None:
            out[row.shard_id] = problem
    return out


def check_store(gallery: Gallery, deep: bool = False) -> list[Finding]:
    root = gallery.root
    findings: list[Finding] = []
    pragma = "integrity_check" if deep else "quick_check"
    try:
        with gallery.engine.connect() as conn:
            result = [r[0] for r in conn.execute(text(f"PRAGMA {pragma}"))]
        ok = result == ["ok"]
        findings.append(Finding("database", ok, f"{pragma}: " + ("ok" if ok else "; ".join(result[:5])),
                                None if ok else DATABASE_WAY_OUT))
    except DatabaseError as exc:
        findings.append(Finding("database", False, f"{pragma} failed: {exc.orig}", DATABASE_WAY_OUT))
        return findings
    rows = gallery.shard_rows()
    damaged = damaged_shards(gallery)
    for row in rows:
        if row.shard_id in damaged:
            findings.append(Finding("shards", False, f"{row.filename}: {damaged[row.shard_id]}",
                                    f"gallery repair --gallery {root}"))
    unverified = sum(1 for r in rows if r.sha256 is None)
    findings.append(Finding("shards", not damaged, f"{len(rows) - len(damaged)} of {len(rows)} shards intact"
                            + (f" ({unverified} written before checksums: sizes and rows checked)" if unverified
                               else "")))
    committed = {r.filename for r in rows}
    stray = [p.name for p in sorted(gallery.shards_dir.glob(f"*{SHARD_PREFIX}*")) if p.name not in committed]
    if stray:
        findings.append(Finding("shards", False, f"{len(stray)} files no commit names (left by a crash): "
                                f"{', '.join(stray[:3])}", f"gallery repair --gallery {root}"))
    with gallery.session() as s:
        running = list(s.scalars(select(Run.run_id).where(Run.status == "running")))
    writer = gallery.writer_active()
    if running and not writer:
        findings.append(Finding("runs", False, f"{len(running)} runs still marked running with no writer alive",
                                f"gallery repair --gallery {root}"))
    findings += erasure_findings(gallery, writer)
    if deep and not damaged:
        try:
            n = sum(ids.size for ids, _ in gallery.iter_embeddings())
            findings.append(Finding("vectors", True, f"{n:,} embeddings finite and unit length"))
        except DamagedData as exc:
            findings.append(Finding("vectors", False, str(exc), f"gallery repair --gallery {root}"))
        else:
            problems = template_problems(gallery)
            findings.append(Finding("templates", not problems,
                                    "identity templates agree with their faces" if not problems else
                                    f"{len(problems)} identity templates disagree with their faces "
                                    f"({'; '.join(problems[:3])})", None if not problems else
                                    f"gallery repair --gallery {root}"))
    return findings


def erasure_findings(gallery: Gallery, writer_running: bool) -> list[Finding]:
    """Erasures not finished, and files an erasure must reach that a crash left behind."""
    root = gallery.root
    fix = f"gallery repair --gallery {root}"
    out = []
    for record in pending_records(gallery):
        why = f" ({record.problem})" if record.problem else ""
        out.append(Finding("erasure", False, f"an erasure started by `{record.command}` at "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record.started_at))} is pending: "
                           f"reached {', '.join(record.done) or 'no place'} so far{why}; its faces are out of "
                           "every answer, but files may still hold them", fix))
    if writer_running:  # a writer's staged batches, enrolment uploads and running jobs are work in flight
        return out
    staged = staged_leftovers(gallery)
    if staged:
        out.append(Finding("staging", False, f"{len(staged)} staged batches left by an interrupted `--engine ray` "
                           "ingest (embeddings and paths of photos, some possibly erased since)",
                           f"{fix} (drops them; the next ingest reads their photos again)"))
    enrolled = enrolled_leftovers(gallery)
    if enrolled:
        out.append(Finding("enrolled", False, f"{len(enrolled)} files in the enrolment folders that no record of "
                           f"the gallery names (copies of erased photos, or an interrupted enrolment): "
                           f"{', '.join(p.name for p in enrolled[:3])}", fix))
    servers = server_leftovers(gallery)
    if servers:
        out.append(Finding("server", False, f"{len(servers)} folders of servers that were killed (job records and "
                           f"uploads): {', '.join(p.name for p in servers[:3])}", fix))
    return out


RecoverFn = Callable[[int, list[LostFace], Recovered], None]


def repair_store(gallery: Gallery, recover: RecoverFn | None = None) -> dict[str, Any]:
    """Mend what check_store finds (see the module docstring); returns what was done.

    A lost or damaged shard is written again from the vectors `recover(shard_id, faces, recovered)`
    finds (the index's copies, the photos); its faces keep their ids and every curation. The faces
    nothing restored are dropped and recorded as a pending erasure, so the index and the re-rank file
    shed them too; the report names each with the reason."""
    with gallery.writer_lock():
        damaged = damaged_shards(gallery)
        names = {r.shard_id: r.filename for r in gallery.shard_rows()}
        # a shard that only holds erased vectors keeps its rows: the pending erasure rewrites the file
        lost = [i for i, problem in damaged.items() if not (problem.startswith("holds") and "erased" in problem)]
        counts = {"faces_restored": 0, "faces_dropped": 0, "photos_to_reingest": 0}
        sources: dict[str, int] = {}
        dropped: list[dict[str, Any]] = []
        shards_dropped = 0
        for shard_id in lost:
            faces = lost_faces(gallery, shard_id)
            recovered = Recovered(reasons={f.face_id: "no intact copy of its vector was looked for" for f in faces})
            if recover is not None and faces:
                recover(shard_id, faces, recovered)
            marks = salvage_landmarks(gallery.shards_dir / names[shard_id])
            done = rebuild_shard(gallery, shard_id, faces, recovered, marks)
            for key in counts:
                counts[key] += done[key]
            shards_dropped += int(done["faces_restored"] == 0)
            for source in recovered.sources.values():
                sources[source] = sources.get(source, 0) + 1
            dropped += [{"face_id": f.face_id, "photo": f.photo_paths[0], "why": recovered.reasons.get(f.face_id)}
                        for f in faces if f.face_id not in recovered.embeddings]
        removed = gallery.remove_orphan_shards()
        with gallery.session() as s, s.begin():
            closed = s.execute(update(Run).where(Run.status == "running")
                               .values(status="interrupted", finished_at=time.time())).rowcount
        templates = build_all_templates(gallery, force=True)  # whatever happened before: right from here
    return {"shards_damaged": len(lost), "shards_rebuilt": len(lost) - shards_dropped,
            "shards_dropped": shards_dropped, "faces_restored": counts["faces_restored"],
            "restored_from": sources, "faces_dropped": counts["faces_dropped"], "dropped": dropped,
            "photos_to_reingest": counts["photos_to_reingest"], "leftover_files_removed": len(removed),
            "stale_runs_closed": int(closed or 0), "templates_rebuilt": templates}


WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums of little-endian / big-endian words


def _wal_checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    words = np.frombuffer(data, dtype=">u4" if big_endian else "<u4").tolist()
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1


def wal_problem(db_path: Path) -> str | None:
    """What is wrong with the database's write-ahead log, or None. SQLite replays the WAL's frames up
    to the first one whose checksum fails and ignores the rest in silence: commits after a garbled
    frame are lost without a word. Read before anything opens the gallery (the last connection to
    close checkpoints the WAL and deletes it, evidence and all)."""
    wal = Path(f"{db_path}-wal")
    try:
        data = wal.read_bytes()
    except OSError:
        return None
    if len(data) < 32:
        return None
    magic, _version, page_size, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:32])
    if magic not in WAL_MAGIC:
        return f"{wal.name} has a garbled header: SQLite ignores the whole log and every commit in it"
    big = magic == WAL_MAGIC[1]
    s0, s1 = _wal_checksum(data[:24], big, 0, 0)
    if (s0, s1) != (c1, c2):
        return f"{wal.name} has a garbled header: SQLite ignores the whole log and every commit in it"
    frame = 24 + page_size
    offset, good, commits = 32, 0, 0
    while offset + frame <= len(data):
        head = data[offset:offset + 24]
        _page, commit, f1, f2, k1, k2 = struct.unpack(">6I", head)
        if (f1, f2) != (salt1, salt2):
            break  # a frame of an older log generation: not part of this one
        t0, t1 = _wal_checksum(head[:8], big, s0, s1)
        t0, t1 = _wal_checksum(data[offset + 24:offset + frame], big, t0, t1)
        if (t0, t1) != (k1, k2):
            later = 0
            lost = 0
            for rest in range(offset, len(data) - frame + 1, frame):
                _p, c, r1, r2 = struct.unpack(">4I", data[rest:rest + 16])
                if (r1, r2) == (salt1, salt2):
                    later += 1
                    lost += int(c != 0)
            return (f"{wal.name}: frame {good + 1} is garbled; SQLite ignores it and the {later - 1} frames after it "
                    f"({lost} commits since the last good one are lost)")
        s0, s1 = t0, t1
        good += 1
        commits += int(commit != 0)
        offset += frame
    return None


def open_for_check(root: Path, open_gallery: Callable[[], Gallery]) -> tuple[Gallery | None, list[Finding]]:
    """Open a gallery for `check`/`repair`: (the gallery, or None when SQLite cannot open its database,
    and the findings made before and while opening: a garbled write-ahead log, which must be read before
    the gallery is opened, and an unopenable database)."""
    from sqlalchemy.exc import DatabaseError as SqlDatabaseError

    db = root / "gallery.db"
    wal = wal_problem(db)
    found = [Finding("database", False, wal, "the commits after the garbled frame are lost: restore the gallery "
                     "from a backup (gallery restore BACKUP NEW_FOLDER) or redo them")] if wal else []
    try:
        return open_gallery(), found
    except (SqlDatabaseError, sqlite3.DatabaseError) as exc:
        return None, [*found, unopenable_database(root, exc)]
