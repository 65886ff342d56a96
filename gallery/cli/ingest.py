"""`gallery ingest` and `gallery sync`: thin layers over gallery.app.ingest (ingest, then erasures, the
index when due and the calibration when due, as the server's ingest jobs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from gallery.cli.common import (
    DeviceOpt,
    GalleryOpt,
    GalleryTyper,
    JsonOpt,
    MaxFileSizeOpt,
    PresetOpt,
    WeightsOpt,
    err,
    fail,
    out,
    print_json,
    say_after_write,
    warn,
)


def register(app: GalleryTyper) -> None:
    @app.command()
    def ingest(
        source: Annotated[Path, typer.Argument(help="Photo folder (scanned recursively) or a single photo.")],
        gallery: GalleryOpt,
        labels: Annotated[
            str,
            typer.Option(help="Identity labels: 'folder' (parent folder name), 'csv:FILE' (path,identity), 'none', "
                             "'xmp' (named XMP face regions: digiKam, Lightroom, Picasa, Windows Photo Gallery), "
                             "or 'xmp+folder' / 'xmp+csv:FILE' (a region's name wins for the face it covers)."),
        ] = "folder",
        model: Annotated[
            str | None,
            typer.Option(help="Embedding model (see `gallery models`). Default: the gallery's own model; "
                              "dlib-resnet for a new gallery.", show_default=False),
        ] = None,
        weights: WeightsOpt = None,
        preset: PresetOpt = None,
        device: DeviceOpt = "auto",
        detect_batch_size: Annotated[
            int, typer.Option("--detect-batch-size", "--batch-size", help="Photos per detection batch.", min=1)
        ] = 32,
        embed_batch_size: Annotated[int, typer.Option(help="Faces per embedding batch.", min=1)] = 64,
        workers: Annotated[
            int | None, typer.Option(help="Decode processes (0 = in-process; default: cores).", min=0)
        ] = None,
        min_face_size: Annotated[int, typer.Option(help="Smallest face side in pixels.", min=4)] = 20,
        det_threshold: Annotated[float, typer.Option(help="Minimum MTCNN face probability.", min=0, max=1)] = 0.9,
        max_side: Annotated[int, typer.Option(help="Downsize larger photos to this longest side.", min=64)] = 2048,
        shard_size: Annotated[int, typer.Option(help="Faces per Parquet shard.", min=1)] = 50_000,
        commit_interval: Annotated[float, typer.Option(help="Seconds between commits.", min=0)] = 60.0,
        max_file_size: MaxFileSizeOpt = 256,
        flip: Annotated[
            bool | None,
            typer.Option("--flip/--no-flip", help="Flip averaging: each face's embedding is the mean of its chip's "
                         "and its mirror image's (a new gallery only; an existing gallery keeps its own).",
                         show_default=False),
        ] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.", metavar="")] = False,
        engine: Annotated[
            str,
            typer.Option(help="'local' (this machine) or 'ray': read, decode and embed on a Ray cluster, "
                              "commit here (needs the [ray] extra)."),
        ] = "local",
        address: Annotated[
            str | None,
            typer.Option(help="With --engine ray: the cluster, 'auto' or HOST:PORT (default: a local Ray "
                              "started for this run).", show_default=False),
        ] = None,
        actors: Annotated[
            int | None,
            typer.Option(help="With --engine ray: embedding actors (default: one per GPU of the cluster; "
                              "without GPUs, one per 4 logical CPUs).", min=1, show_default=False),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Find, embed and store every face of a photo archive. Re-running resumes; nothing is added twice."""
        from gallery.app.ingest import ingest_then_refresh
        from gallery.faces.models import get_model_spec
        from gallery.ingest import IngestOptions
        from gallery.progress import Progress as Event

        options = IngestOptions(
            labels=labels, model=model, weights=weights, preset=preset, device=device,
            detect_batch_size=detect_batch_size,
            embed_batch_size=embed_batch_size, workers=workers, min_face_size=min_face_size,
            det_threshold=det_threshold, max_side=max_side, shard_size=shard_size, commit_interval=commit_interval,
            max_file_size=max_file_size * 2**20, flip=flip,
        )
        if model is not None and get_model_spec(model).warning:
            warn(get_model_spec(model).warning or "")
        if engine not in ("local", "ray"):
            fail(f"Unknown --engine '{engine}': use local or ray.")
        if engine == "local" and (address is not None or actors is not None):
            fail("--address and --actors go with --engine ray.")
        if engine == "ray":
            # Ray Data draws its own progress (stderr); the summary below is the local ingest's.
            summary = ingest_then_refresh(source, gallery, options, engine="ray", address=address, actors=actors,
                                          ray_progress=not (quiet or as_json))
        elif quiet or as_json or not err.is_terminal:
            summary = ingest_then_refresh(source, gallery, options)
        else:
            # a pulse until the scan's count is known, then done/total with the rate and the time left
            with Progress(SpinnerColumn(), TextColumn("[bold]ingest"), BarColumn(),
                          TextColumn("{task.fields[message]}"), TimeElapsedColumn(),
                          console=err, transient=True) as progress:
                task = progress.add_task("ingest", total=None, message="starting ...")

                def on_progress(event: Event) -> None:
                    progress.update(task, completed=event.done, total=event.total, message=event.message)

                summary = ingest_then_refresh(source, gallery, options, on_progress=on_progress)
        if as_json:
            print_json(summary)
            return
        if model is None and summary.warning:
            warn(summary.warning)
        table = Table(title=f"Ingested {source} → {gallery}", show_header=False)
        table.add_row("model", f"{summary.model} on {summary.device}")
        table.add_row("photo files found", str(summary.files_seen))
        table.add_row("already in gallery (skipped)", str(summary.skipped))
        table.add_row("new photos read", str(summary.photos))
        table.add_row("faces found", f"{summary.faces} ({summary.labeled_faces} labeled)")
        table.add_row("duplicate files (same content)", str(summary.duplicates))
        if summary.kept_out:
            table.add_row("kept out (erased earlier)", f"{summary.kept_out} (not read in; `gallery photos admit` "
                                                      "lets a photo in again)")
        failures = ", ".join(f"{k}: {v}" for k, v in sorted(summary.failures.items())) or "none"
        table.add_row("failed photos", f"{summary.failed} ({failures})")
        if summary.videos:
            table.add_row("videos", f"{summary.videos} ({summary.video_seconds:.0f} s of video, {summary.video_frames} "
                                    f"frames sampled, {summary.video_tracks} face tracks)")
        if summary.xmp_regions or summary.xmp_warnings:
            table.add_row("XMP face regions", f"{summary.xmp_regions} named: {summary.xmp_matched} on a detected face, "
                                              f"{summary.xmp_from_region} embedded from their own box (flagged)")
        if summary.xmp_warnings:
            table.add_row("XMP not read", f"{summary.xmp_warnings} files, e.g. {summary.xmp_warning_examples[0]}")
        for command, count in sorted(summary.needs_install.items()):
            table.add_row("decoder not installed", f"{count} files: {command}, then run the same ingest again")
        table.add_row("throughput", f"{summary.photos_per_s:.1f} photos/s, {summary.faces_per_s:.1f} faces/s")
        table.add_row("time", f"{summary.seconds:.1f} s")
        out.print(table)
        say_after_write(summary, gallery)


def register_sync(app: GalleryTyper) -> None:
    @app.command()
    def sync(
        source: Annotated[Path, typer.Argument(help="The photo folder that was ingested.")],
        gallery: GalleryOpt,
        labels: Annotated[str, typer.Option(help="Identity labels, as for ingest.")] = "folder",
        retry_failed: Annotated[
            bool, typer.Option("--retry-failed", help="Read again every file that failed, changed or not.", metavar="")
        ] = False,
        workers: Annotated[int | None, typer.Option(help="Decode processes (0 = in-process).", min=0)] = None,
        device: DeviceOpt = "auto",
        max_file_size: MaxFileSizeOpt = 256,
        as_json: JsonOpt = False,
    ) -> None:
        """Make the gallery follow the archive: removed files leave, changed files are read again, renamed
        ones keep their faces (new path, new folder label), new ones are ingested. Unchanged files are not read."""
        from gallery.app.ingest import sync_then_refresh
        from gallery.ingest import IngestOptions

        summary = sync_then_refresh(source, gallery, IngestOptions(labels=labels, workers=workers, device=device,
                                                                   max_file_size=max_file_size * 2**20),
                                    retry_failed=retry_failed)
        if as_json:
            print_json(summary)
            return
        ing = summary.ingest
        out.print(
            f"synced {source}: {summary.added} new, {summary.changed} changed, {summary.removed} removed, "
            f"{summary.retried} retried, {summary.moved} moved ({summary.relabeled} relabeled), "
            f"{summary.unchanged} unchanged (not read)"
            + (f", {summary.kept_out} kept out (erased earlier)" if summary.kept_out else "")
            + f"; {ing.get('faces', 0)} faces added, "
            f"{summary.faces_removed} faces removed, {ing.get('seconds', 0):.1f} s",
            highlight=False,
        )
        say_after_write(summary, gallery)
