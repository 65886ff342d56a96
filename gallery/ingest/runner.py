"""One ingest run: read (scan, resume filter, decode) → FacePipeline (detect, align, embed) → commit.

The stages live elsewhere (gallery.ingest.reader, gallery.faces.pipeline, gallery.store.writer); this
module decides what happens to each photo (new, duplicate content, failed) and when to commit.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gallery.device import resolve_device
from gallery.errors import ModelMismatch
from gallery.faces.decode import MAX_FILE_BYTES, DecodedPhoto
from gallery.faces.models import check_weights, model_for_gallery
from gallery.faces.quality import measure_faces
from gallery.faces.xmp import match_regions, read_photo_regions
from gallery.ingest.labels import make_label_fn, split_xmp
from gallery.ingest.reader import PhotoReader
from gallery.ingest.scan import FoundFile
from gallery.progress import Progress, ProgressFn, RateMeter, format_seconds
from gallery.store import FileRecord, Gallery, GalleryWriter
from gallery.store.keep_out import KeptOutSet
from gallery.store.writer import READ_AGAIN

if TYPE_CHECKING:
    import numpy as np

    from gallery.faces.pipeline import FacePipeline, PhotoFaces

log = logging.getLogger(__name__)

# A named XMP region is the detected face it overlaps most when their IoU is at least this. Measured by
# benchmarks/xmp_region_match.py with another tool's face boxes (dlib's HOG detector) against the
# detector's on 300 LFW A-J photos: the same face overlaps 0.53 or more in 99% of pairs (median 0.72), a
# neighbouring face at most 0.16. 0.3 sits between, and still accepts a region drawn 1.8 times the
# detector's box in each direction (tools that frame the whole head).
REGION_IOU = 0.3


@dataclass(frozen=True)
class IngestOptions:
    labels: str = "folder"
    model: str | None = None  # None: the gallery's own model, or dlib-resnet for a new gallery
    weights: Path | None = None
    preset: str | None = None  # --model onnx: the model file's input convention (see ONNX_PRESETS)
    device: str = "auto"
    detect_batch_size: int = 32  # photos per detection batch
    embed_batch_size: int = 64  # faces per embedding batch
    workers: int | None = None  # decode processes; None = one per core (at most 8), 0 = in-process
    min_face_size: int = 20  # pixels in the original photo
    det_threshold: float = 0.9
    max_side: int = 2048  # photos are downsized to this longest side for detection and alignment
    max_file_size: int = MAX_FILE_BYTES  # bytes; larger files are recorded as file_too_large, never read
    shard_size: int = 50_000  # faces per shard (a crash redoes at most this much work)
    commit_interval: float = 60.0  # seconds between commits, whatever the shard size
    flip: bool | None = None  # flip test-time averaging; None: the gallery's own, or the default for a new one


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
    low_quality_faces: int = 0  # stored, but below the quality gate (gallery.faces.quality)
    duplicates: int = 0  # files whose content was already ingested (same sha256)
    kept_out: int = 0  # files whose content is kept out (erased earlier): not read in, not recorded
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    # photos of a format whose decoder is not installed: install command → files (read again next run)
    needs_install: dict[str, int] = field(default_factory=dict)
    # --labels xmp: named face regions read, given to a detected face, embedded from their own box (no
    # face detected there: stored with detection score 0, below the quality gate), malformed XMP files
    xmp_regions: int = 0
    xmp_matched: int = 0
    xmp_from_region: int = 0
    xmp_warnings: int = 0
    xmp_warning_examples: list[str] = field(default_factory=list)  # the first few, "path: why"
    # videos (gallery.ingest.video): read, seconds of video, sampled frames, face tracks found
    videos: int = 0
    video_seconds: float = 0.0
    video_frames: int = 0
    video_tracks: int = 0
    shards_written: int = 0
    orphans_removed: int = 0
    seconds: float = 0.0
    photos_per_s: float = 0.0
    faces_per_s: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    warning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run_counts(self) -> dict[str, int]:
        return {"photos": self.photos, "faces": self.faces, "failed": self.failed}


class Ingestor:
    """Runs one ingest of a source folder into a gallery. Construct, then call `run()`."""

    def __init__(self, source: Path, gallery: Gallery, options: IngestOptions,
                 scanned: list[FoundFile] | None = None) -> None:
        # Absolute: resumes match files whatever the working directory, and stored paths stay valid.
        self.source = Path(source).resolve()
        if not self.source.exists():
            raise FileNotFoundError(f"Photo source '{self.source}' does not exist.")
        self.options = options
        self.gallery = gallery
        self.spec = model_for_gallery(gallery.model_stamp, options.model, options.preset)
        check_weights(self.spec, options.weights)
        if options.flip is not None and options.flip != self.spec.flip:
            if gallery.model_stamp is not None:
                raise ModelMismatch(
                    f"This gallery was built {'with' if self.spec.flip else 'without'} flip averaging; its embeddings "
                    f"cannot be mixed with ones {'without' if self.spec.flip else 'with'} it. Leave out "
                    "--flip/--no-flip, or use a new --gallery folder."
                )
            self.spec = replace(self.spec, flip=options.flip)
        self.label_fn = make_label_fn(options.labels, self.source)
        self.read_xmp = split_xmp(options.labels)[0]
        self.pipeline: FacePipeline | None = None
        self._check_device()
        self.summary = IngestSummary(gallery=str(gallery.root), model=self.spec.name,
                                     device=f"{options.device} (not loaded: nothing to read)",
                                     warning=self.spec.warning)
        self._seen_hashes: dict[str, int] = {}  # sha256 -> image_id, this run, committed or not
        self._write_seconds = 0.0
        self._scanned = scanned
        self._rate = RateMeter()
        self._kept_out = KeptOutSet(None, set())  # loaded when the run starts
        self._on_progress: ProgressFn | None = None
        self._reader: PhotoReader | None = None

    def _check_device(self) -> None:
        """A GPU asked for and missing is an error now, not at the first photo."""
        if self.options.device not in ("auto", "cpu"):
            resolve_device(self.options.device)

    def run(self, on_progress: ProgressFn | None = None) -> IngestSummary:
        o = self.options
        started = time.perf_counter()
        self._on_progress = on_progress
        with self.gallery.writer_lock():
            self.summary.orphans_removed = len(self.gallery.remove_orphan_shards())
            if self.gallery.model_stamp is None:
                # A new gallery: missing weights are said before it is stamped, and the stamp names
                # the weights file the model was loaded from (its SHA-256).
                self.spec = self._load_pipeline().spec
            writer = GalleryWriter(self.gallery, self.spec.stamp(), str(self.source), asdict(o))
            self._kept_out = KeptOutSet.load(self.gallery)
            reader = self._reader = PhotoReader(self.source, writer.known_files, o.workers, o.max_side,
                                                2 * o.detect_batch_size, o.max_file_size, self._scanned)
            status = "interrupted"
            last_commit = time.monotonic()
            try:
                batch: list[tuple[DecodedPhoto, int]] = []
                for photo in reader.decoded():
                    self._triage(photo, writer, batch)
                    if len(batch) >= o.detect_batch_size:
                        self._process(batch, writer)
                        batch = []
                    # Never commit while photos of the open batch hold image ids without rows:
                    # a duplicate's file row could point at one of them.
                    due = time.monotonic() - last_commit >= o.commit_interval and writer.has_pending
                    if not batch and (writer.pending_faces >= o.shard_size or due):
                        self._commit(writer)
                        last_commit = time.monotonic()
                    self._progress(reader, started, on_progress)
                if batch:
                    self._process(batch, writer)
                    self._progress(reader, started, on_progress)
                self._commit(writer)
                status = "done"
            finally:
                self._progress(reader, started, None)
                writer.finish(status, self.summary.run_counts())
                log.info("ingest %s of %s: %s", status, self.source, self.summary.as_dict())
        return self.summary

    def _triage(self, photo: DecodedPhoto, writer: GalleryWriter, batch: list[tuple[DecodedPhoto, int]]) -> None:
        """New content goes to the batch (with an image id claimed now, so that an identical file
        later in the same batch is already a duplicate); known content and failures are recorded."""
        file = FileRecord(photo.path, photo.size, photo.mtime_ns, photo.sha256)
        if self._read_again(photo.reason, photo.install, photo.detail, file, writer):
            return
        new, image_id = self._claim(file, writer)
        if not new:
            return
        if photo.ok and photo.video and image_id is not None:
            self._video(photo, file, image_id, writer)
            return
        if photo.ok:
            batch.append((photo, image_id))  # type: ignore[arg-type]
        else:
            self._fail(writer, file, photo.reason or "unknown", photo.detail, image_id, photo.width, photo.height)

    def _read_again(self, reason: str | None, install: str | None, detail: str | None, file: FileRecord,
                    writer: GalleryWriter) -> bool:
        """A failure that is not the file's fault (READ_AGAIN: a decoder not installed, ...): recorded and
        counted, nothing of its content remembered, so the next run reads it. True when it was one."""
        if reason not in READ_AGAIN:
            return False
        if install:
            self.summary.needs_install[install] = self.summary.needs_install.get(install, 0) + 1
        self._fail(writer, file, reason, detail, None, 0, 0)  # type: ignore[arg-type]
        return True

    def _claim(self, file: FileRecord, writer: GalleryWriter,
               committed: Mapping[str, int] | None = None) -> tuple[bool, int | None]:
        """(is new content, image id). Content seen earlier in this run or committed before is recorded
        as a duplicate of its image; new content gets an image id now (None for an unread file); content
        kept out (erased earlier, still in the archive) is not recorded at all, so nothing of it stays.
        `committed` is a prefetched sha256 → image id answer (one query per staged file, not per photo)."""
        if self._kept_out.holds(file.sha256):
            self.summary.kept_out += 1
            return False, None
        if file.sha256 is not None:
            image_id = self._seen_hashes.get(file.sha256)
            if image_id is None:
                image_id = (committed.get(file.sha256) if committed is not None
                            else writer.committed_image_id(file.sha256))
            if image_id is not None:
                self.summary.duplicates += 1
                writer.record_duplicate(file, image_id)
                return False, image_id
        self.summary.photos += 1
        image_id = writer.alloc_image_id() if file.sha256 is not None else None
        if image_id is not None:
            self._seen_hashes[file.sha256] = image_id  # type: ignore[index]
        return True, image_id

    def _fail(self, writer: GalleryWriter, file: FileRecord, reason: str, detail: str | None,
              image_id: int | None, width: int | None, height: int | None) -> None:
        self.summary.failed += 1
        self.summary.failures[reason] = self.summary.failures.get(reason, 0) + 1
        writer.record_failure(file, reason, detail, image_id, width, height)

    def _store(self, writer: GalleryWriter, file: FileRecord, image_id: int, width: int, height: int, main: int,
               boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, embeddings: np.ndarray,
               sharpness: np.ndarray | None, names: list[str | None] | None = None,
               detail: str | None = None) -> None:
        """A photo with faces: its label (from the label source) goes to the main face, unless an XMP
        region (`names`, per face) named that face; each face's quality is measured and judged by the
        gate (gallery.faces.quality)."""
        label = self.label_fn(Path(file.path)) or None
        labels = list(names) if names is not None else [None] * len(boxes)
        if labels[main] is None:
            labels[main] = label
        quality = measure_faces(boxes, scores, landmarks, width, height, self.spec.template_array(),
                                self.spec.input_size, sharpness)
        self.summary.low_quality_faces += sum(q.issue is not None for q in quality)
        writer.add_photo(file, image_id, width, height, label, main, boxes, scores, landmarks, embeddings,
                         [q.columns() for q in quality], face_labels=labels, detail=detail)
        self.summary.photos_with_faces += 1
        self.summary.faces += len(boxes)
        self.summary.labeled_faces += sum(n is not None for n in labels)

    def _video(self, photo: DecodedPhoto, file: FileRecord, image_id: int, writer: GalleryWriter) -> None:
        """A video, in one piece: its tracks are stored as faces with its file row in the same commit, so
        an interrupted video is read again from its start by the next run (resume per file)."""
        import numpy as np

        from gallery.faces.video import format_time
        from gallery.ingest.video import video_faces

        name = Path(photo.path).name
        length = format_time(photo.duration) if photo.duration else "?"

        def on_time(t: float) -> None:
            self._report(self._on_progress, f"video {name}: {format_time(t)} of {length}")

        found = video_faces(photo, self._load_pipeline(), on_time)
        s = self.summary
        s.videos += 1
        s.video_seconds = round(s.video_seconds + found.seconds, 3)
        s.video_frames += found.frames
        s.video_tracks += found.tracks
        detail = "; ".join(found.errors) or None
        if not found.ok:
            if found.frames == 0:
                reason, detail = "decode_error", detail or "no frame of the video could be decoded"
            else:
                why = f"no face in {found.frames} sampled frames"
                reason, detail = "no_face", f"{why} ({detail})" if detail else why
            self._fail(writer, file, reason, detail, image_id, photo.width, photo.height)
            return
        label = self.label_fn(Path(file.path)) or None
        main_track = found.video[found.main]["track"]
        labels = [label if v["track"] == main_track else None for v in found.video]
        s.low_quality_faces += sum(q.get("quality_issue") is not None for q in found.quality)
        writer.add_photo(file, image_id, photo.width, photo.height, label, found.main, np.stack(found.boxes),
                         np.asarray(found.scores, np.float32), np.stack(found.landmarks), np.stack(found.embeddings),
                         found.quality, face_labels=labels, detail=detail, video=found.video)
        s.photos_with_faces += 1
        s.faces += len(found.boxes)
        s.labeled_faces += sum(n is not None for n in labels)

    def _load_pipeline(self) -> FacePipeline:
        """The networks load at the first photo to read: a run with nothing new (a resume, a sync of an
        unchanged archive) never imports torch."""
        if self.pipeline is None:
            from gallery.faces.pipeline import FacePipeline

            # seconds to minutes (torch, the weights, a download): said, so a still bar is not a hang
            self._report(self._on_progress, "loading the face detector and the embedding model ...")
            o = self.options
            self.pipeline = FacePipeline(self.spec, o.device, o.weights, o.min_face_size, o.det_threshold,
                                         o.max_side, o.detect_batch_size, o.embed_batch_size)
            self.summary.device = self.pipeline.device.name
        return self.pipeline

    def _process(self, batch: list[tuple[DecodedPhoto, int]], writer: GalleryWriter) -> None:
        for (photo, image_id), found in zip(batch, self._load_pipeline().embed_photos([p for p, _ in batch])):
            file = FileRecord(photo.path, photo.size, photo.mtime_ns, photo.sha256)
            names, detail = self._xmp_names(photo, found) if self.read_xmp else (None, None)
            if not found.ok:
                self._fail(writer, file, found.error or "unknown", found.detail, image_id, photo.width, photo.height)
                continue
            self._store(writer, file, image_id, photo.width, photo.height, found.main, found.boxes, found.scores,
                        found.landmarks, found.embeddings, found.sharpness, names, detail)

    def _xmp_names(self, photo: DecodedPhoto, found: PhotoFaces) -> tuple[list[str | None] | None, str | None]:
        """The names XMP face regions give this photo's faces (None: no region), and a warning for a
        malformed XMP source. A named region that overlaps no detected face (REGION_IOU) is embedded
        from its own box and added to `found` (detection score 0: below the quality gate, so it is
        stored and searchable but never enrols into its identity's template)."""
        import numpy as np

        s = self.summary
        read = read_photo_regions(Path(photo.path), photo.xmp, photo.width, photo.height, photo.orientation)
        if read.warning:
            s.xmp_warnings += 1
            if len(s.xmp_warning_examples) < 10:
                s.xmp_warning_examples.append(f"{photo.path}: {read.warning}")
            log.warning("XMP face regions of %s not read: %s", photo.path, read.warning)
        detail = f"XMP not read: {read.warning}"[:500] if read.warning else None
        if not read.regions or (not found.ok and found.error != "no_face"):
            return None, detail
        region_boxes = [r.box(photo.width, photo.height) for r in read.regions]
        face_boxes = [tuple(float(v) for v in b) for b in found.boxes] if found.ok else []
        matched = match_regions(region_boxes, face_boxes, REGION_IOU)
        names: list[str | None] = [None] * len(face_boxes)
        for region, face in zip(read.regions, matched):
            if face is not None:
                names[face] = region.name
        lone = [i for i, face in enumerate(matched) if face is None]
        s.xmp_regions += len(read.regions)
        s.xmp_matched += len(read.regions) - len(lone)
        s.xmp_from_region += len(lone)
        if lone:
            boxes = np.asarray([region_boxes[i] for i in lone], np.float32)
            landmarks, embeddings, sharp = self._load_pipeline().embed_boxes(photo, boxes)
            if not found.ok:
                found.error = found.detail = None
                found.main = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
                found.embeddings = np.zeros((0, embeddings.shape[1]), np.float32)
            found.boxes = np.concatenate([found.boxes, boxes])
            found.scores = np.concatenate([found.scores, np.zeros(len(lone), np.float32)])
            found.landmarks = np.concatenate([found.landmarks, landmarks])
            found.embeddings = np.concatenate([found.embeddings, embeddings])
            found.sharpness = np.concatenate([found.sharpness, sharp])
            names += [read.regions[i].name for i in lone]
        return names, detail

    def _commit(self, writer: GalleryWriter) -> None:
        t0 = time.perf_counter()
        if writer.commit(self.summary.run_counts()):
            self.summary.shards_written += 1
        self._write_seconds += time.perf_counter() - t0

    def _progress(self, reader: PhotoReader, started: float, on_progress: ProgressFn | None) -> None:
        s = self.summary
        elapsed = max(1e-9, time.perf_counter() - started)
        s.files_seen, s.skipped = reader.files_seen, reader.skipped
        s.seconds = round(elapsed, 3)
        s.photos_per_s = round(s.photos / elapsed, 2)
        s.faces_per_s = round(s.faces / elapsed, 2)
        stages = Counter(reader.seconds) + Counter(self.pipeline.seconds if self.pipeline else {})
        stages["write"] = self._write_seconds
        s.stage_seconds = {k: round(v, 3) for k, v in stages.items()}
        self._report(on_progress)

    def _report(self, on_progress: ProgressFn | None, doing: str | None = None) -> None:
        """done/total photos, faces, rate and time left; `doing` says what a long pause is (model load)."""
        if on_progress is None:
            return
        s, reader = self.summary, self._reader
        # done: every file whose fate is known (skipped unread, duplicate, failed, or its faces stored);
        # the rate counts only files really read, so a resume's skipped files do not inflate it
        worked = s.photos_with_faces + s.failed + s.duplicates + s.kept_out
        done = (reader.skipped if reader else 0) + worked
        total = reader.total if reader else None
        if doing is not None:
            on_progress(Progress("ingest", done, total, doing))
            return
        rate, eta = self._rate.update(worked, None if total is None else total - done)
        on_progress(Progress("ingest", done, total, progress_line(done, total, s.faces, rate, eta), rate, eta))


def progress_line(done: int, total: int | None, faces: int, rate: float | None, eta: float | None) -> str:
    """One line for a person: `1,234 of 10,000 photos (12%) · 1,480 faces · 4.8 photos/s · 31 min 05 s left`."""
    if total is None:
        parts = [f"{done:,} photos (counting the rest)"]
    else:
        parts = [f"{done:,} of {total:,} photos ({done / total:.0%})" if total else "0 photos"]
    parts.append(f"{faces:,} faces")
    if rate is not None:
        parts.append(f"{rate:.1f} photos/s")
        if eta is not None:
            parts.append(f"{format_seconds(eta)} left")
    return " · ".join(parts)
