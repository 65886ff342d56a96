"""The `gallery` command: a thin typer layer over the Python API (gallery.ingest, gallery.store, ...).

Exit codes: 0 success (photos that failed are recorded, not fatal); 2 a problem the message explains
(missing gallery, weights, model mismatch, bad option); 130 interrupted (committed work is kept).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from gallery.cli_common import GalleryOpt, JsonOpt, err, out, user_errors
from gallery.models import list_models
from gallery.store import Gallery

app = typer.Typer(
    help="Face gallery search engine: ingest photo archives, index faces, ask 'who is this?'.",
    no_args_is_help=True,
    add_completion=False,
)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@app.command()
def ingest(
    source: Annotated[Path, typer.Argument(help="Photo folder (scanned recursively) or a single photo.")],
    gallery: GalleryOpt,
    labels: Annotated[
        str, typer.Option(help="Identity labels: 'folder' (parent folder name), 'csv:FILE' (path,identity), 'none'.")
    ] = "folder",
    model: Annotated[str, typer.Option(help="Embedding model (see `gallery models`).")] = "facenet-vggface2",
    weights: Annotated[Path | None, typer.Option(help="Model weights file (else cache or download).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Photos per detection batch.", min=1)] = 32,
    embed_batch_size: Annotated[int, typer.Option(help="Faces per embedding batch.", min=1)] = 64,
    workers: Annotated[int | None, typer.Option(help="Decode processes (0 = in-process; default: cores).")] = None,
    min_face_size: Annotated[int, typer.Option(help="Smallest face side in pixels.", min=4)] = 20,
    det_threshold: Annotated[float, typer.Option(help="Minimum MTCNN face probability.", min=0, max=1)] = 0.9,
    max_side: Annotated[int, typer.Option(help="Downsize larger photos to this longest side.", min=64)] = 2048,
    shard_size: Annotated[int, typer.Option(help="Faces per Parquet shard.", min=1)] = 50_000,
    commit_interval: Annotated[float, typer.Option(help="Seconds between commits.", min=0)] = 60.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find, embed and store every face of a photo archive. Re-running resumes; nothing is added twice."""
    from gallery.ingest import IngestOptions, IngestSummary
    from gallery.ingest import ingest as run_ingest

    options = IngestOptions(
        labels=labels,
        model=model,
        weights=weights,
        device=device,
        batch_size=batch_size,
        embed_batch_size=embed_batch_size,
        workers=workers,
        min_face_size=min_face_size,
        det_threshold=det_threshold,
        max_side=max_side,
        shard_size=shard_size,
        commit_interval=commit_interval,
    )
    show_progress = not quiet and err.is_terminal
    with user_errors():
        from gallery.models import get_model_spec

        spec = get_model_spec(model)
        if spec.warning:
            err.print(f"[bold yellow]warning:[/] {spec.warning}")
        if show_progress:
            with Progress(
                SpinnerColumn(),
                TextColumn("[bold]ingest"),
                BarColumn(),
                TextColumn("{task.completed} photos · {task.fields[faces]} faces"),
                TextColumn("{task.fields[rates]}"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            ) as progress:
                task = progress.add_task("ingest", total=None, faces=0, rates="")

                def on_progress(s: IngestSummary) -> None:
                    progress.update(
                        task,
                        completed=s.photos,
                        faces=s.faces,
                        rates=f"{s.photos_per_s:.1f} photos/s · {s.faces_per_s:.1f} faces/s",
                    )

                summary = run_ingest(source, gallery, options, on_progress=on_progress)
        else:
            summary = run_ingest(source, gallery, options)
    if as_json:
        print(json.dumps(summary.as_dict()))
        return
    table = Table(title=f"Ingested {source} → {gallery}", show_header=False)
    table.add_row("model", f"{summary.model} on {summary.device}")
    table.add_row("photo files found", str(summary.files_seen))
    table.add_row("already in gallery (skipped)", str(summary.skipped))
    table.add_row("new photos read", str(summary.photos))
    table.add_row("faces found", f"{summary.faces} ({summary.labeled_faces} labeled)")
    table.add_row("duplicate files (same content)", str(summary.duplicates))
    failures = ", ".join(f"{k}: {v}" for k, v in sorted(summary.failures.items())) or "none"
    table.add_row("failed photos", f"{summary.failed} ({failures})")
    table.add_row("throughput", f"{summary.photos_per_s:.1f} photos/s, {summary.faces_per_s:.1f} faces/s")
    table.add_row("time", f"{summary.seconds:.1f} s")
    out.print(table)


@app.command()
def info(gallery: GalleryOpt, as_json: JsonOpt = False) -> None:
    """Summarise a gallery: model, photos, faces, identities, failures, shards, disk size, threshold."""
    with user_errors(), Gallery.open(gallery) as g:
        summary = g.info()
    data = summary.as_dict()
    data["model_name"] = summary.model["name"] if summary.model else None
    if as_json:
        data["model"] = data["model_name"]
        data["model_stamp"] = summary.model
        print(json.dumps(data))
        return
    table = Table(title=f"Gallery {gallery}", show_header=False)
    table.add_row("model", json.dumps(summary.model) if summary.model else "(none yet)")
    table.add_row("photos", str(summary.photos))
    table.add_row("faces", f"{summary.faces} ({summary.labeled_faces} labeled, {summary.deleted_faces} deleted)")
    table.add_row("identities", str(summary.identities))
    failures = ", ".join(f"{k}: {v}" for k, v in sorted(summary.failures.items())) or "none"
    table.add_row("failed photos", f"{summary.failed} ({failures})")
    table.add_row("duplicate files", str(summary.duplicates))
    table.add_row("shards", str(summary.shards))
    table.add_row("disk size", _human_bytes(summary.disk_bytes))
    if summary.threshold is not None:
        table.add_row("match threshold", f"{summary.threshold:.3f} — {summary.threshold_source}")
    out.print(table)


@app.command()
def identities(
    gallery: GalleryOpt,
    limit: Annotated[int, typer.Option(help="Show at most this many (0 = all).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """List identities with their face counts, most faces first."""
    with user_errors(), Gallery.open(gallery) as g:
        rows = g.identities()
    if limit:
        rows = rows[:limit]
    if as_json:
        print(json.dumps([{"identity": name, "faces": n} for name, n in rows]))
        return
    table = Table("identity", "faces", title=f"{len(rows)} identities")
    for name, n in rows:
        table.add_row(name, str(n))
    out.print(table)


@app.command()
def models(as_json: JsonOpt = False) -> None:
    """List the embedding models, their dimension, default threshold and where weights come from."""
    specs = list_models()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "dim": s.dim,
                        "input_size": s.input_size,
                        "offline": s.offline,
                        "pretrained": s.pretrained,
                        "default_threshold": s.default_threshold,
                        "description": s.description,
                        "warning": s.warning,
                    }
                    for s in specs
                ]
            )
        )
        return
    table = Table("model", "dim", "offline", "threshold", "description")
    for s in specs:
        table.add_row(
            s.name,
            str(s.dim),
            "yes" if s.offline else "download",
            f"{s.default_threshold:.3f}",
            s.description + (f"\n[yellow]{s.warning}[/]" if s.warning else ""),
        )
    out.print(table)


def _mount_subcommands() -> None:
    """Commands of the other packages (index, search) mount here; each stays a thin CLI layer."""
    from search.cli import register

    register(app)
    try:
        from search.bench_cli import register_bench
    except ImportError:  # the bench command arrives with its own module
        pass
    else:
        register_bench(app)
    try:
        from indexer.cli import index_app
    except ImportError:
        return
    app.add_typer(index_app, name="index")


_mount_subcommands()


def main(argv: list[str] | None = None) -> Any:  # pragma: no cover - console entry point helper
    return app(args=argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    app()
