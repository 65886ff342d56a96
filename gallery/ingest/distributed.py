"""Distributed ingest on Ray Data: the cluster reads, decodes and embeds; this process commits.

    scan + resume filter (here, as the local ingest) → ray.data.from_items(new files)
      → map_batches(decode_batch)                  CPU tasks: read, hash, decode (gallery.faces.decode)
      → map_batches(EmbedStage, ActorPoolStrategy) actors, one FacePipeline each (num_gpus=1 where the
                                                   cluster has GPUs), every batch written to the gallery's
                                                   staging folder under a name decided by its photos
      → the names stream back here; this process, the only SQLite writer, commits the staged photos
        with the local ingest's protocol and rules (Ingestor: image and face ids allocated at commit,
        duplicates, failure reasons, labels), then deletes the staged files it committed.

Exactly once, whatever is killed: a staged file is written atomically, so a killed worker leaves only
a temp file (removed at the next start) and Ray's retry of its batch writes the same name again. A
staged photo is committed only while its file is still new to the gallery (the resume filter's test:
path, size, mtime), and at most once per run, so a staged file that was committed but not yet deleted
when the driver died adds nothing; one that was complete but not committed is committed by the next
run without computing it again; photos in no staged file are read again.

A batch the face pipeline fails on is retried photo by photo and a photo that still fails is recorded
as `pipeline_error` with the exception, like any other failed photo: the job goes on and the summary
names the file. (Ray Data's `max_errored_blocks` would drop whole blocks without a record of which
photos were lost.)
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gallery.errors import DamagedData, DeviceUnavailable, GalleryError, LabelSourceError
from gallery.faces.decode import DecodedPhoto, decode_photo
from gallery.faces.models import ModelSpec
from gallery.ingest.labels import split_xmp
from gallery.ingest.reader import PhotoReader
from gallery.ingest.runner import IngestOptions, Ingestor, IngestSummary, progress_line
from gallery.ingest.scan import FoundFile
from gallery.progress import ProgressFn, report
from gallery.store import FileRecord, Gallery, GalleryWriter
from gallery.store.keep_out import KeptOutSet
from gallery.store.staging import (
    StagedPhoto,
    read_staged,
    remove_partial,
    remove_staged,
    remove_staging_if_empty,
    staged_files,
    staged_name,
    staging_dir,
    write_staged,
)

log = logging.getLogger(__name__)

PIPELINE_ERROR = "pipeline_error"  # the face pipeline raised on this photo (the detail has the exception)


class RayUnavailable(GalleryError):
    """`--engine ray` without Ray installed, or without a cluster at the address given."""


class RayJobFailed(GalleryError):
    """The cluster side of a distributed ingest failed (a node lost for good, a worker that cannot start)."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the cluster side runs (the face settings are the IngestOptions)."""

    address: str | None = None  # "auto", HOST:PORT, ray://HOST:PORT; None: the cluster this process is
    # connected to, else a new local one
    actors: int | None = None  # embedding actors; None: one per GPU, or on a CPU-only cluster one per
    # 2 x actor_cpus logical CPUs (half the CPUs embed, half decode)
    actor_cpus: float = 2.0  # logical CPUs each actor reserves on a CPU-only cluster (torch threads)
    local_cpus: int | None = None  # logical CPUs of a local Ray started here; None: cores + 2 x actor_cpus,
    # so that the actors can never hold every CPU slot and starve the decode tasks
    progress: bool = True  # Ray Data's own progress bars (on stderr)


# --- the cluster side: functions and classes that run on Ray workers ---------------------------------


def decode_batch(batch: dict[str, np.ndarray], source: str, max_side: int, max_file_bytes: int) -> dict[str, list]:
    """Decode a batch of photos (a Ray task). Strings are never None in Ray blocks (an all-None column
    would have no type): '' stands for none."""
    if not os.path.exists(source):
        raise GalleryError(
            f"The photo source {source} is not visible on Ray node {socket.gethostname()}: every node must "
            "see the photos at the same path (a shared filesystem)."
        )
    out: dict[str, list] = {k: [] for k in ("path", "size", "mtime_ns", "sha256", "pixels", "scale", "width",
                                            "height", "reason", "detail", "decode_s")}
    for path, size, mtime in zip(batch["path"], batch["size"], batch["mtime_ns"]):
        t0 = time.perf_counter()
        p = decode_photo(str(path), int(size), int(mtime), max_side, max_file_bytes, videos=True)
        if p.video and p.ok:
            p.reason = "needs_local_ingest"
            p.detail = "a video: videos are read by the local ingest (run `gallery ingest` without --engine ray)"
        out["path"].append(p.path)
        out["size"].append(p.size)
        out["mtime_ns"].append(p.mtime_ns)
        out["sha256"].append(p.sha256 or "")
        out["pixels"].append(p.pixels if p.pixels is not None else np.zeros((0, 0, 3), np.uint8))
        out["scale"].append(p.scale)
        out["width"].append(p.width)
        out["height"].append(p.height)
        out["reason"].append(p.reason or "")
        out["detail"].append(p.detail or "")
        out["decode_s"].append(time.perf_counter() - t0)
    return out


def _decode_task_args() -> dict[str, Any]:
    return {"num_cpus": 1}


class EmbedStage:
    """A Ray actor: loads the model once, then detects, aligns and embeds batch after batch through
    the product's one FacePipeline and stages each batch's results as one Parquet file."""

    def __init__(self, spec: ModelSpec, model_stamp: dict, device: str, weights: Path | None, staging: str,
                 options: dict[str, Any]) -> None:
        self.staging = Path(staging)
        if not self.staging.is_dir():
            raise GalleryError(
                f"The gallery's staging folder {self.staging} is not visible on Ray node {socket.gethostname()}: "
                "put the gallery on a filesystem every node mounts at the same path."
            )
        from gallery.device import apply_process_defaults

        apply_process_defaults()  # a worker process: before the pipeline imports torch
        from gallery.faces.pipeline import FacePipeline

        self.model_stamp = model_stamp
        self.pipeline = FacePipeline(spec, device, weights, options["min_face_size"], options["det_threshold"],
                                     options["max_side"], options["detect_batch_size"], options["embed_batch_size"])
        self._reported: Counter[str] = Counter()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        photos = [
            DecodedPhoto(path=str(batch["path"][i]), size=int(batch["size"][i]), mtime_ns=int(batch["mtime_ns"][i]),
                         sha256=str(batch["sha256"][i]) or None,
                         pixels=np.array(batch["pixels"][i]) if not batch["reason"][i] else None,
                         scale=float(batch["scale"][i]), width=int(batch["width"][i]), height=int(batch["height"][i]),
                         reason=str(batch["reason"][i]) or None, detail=str(batch["detail"][i]) or None)
            for i in range(len(batch["path"]))
        ]
        staged = [self._staged(p, f) for p, f in zip(photos, self._embed(photos))]
        t0 = time.perf_counter()
        name = staged_name([(str(p), int(s), int(m)) for p, s, m in zip(batch["path"], batch["size"],
                                                                          batch["mtime_ns"])])
        write_staged(self.staging, name, staged, self.model_stamp)
        out: dict[str, list] = {"staged": [name], "photos": [len(photos)]}
        for stage in ("load_models", "detect", "align_embed"):  # this batch's share of the actor's totals
            out[f"s_{stage}"] = [self.pipeline.seconds[stage] - self._reported[stage]]
            self._reported[stage] = self.pipeline.seconds[stage]
        out["s_decode"] = [float(np.sum(batch["decode_s"]))]  # summed over the decode tasks
        out["s_stage"] = [time.perf_counter() - t0]
        return out

    def _embed(self, photos: list[DecodedPhoto]) -> list:
        """The pipeline on the batch; if it raises, photo by photo, and a photo that still raises is a
        `pipeline_error` (the job goes on)."""
        from gallery.faces.pipeline import PhotoFaces

        try:
            return self.pipeline.embed_photos(photos)
        except Exception:  # noqa: BLE001 - one bad photo must not end a cluster job
            log.exception("face pipeline failed on a batch of %d photos; retrying one by one", len(photos))
        results = []
        for p in photos:
            try:
                results.extend(self.pipeline.embed_photos([p]))
            except Exception as exc:  # noqa: BLE001
                detail = f"{type(exc).__name__}: {exc}"[:500]
                results.append(PhotoFaces(p.path, p.width, p.height, PIPELINE_ERROR, detail))
        return results

    @staticmethod
    def _staged(photo: DecodedPhoto, found: Any) -> StagedPhoto:
        base = StagedPhoto(path=photo.path, size=photo.size, mtime_ns=photo.mtime_ns, sha256=photo.sha256,
                           width=photo.width, height=photo.height)
        if not found.ok:
            base.reason, base.detail = found.error or "unknown", found.detail
            return base
        base.main, base.boxes, base.scores = found.main, found.boxes, found.scores
        base.landmarks, base.embeddings, base.sharpness = found.landmarks, found.embeddings, found.sharpness
        return base


# --- the driver ---------------------------------------------------------------------------------------


def connect(options: RayOptions, quiet: bool = False) -> bool:
    """Connect to the cluster (or start a local one); True when this call started the connection (and
    the caller should shut it down)."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "--engine ray needs Ray Data: pip install 'face-gallery[ray]' (on the driver and every node)."
        ) from None
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(log_to_driver=not quiet, logging_level=logging.WARNING if quiet else logging.INFO)
    if options.address:
        try:
            ray.init(address=options.address, **kwargs)
        except ConnectionError as exc:
            raise RayUnavailable(
                f"No Ray cluster at '{options.address}' ({exc}). Start one with `ray start --head` (see the README), "
                "or leave out --address to run a local Ray on this machine."
            ) from None
    else:
        cpus = options.local_cpus or (os.cpu_count() or 1) + math.ceil(2 * options.actor_cpus)
        ray.init(num_cpus=cpus, include_dashboard=False, **kwargs)
    return True


def plan_actors(resources: dict[str, float], device: str, options: RayOptions) -> tuple[int, dict[str, float]]:
    """(actors, Ray resources per actor): one actor per GPU when the cluster has GPUs (and the device
    allows), else CPU actors holding `actor_cpus` each, half of the cluster's CPUs at most."""
    gpus = int(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    if device.startswith("cuda") and gpus == 0:
        raise DeviceUnavailable(f"--device {device} was asked for, but the Ray cluster has no GPU. Use --device auto.")
    if gpus and device != "cpu":
        if options.actors and options.actors > gpus:
            raise GalleryError(f"--actors {options.actors}: the Ray cluster has {gpus} GPU(s), one per actor.")
        return options.actors or gpus, {"num_gpus": 1, "num_cpus": 1}
    actors = options.actors or max(1, int(cpus // (2 * options.actor_cpus)))
    per_actor = options.actor_cpus
    if actors * per_actor > cpus - 1 and actors == 1 and cpus >= 2:
        per_actor = cpus - 1  # a small cluster: the one actor gets what decoding leaves
    if actors * per_actor > cpus - 1:  # a pool holding every CPU slot would starve the decode tasks
        raise GalleryError(
            f"{actors} CPU actor(s) need {actors * per_actor:g} logical CPUs plus at least 1 for decoding; "
            f"the Ray cluster has {cpus:g}. Use fewer --actors, or give Ray more logical CPUs "
            "(ray start --num-cpus N)."
        )
    return actors, {"num_cpus": per_actor}


class RayIngestor(Ingestor):
    """The distributed ingest: the same scan, resume filter, triage and commits as `Ingestor`, with
    reading, decoding and embedding on a Ray cluster (see the module docstring)."""

    def __init__(self, source: Path, gallery: Gallery, options: IngestOptions, ray_options: RayOptions,
                 scanned: list[FoundFile] | None = None) -> None:
        super().__init__(source, gallery, options, scanned)
        self.ray_options = ray_options
        self.staging = staging_dir(gallery.root)
        self._todo: dict[str, FoundFile] = {}
        self._committable: list[Path] = []  # staged files whose rows are pending: deleted after the commit
        self._seconds: Counter[str] = Counter()
        self._total = 0
        self._last_commit = 0.0
        self._taken_names: set[str] = set()
        self.staged_reused = 0  # photos committed from staged files an earlier, killed run left

    def _check_device(self) -> None:
        """The GPUs are the cluster's: checked against its resources, not this machine's."""

    def run(self, on_progress: ProgressFn | None = None) -> IngestSummary:
        o = self.options
        started = time.perf_counter()
        with self.gallery.writer_lock():
            self.summary.orphans_removed = len(self.gallery.remove_orphan_shards())
            removed = remove_partial(self.staging)
            if removed:
                log.info("removed %d half-written staged files of a killed run", len(removed))
            if self.gallery.model_stamp is None:
                # A new gallery: missing weights are said before it is stamped, and the stamp (which every
                # actor's model must match) names the weights file the model was loaded from.
                self.spec = self._load_pipeline().spec
                self.pipeline = None
            writer = GalleryWriter(self.gallery, self.spec.stamp(), str(self.source),
                                   {**asdict(o), "engine": "ray", **asdict(self.ray_options)})
            self._kept_out = KeptOutSet.load(self.gallery)
            reader = PhotoReader(self.source, writer.known_files, 0, o.max_side, 1, o.max_file_size, self._scanned,
                                 count_in_background=False)  # the whole scan is read at once below
            self._todo = {str(f.path): f for f in reader.new_files()}
            self.summary.files_seen, self.summary.skipped = reader.files_seen, reader.skipped
            status = "interrupted"
            self._last_commit = time.monotonic()
            self._total = len(self._todo)
            try:
                for path in staged_files(self.staging):  # complete work a killed run staged but did not commit
                    self.staged_reused += self._take(path, writer)
                    self._maybe_commit(writer)
                if self._todo:
                    with closing(self._cluster_results(list(self._todo.values()))) as names:
                        for name in names:
                            self._take(self.staging / name, writer, from_cluster=True)
                            self._maybe_commit(writer)
                            self._report_run(started, on_progress)
                self._commit(writer)
                if self._todo:  # staged results that were damaged, or files that changed while being read
                    note = (f"{len(self._todo)} photo(s) were not ingested (their staged results were damaged or "
                            "their files changed while being read); run the same command again to read them.")
                    self.summary.warning = f"{self.summary.warning} {note}" if self.summary.warning else note
                remove_partial(self.staging)  # every batch is done: temp files are dead workers' leftovers
                remove_staging_if_empty(self.staging)
                status = "done"
            finally:
                self._report_run(started, None)
                writer.finish(status, self.summary.run_counts())
                log.info("ray ingest %s of %s: %s", status, self.source, self.summary.as_dict())
        return self.summary

    # --- taking staged results -------------------------------------------------------------------

    def _take(self, path: Path, writer: GalleryWriter, from_cluster: bool = False) -> int:
        """Record the photos of one staged file that are still to do (new to the gallery, not yet taken
        in this run, unchanged since the scan); returns how many. A file of no use is deleted now."""
        t0 = time.perf_counter()
        if path.name in self._taken_names:  # a batch Ray ran twice: its photos are already taken
            return 0
        self._taken_names.add(path.name)
        if from_cluster and not path.is_file():
            raise GalleryError(
                f"The cluster staged {path.name}, but it is not in {self.staging} here: the nodes and this machine "
                "do not share the gallery folder. Put the gallery on a filesystem every node mounts at the same "
                "path (see the README, --engine ray)."
            )
        try:
            photos = read_staged(path, self.spec.stamp())
        except (DamagedData, FileNotFoundError) as exc:
            log.warning("ignoring staged file %s: %s (its photos are read again)", path.name, exc)
            remove_staged([path])
            return 0
        todo = []
        for p in photos:
            found = self._todo.get(p.path)
            if found is not None and found.mtime_ns == p.mtime_ns:
                del self._todo[p.path]
                todo.append(p)
        committed = writer.committed_image_ids([p.sha256 for p in todo if p.sha256])
        for p in todo:
            self._record(p, writer, committed)
        if todo:
            self._committable.append(path)
        else:
            remove_staged([path])
        self._seconds["take"] += time.perf_counter() - t0  # read + triage, on the driver
        return len(todo)

    def _record(self, p: StagedPhoto, writer: GalleryWriter, committed: dict[str, int]) -> None:
        file = FileRecord(p.path, p.size, p.mtime_ns, p.sha256)
        if self._read_again(p.reason, None, p.detail, file, writer):
            return
        new, image_id = self._claim(file, writer, committed)
        if not new:
            return
        if p.reason or image_id is None:
            self._fail(writer, file, p.reason or "unknown", p.detail, image_id, p.width, p.height)
        else:
            self._store(writer, file, image_id, p.width, p.height, p.main, p.boxes, p.scores, p.landmarks,
                        p.embeddings, p.sharpness)  # type: ignore[arg-type]

    def _maybe_commit(self, writer: GalleryWriter) -> None:
        due = time.monotonic() - self._last_commit >= self.options.commit_interval and writer.has_pending
        if writer.pending_faces >= self.options.shard_size or due:
            self._commit(writer)
            self._last_commit = time.monotonic()

    def _commit(self, writer: GalleryWriter) -> None:
        """Commit, then delete the staged files whose photos the commit recorded (in that order: a
        crash between the two leaves files whose photos the next run finds already known)."""
        super()._commit(writer)
        remove_staged(self._committable)
        self._committable = []

    # --- the cluster ---------------------------------------------------------------------------

    def _cluster_results(self, files: list[FoundFile]) -> Iterator[str]:
        """Run the Ray Data pipeline over the new files; yields staged file names as batches finish."""
        started_here = connect(self.ray_options, quiet=not self.ray_options.progress)
        try:
            import ray
            from ray.data import ActorPoolStrategy, DataContext

            o = self.options
            context = DataContext.get_current()
            context.enable_progress_bars = self.ray_options.progress
            actors, per_actor = plan_actors(ray.cluster_resources(), o.device, self.ray_options)
            device = "cpu" if "num_gpus" not in per_actor else "cuda"
            self.summary.device = f"ray: {actors} actor(s) on {device}"
            self.staging.mkdir(parents=True, exist_ok=True)
            items = [{"path": str(f.path), "size": f.size, "mtime_ns": f.mtime_ns} for f in files]
            blocks = max(1, min(len(items), math.ceil(len(items) / o.detect_batch_size)))
            ds = ray.data.from_items(items, override_num_blocks=blocks)
            # ray_remote_args_fn keeps decoding in its own CPU tasks: Ray Data fuses a task stage into the
            # next actor stage when both ask the same resources, and decoding would then run in the actors.
            ds = ds.map_batches(decode_batch, batch_size=None, ray_remote_args_fn=_decode_task_args,
                                fn_kwargs=dict(source=str(self.source), max_side=o.max_side,
                                               max_file_bytes=o.max_file_size))
            settings = dict(min_face_size=o.min_face_size, det_threshold=o.det_threshold, max_side=o.max_side,
                            detect_batch_size=o.detect_batch_size, embed_batch_size=o.embed_batch_size)
            ds = ds.map_batches(
                EmbedStage, batch_size=o.detect_batch_size, batch_format="numpy",
                compute=ActorPoolStrategy(size=actors), **per_actor,
                fn_constructor_kwargs=dict(spec=self.spec, model_stamp=self.spec.stamp(), device=device,
                                           weights=o.weights, staging=str(self.staging), options=settings),
            )
            t0 = time.perf_counter()
            rows = iter(ds.iter_rows())
            while True:
                try:
                    row = next(rows)
                except StopIteration:
                    break
                except ray.exceptions.RayError as exc:
                    raise _job_failure(exc) from exc
                self._seconds["wait_cluster"] += time.perf_counter() - t0
                for key, value in row.items():
                    if key.startswith("s_"):
                        self._seconds[key[2:]] += float(value)
                yield str(row["staged"])
                t0 = time.perf_counter()
        finally:
            if started_here:
                import ray

                ray.shutdown()

    def _report_run(self, started: float, on_progress: ProgressFn | None) -> None:
        s = self.summary
        elapsed = max(1e-9, time.perf_counter() - started)
        s.seconds = round(elapsed, 3)
        s.photos_per_s = round(s.photos / elapsed, 2)
        s.faces_per_s = round(s.faces / elapsed, 2)
        stages = Counter(self._seconds)
        stages["write"] = self._write_seconds
        s.stage_seconds = {k: round(v, 3) for k, v in stages.items()}
        worked = s.photos + s.duplicates + s.kept_out
        rate, eta = self._rate.update(worked, self._total - worked)
        report(on_progress, "ingest", s.skipped + worked, s.skipped + self._total,
               progress_line(s.skipped + worked, s.skipped + self._total, s.faces, rate, eta), rate, eta)


def _job_failure(exc: BaseException) -> GalleryError:
    """A failed Ray job as one message. Our own errors raised on a node (photos or staging folder not
    visible there, missing weights) reach the driver only as traceback text: they are found in it and
    raised again as they were; anything else is named with the way to resume."""
    import gallery.errors

    found = re.search(r"^gallery\.[\w.]+\.(\w+): (.+)$", str(exc), re.MULTILINE)
    if found:
        kind = getattr(gallery.errors, found.group(1), None)
        kind = kind if isinstance(kind, type) and issubclass(kind, GalleryError) else GalleryError
        return kind(found.group(2))
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return RayJobFailed(
        f"The Ray job failed ({type(exc).__name__}: {first[:300]}). Photos committed so far are kept and "
        "staged results are reused: run the same command again to resume."
    )


def ray_ingest(
    source: Path | str,
    gallery_dir: Path | str,
    options: IngestOptions | None = None,
    ray_options: RayOptions | None = None,
    on_progress: ProgressFn | None = None,
) -> IngestSummary:
    """Ingest a photo folder on a Ray cluster into a gallery folder (committed here, exactly once);
    safe to re-run after any crash: it resumes."""
    if not Path(source).exists():
        raise FileNotFoundError(f"Photo source '{Path(source).resolve()}' does not exist.")
    if split_xmp((options or IngestOptions()).labels)[0]:
        raise LabelSourceError("--labels xmp is read by the local ingest only: run the ingest without --engine ray.")
    gallery = Gallery.open_or_create(gallery_dir)
    try:
        return RayIngestor(Path(source), gallery, options or IngestOptions(), ray_options or RayOptions()).run(
            on_progress)
    finally:
        gallery.close()
