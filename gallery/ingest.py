"""Ingestion orchestration: scan → decode (worker processes) → detect → align + embed → commit.

Each stage lives in its own module; this one only wires them together and owns the commit
protocol that makes a run exactly-once:

1. faces accumulate in memory with vector ids allocated above the highest committed id;
2. a shard is written to a temp file, fsynced and renamed (gallery.store.shards.write_shard);
3. one SQLite transaction then records the shard, its faces, their photos and every failed or
   duplicate file seen since the previous commit.

A crash before 3 leaves a shard file with no row: the next run deletes it and redoes those photos
(their files were never recorded, so they are not skipped). A crash after 3 has lost nothing.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import func, insert, select, update

from gallery.align import align_faces
from gallery.decode import DecodedPhoto, decode_photo, timed_decode
from gallery.detect import Detections, FaceDetector, main_face_index
from gallery.device import resolve_device
from gallery.labels import LabelFn, make_label_fn
from gallery.models import get_model_spec
from gallery.models.embedder import Embedder
from gallery.scan import FoundFile, scan_photos
from gallery.store import Gallery, db
from gallery.store.db import Face, Image, Run, Shard, SourceFile
from gallery.store.shards import ShardRows, shard_filename, write_shard


@dataclass
class IngestOptions:
    labels: str = "folder"
    model: str = "facenet-vggface2"
    weights: Path | None = None
    device: str = "auto"
    batch_size: int = 32  # photos per detection batch
    embed_batch_size: int = 64  # faces per embedding batch
    workers: int | None = None  # decode processes; None = one per core (at most 8), 0 = in-process
    min_face_size: int = 20  # pixels in the original photo
    det_threshold: float = 0.9
    max_side: int = 2048  # photos are downsized to this longest side for detection and alignment
    shard_size: int = 50_000  # faces per shard (a crash redoes at most this much work)
    commit_interval: float = 60.0  # seconds between commits, whatever the shard size
    progress: bool | None = None  # None = only on a terminal


@dataclass
class IngestSummary:
    gallery: str
    model: str
    device: str
    files_seen: int = 0  # photo files found by the scan
    skipped: int = 0  # already in the gallery from an earlier run
    photos: int = 0  # photos read in this run (new content)
    photos_with_faces: int = 0
    faces: int = 0
    labeled_faces: int = 0
    duplicates: int = 0  # files whose content was already ingested (same sha256)
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    shards_written: int = 0
    orphans_removed: int = 0
    seconds: float = 0.0
    photos_per_s: float = 0.0
    faces_per_s: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    warning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _PendingCommit:
    """Everything seen since the last commit: written together or not at all."""

    images: list[dict] = field(default_factory=list)
    faces: list[dict] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    face_ids: list[int] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    def empty(self) -> bool:
        return not (self.images or self.files)


ProgressFn = Callable[[IngestSummary], None]


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class Ingestor:
    """Runs one ingest of a source folder into a gallery. Construct, then call `run()`."""

    def __init__(self, source: Path, gallery_dir: Path, options: IngestOptions | None = None) -> None:
        # Absolute: resumes match files whatever the working directory, and stored paths stay valid.
        self.source = Path(source).resolve()
        self.options = options or IngestOptions()
        self.spec = get_model_spec(self.options.model)
        if not self.source.exists():
            raise FileNotFoundError(f"Photo source '{self.source}' does not exist.")
        self.label_fn: LabelFn = make_label_fn(self.options.labels, self.source)
        self.device = resolve_device(self.options.device)
        self.gallery = Gallery.open_or_create(gallery_dir)
        self.gallery.check_model(self.spec.stamp())
        self.summary = IngestSummary(
            gallery=str(gallery_dir), model=self.spec.name, device=self.device, warning=self.spec.warning
        )
        self._stage = Counter()  # seconds per stage
        self._identity_cache: dict[str, int] = {}
        self._seen_hashes: dict[str, int] = {}  # sha256 -> image_id, this run, committed or not
        self._pending = _PendingCommit()
        self._last_commit = time.monotonic()

    # --- setup -----------------------------------------------------------------------------

    def _load_models(self) -> tuple[FaceDetector, Embedder]:
        t0 = time.perf_counter()
        embedder = self.spec.load(self.options.weights, device=self.device, half=self.device == "cuda")
        detector = FaceDetector(
            device=self.device,
            min_face_size=self.options.min_face_size,
            threshold=self.options.det_threshold,
            max_batch=self.options.batch_size,
        )
        self._stage["load_models"] += time.perf_counter() - t0
        return detector, embedder

    # --- scanning and decoding ---------------------------------------------------------------

    def _new_files(self) -> Iterator[FoundFile]:
        """Scanned files not already recorded with the same size and mtime (resume skips them)."""
        chunk: list[FoundFile] = []

        def flush() -> Iterator[FoundFile]:
            keys = [str(f.path) for f in chunk]
            with self.gallery.session() as s:
                known = {
                    row.path: (row.size, row.mtime_ns)
                    for row in s.execute(
                        select(SourceFile.path, SourceFile.size, SourceFile.mtime_ns).where(
                            SourceFile.path.in_(keys)
                        )
                    )
                }
            for f in chunk:
                if known.get(str(f.path)) == (f.size, f.mtime_ns):
                    self.summary.skipped += 1
                else:
                    yield f

        for found in scan_photos(self.source):
            self.summary.files_seen += 1
            chunk.append(found)
            if len(chunk) >= 500:
                yield from flush()
                chunk = []
        if chunk:
            yield from flush()

    def _decoded(self, files: Iterator[FoundFile]) -> Iterator[DecodedPhoto]:
        """Decode in worker processes with a bounded window, so decoding overlaps detection and
        memory holds only a few batches of pixels however large the archive."""
        workers = default_workers() if self.options.workers is None else self.options.workers
        max_side = self.options.max_side
        if workers <= 0:
            for f in files:
                t0 = time.perf_counter()
                photo = decode_photo(str(f.path), f.size, f.mtime_ns, max_side)
                self._stage["decode"] += time.perf_counter() - t0
                yield photo
            return
        window = max(2 * self.options.batch_size, 4 * workers)
        # spawn: forking a process that already runs torch's thread pools can deadlock.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            queue: deque[Future] = deque()
            for f in files:
                queue.append(pool.submit(timed_decode, str(f.path), f.size, f.mtime_ns, max_side))
                if len(queue) >= window:
                    yield self._take(queue.popleft())
            while queue:
                yield self._take(queue.popleft())

    def _take(self, future: Future) -> DecodedPhoto:
        t0 = time.perf_counter()
        photo, seconds = future.result()
        self._stage["decode"] += seconds
        self._stage["wait_decode"] += time.perf_counter() - t0
        return photo

    # --- the run -----------------------------------------------------------------------------

    def run(self, on_progress: ProgressFn | None = None) -> IngestSummary:
        started = time.perf_counter()
        with self.gallery.writer_lock():
            self.summary.orphans_removed = len(self.gallery.remove_orphan_shards())
            detector, embedder = self._load_models()
            self.gallery.stamp_model(self.spec.stamp())
            with self.gallery.session() as s, s.begin():
                run = Run(started_at=time.time(), source=str(self.source), args=_json_args(self.options))
                s.add(run)
                s.flush()
                self.run_id = run.run_id
                self._next_face_id = db.max_face_id(s) + 1
                self._next_image_id = int(s.scalar(select(func.coalesce(func.max(Image.image_id), 0)))) + 1
            status = "interrupted"
            try:
                batch: list[tuple[DecodedPhoto, int]] = []
                for photo in self._decoded(self._new_files()):
                    self.summary.photos += 1
                    if photo.sha256 is not None and self._is_duplicate(photo):
                        pass
                    elif not photo.ok:
                        self._record_failure(photo)
                    else:
                        # Claim the image id now, so an identical file later in the same batch is
                        # already known as a duplicate.
                        image_id = self._alloc_image_id()
                        self._seen_hashes[photo.sha256] = image_id
                        batch.append((photo, image_id))
                    if len(batch) >= self.options.batch_size:
                        self._process(batch, detector, embedder)
                        batch = []
                    if not batch:
                        # Never commit while photos of the open batch hold image ids without rows:
                        # a duplicate's file row could point at one of them.
                        self._maybe_commit()
                    if on_progress is not None:
                        self._update_rates(started)
                        on_progress(self.summary)
                if batch:
                    self._process(batch, detector, embedder)
                self._commit()
                status = "done"
            finally:
                self._finish_run(status, started)
        return self.summary

    def _is_duplicate(self, photo: DecodedPhoto) -> bool:
        """Same content as an image ingested before (this run or earlier): one image, many files."""
        assert photo.sha256 is not None
        image_id = self._seen_hashes.get(photo.sha256)
        if image_id is None:
            with self.gallery.session() as s:
                image_id = s.scalar(select(Image.image_id).where(Image.sha256 == photo.sha256))
        if image_id is None:
            return False
        self.summary.duplicates += 1
        self.summary.photos -= 1  # not a new photo
        self._pending.files.append(self._file_row(photo, image_id, "duplicate", None))
        return True

    def _record_failure(self, photo: DecodedPhoto, image_id: int | None = None) -> None:
        reason = photo.reason or "unknown"
        self.summary.failed += 1
        self.summary.failures[reason] = self.summary.failures.get(reason, 0) + 1
        if image_id is None and photo.sha256 is not None:
            image_id = self._alloc_image_id()
            self._seen_hashes[photo.sha256] = image_id
        if image_id is not None:
            # Record failures by content too: the same bad bytes elsewhere are not retried.
            self._pending.images.append(
                dict(
                    image_id=image_id,
                    sha256=photo.sha256,
                    path=photo.path,
                    width=photo.width or None,
                    height=photo.height or None,
                    status="failed",
                    reason=reason,
                    detail=photo.detail,
                    n_faces=0,
                    identity_id=None,
                    run_id=self.run_id,
                )
            )
        self._pending.files.append(self._file_row(photo, image_id, "failed", reason))

    def _file_row(self, photo: DecodedPhoto, image_id: int | None, status: str, reason: str | None) -> dict:
        return dict(
            path=photo.path,
            size=photo.size,
            mtime_ns=photo.mtime_ns,
            sha256=photo.sha256,
            image_id=image_id,
            status=status,
            reason=reason,
            run_id=self.run_id,
        )

    def _alloc_image_id(self) -> int:
        image_id = self._next_image_id
        self._next_image_id += 1
        return image_id

    def _process(
        self, batch: list[tuple[DecodedPhoto, int]], detector: FaceDetector, embedder: Embedder
    ) -> None:
        t0 = time.perf_counter()
        detections = detector.detect([p.pixels for p, _ in batch], [p.scale for p, _ in batch])
        self._stage["detect"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        template = self.spec.template_array()
        chips: list[torch.Tensor] = []
        for (photo, _), det in zip(batch, detections):
            if len(det) == 0:
                continue
            pixels = torch.from_numpy(photo.pixels).permute(2, 0, 1)
            chips.append(align_faces(pixels, det.landmarks * photo.scale, template, self.spec.input_size))
        all_chips = torch.cat(chips) if chips else torch.empty((0, 3, self.spec.input_size, self.spec.input_size))
        embeddings = self._embed(embedder, all_chips)
        self._stage["align_embed"] += time.perf_counter() - t0

        offset = 0
        for (photo, image_id), det in zip(batch, detections):
            n = len(det)
            if n == 0:
                photo.reason, photo.detail = "no_face", "no face found by the detector"
                self._record_failure(photo, image_id)
                continue
            self._add_photo(photo, image_id, det, embeddings[offset : offset + n])
            offset += n

    def _embed(self, embedder: Embedder, chips: torch.Tensor) -> np.ndarray:
        """Embed in batches; on a CUDA out-of-memory error halve the batch and go on."""
        out: list[np.ndarray] = []
        size = self.options.embed_batch_size
        start = 0
        while start < len(chips):
            part = chips[start : start + size]
            if embedder.device.type == "cuda":
                part = part.pin_memory()
            try:
                out.append(embedder.embed(part).numpy())
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                size = max(1, size // 2)
                torch.cuda.empty_cache()
                continue
            start += len(part)
        return np.concatenate(out) if out else np.zeros((0, self.spec.dim), np.float32)

    def _add_photo(self, photo: DecodedPhoto, image_id: int, det: Detections, embeddings: np.ndarray) -> None:
        assert photo.sha256 is not None
        # The label is resolved to an identity id inside the commit transaction (see _commit).
        label = self.label_fn(Path(photo.path)) or None
        main = main_face_index(det.boxes, photo.width, photo.height)
        p = self._pending
        p.images.append(
            dict(
                image_id=image_id,
                sha256=photo.sha256,
                path=photo.path,
                width=photo.width,
                height=photo.height,
                status="done",
                reason=None,
                detail=None,
                n_faces=len(det),
                identity_id=label,
                run_id=self.run_id,
            )
        )
        p.files.append(self._file_row(photo, image_id, "ok", None))
        for j in range(len(det)):
            face_id = self._next_face_id
            self._next_face_id += 1
            x1, y1, x2, y2 = (float(v) for v in det.boxes[j])
            p.faces.append(
                dict(
                    face_id=face_id,
                    image_id=image_id,
                    identity_id=label if j == main else None,
                    is_main=j == main,
                    det_score=float(det.scores[j]),
                    x1=x1,
                    y1=y1,
                    x2=x2,
                    y2=y2,
                    deleted=False,
                )
            )
            p.face_ids.append(face_id)
            p.image_ids.append(image_id)
        p.embeddings.append(embeddings.astype(np.float32))
        p.boxes.append(det.boxes)
        p.landmarks.append(det.landmarks)
        p.scores.append(det.scores)
        self.summary.photos_with_faces += 1
        self.summary.faces += len(det)
        self.summary.labeled_faces += int(label is not None)

    # --- committing --------------------------------------------------------------------------

    def _maybe_commit(self) -> None:
        due = time.monotonic() - self._last_commit >= self.options.commit_interval
        if self._pending.n_faces >= self.options.shard_size or (due and not self._pending.empty()):
            self._commit()

    def _commit(self) -> None:
        p = self._pending
        if p.empty():
            return
        t0 = time.perf_counter()
        shard_row = None
        if p.faces:
            with self.gallery.session() as s:
                shard_id = int(s.scalar(select(func.coalesce(func.max(Shard.shard_id), 0)))) + 1
            filename = shard_filename(shard_id)
            rows = ShardRows(
                face_id=np.asarray(p.face_ids, np.int64),
                image_id=np.asarray(p.image_ids, np.int64),
                embedding=np.concatenate(p.embeddings),
                box=np.concatenate(p.boxes),
                landmarks=np.concatenate(p.landmarks),
                det_score=np.concatenate(p.scores),
            )
            nbytes = write_shard(self.gallery.shards_dir / filename, rows, self.spec.stamp())
            shard_row = dict(
                shard_id=shard_id,
                filename=filename,
                n_faces=len(rows),
                min_face_id=int(rows.face_id.min()),
                max_face_id=int(rows.face_id.max()),
                bytes=nbytes,
                run_id=self.run_id,
                created_at=time.time(),
            )
            for face in p.faces:
                face["shard_id"] = shard_id
        with self.gallery.session() as s, s.begin():
            # Labels become identity ids here, so an identity exists only with a committed face.
            for row in (*p.images, *p.faces):
                if isinstance(row["identity_id"], str):
                    row["identity_id"] = db.get_or_create_identity(s, row["identity_id"], self._identity_cache)
            if shard_row:
                s.execute(insert(Shard), [shard_row])
            if p.images:
                s.execute(insert(Image), p.images)
            if p.faces:
                s.execute(insert(Face), p.faces)
            if p.files:
                # A file seen again with a new size/mtime replaces its old record.
                paths = [f["path"] for f in p.files]
                s.execute(SourceFile.__table__.delete().where(SourceFile.path.in_(paths)))
                unique = {f["path"]: f for f in p.files}
                s.execute(insert(SourceFile), list(unique.values()))
            s.execute(
                update(Run)
                .where(Run.run_id == self.run_id)
                .values(photos=self.summary.photos, faces=self.summary.faces, failed=self.summary.failed)
            )
        if shard_row:
            self.summary.shards_written += 1
        self._pending = _PendingCommit()
        self._last_commit = time.monotonic()
        self._stage["write"] += time.perf_counter() - t0

    def _update_rates(self, started: float) -> None:
        elapsed = max(1e-9, time.perf_counter() - started)
        self.summary.seconds = round(elapsed, 3)
        self.summary.photos_per_s = round(self.summary.photos / elapsed, 2)
        self.summary.faces_per_s = round(self.summary.faces / elapsed, 2)

    def _finish_run(self, status: str, started: float) -> None:
        self._update_rates(started)
        self.summary.stage_seconds = {k: round(v, 3) for k, v in self._stage.items()}
        with self.gallery.session() as s, s.begin():
            s.execute(
                update(Run)
                .where(Run.run_id == self.run_id)
                .values(status=status, finished_at=time.time(), photos=self.summary.photos,
                        faces=self.summary.faces, failed=self.summary.failed)
            )


def _json_args(options: IngestOptions) -> str:
    import json

    return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()})


def ingest(
    source: Path | str,
    gallery_dir: Path | str,
    options: IngestOptions | None = None,
    on_progress: ProgressFn | None = None,
    **overrides: Any,
) -> IngestSummary:
    """Ingest a photo folder (or one photo) into a gallery folder; safe to re-run (it resumes)."""
    opts = options or IngestOptions()
    for key, value in overrides.items():
        if not hasattr(opts, key):
            raise TypeError(f"unknown ingest option '{key}'")
        setattr(opts, key, value)
    ingestor = Ingestor(Path(source), Path(gallery_dir), opts)
    try:
        return ingestor.run(on_progress)
    finally:
        ingestor.gallery.close()
