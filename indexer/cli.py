"""`gallery index build|update|info`: a thin typer layer over the indexer API.

Mounted by gallery/cli.py as `app.add_typer(index_app, name="index")`. Errors the user can act on print
one red line and exit with code 2 (no traceback).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gallery.store import GalleryError
from indexer.build import build_index, update_index
from indexer.errors import IndexerError, IndexOutgrownWarning
from indexer.info import index_info

index_app = typer.Typer(
    help="Build and maintain the FAISS index over a gallery's face embeddings (IVF-PQ or exact flat).",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

GALLERY_OPT = typer.Option(..., "--gallery", "-g", help="Gallery folder (holds gallery.db).")
JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON.")


def _fail(message: str) -> None:
    err_console.print(f"[red]Error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _run(fn, *args, **kwargs) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IndexOutgrownWarning)
        try:
            result = fn(*args, **kwargs)
        except (IndexerError, GalleryError) as err:
            _fail(str(err))
        except ValueError as err:
            _fail(str(err))
    return result, [str(w.message) for w in caught if issubclass(w.category, IndexOutgrownWarning)]


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _print_json(data: dict) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(title: str, rows: list[tuple[str, Any]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, "-" if value is None else escape(str(value)))
    console.print(table)


def _summary_rows(m: dict) -> list[tuple[str, Any]]:
    timing = m.get("timing_s") or {}
    mem = m.get("memory") or {}
    rerank = m.get("rerank") or {}
    training = m.get("training") or {}
    return [
        ("factory", m.get("factory")),
        ("faces indexed", f"{m.get('ntotal', 0):,}"),
        ("dimension / metric", f"{m.get('dim')} / {m.get('metric')}"),
        ("nlist / default nprobe", f"{m.get('nlist') or '-'} / {m.get('nprobe') or '-'}"),
        ("re-ranking", f"on, top {rerank.get('candidates')} candidates" if rerank.get("enabled") else "off"),
        ("training sample", f"{training.get('sample_size', 0):,}"),
        ("covers", f"shards up to {m.get('last_shard_id')}, vector ids up to {m.get('max_face_id')}"),
        ("index size", f"{_fmt_bytes(m.get('index_bytes'))} ({m.get('index_bytes_per_vector')} B/vector)"),
        ("build time", f"{m.get('build_seconds')} s (train {timing.get('train')} s, add {timing.get('add')} s)"),
        (
            "peak memory",
            f"{_fmt_bytes(mem.get('peak_rss_bytes'))} RSS (+{_fmt_bytes(mem.get('peak_rss_delta_bytes'))})",
        ),
        ("device", m.get("device")),
        ("why", m.get("reason")),
    ]


def _warn(messages: list[str]) -> None:
    for w in messages:
        err_console.print(f"[yellow]Warning:[/yellow] {escape(w)}", highlight=False, soft_wrap=True)


@index_app.command("build")
def build_cmd(
    gallery: Path = GALLERY_OPT,
    factory: str | None = typer.Option(
        None, "--factory", help="Any faiss index_factory string (overrides the automatic choice)."
    ),
    memory_budget: float | None = typer.Option(
        None, "--memory-budget", help="Bytes per vector for the in-RAM index (codes + id), e.g. 80."
    ),
    rerank: bool | None = typer.Option(
        None, "--rerank/--no-rerank", help="Exact re-ranking from on-disk float vectors (default: on for PQ)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    nprobe: int | None = typer.Option(None, "--nprobe", help="Default number of lists searched."),
    seed: int = typer.Option(0, "--seed", help="Seed of the training sample and k-means."),
    as_json: bool = JSON_OPT,
) -> None:
    """Build (or rebuild) the index from every live face; the old index stays usable until it is done."""
    if device not in ("auto", "cpu", "cuda"):
        _fail(f"--device must be auto, cpu or cuda (got '{device}')")
    if not as_json:
        err_console.print(f"Building the index of {gallery} ...", style="dim")
    manifest, warned = _run(
        build_index,
        gallery,
        factory=factory,
        memory_budget=memory_budget,
        rerank=rerank,
        device=device,
        nprobe=nprobe,
        seed=seed,
    )
    if as_json:
        _print_json(manifest)
    else:
        _table(f"Index built for {gallery}", _summary_rows(manifest))
    _warn(warned)


@index_app.command("update")
def update_cmd(gallery: Path = GALLERY_OPT, as_json: bool = JSON_OPT) -> None:
    """Add the faces ingested since the last build, without retraining."""
    manifest, warned = _run(update_index, gallery)
    if as_json:
        _print_json(manifest)
    else:
        added = manifest.get("added", 0)
        console.print(
            f"Added {added:,} faces; the index now holds {manifest['ntotal']:,} (vector ids up to "
            f"{manifest['max_face_id']})."
            if added
            else "The index is up to date: no new faces."
        )
    _warn(warned)


@index_app.command("info")
def info_cmd(gallery: Path = GALLERY_OPT, as_json: bool = JSON_OPT) -> None:
    """The index's manifest and how stale it is (live faces not indexed yet)."""
    info, _ = _run(index_info, gallery)
    if as_json:
        _print_json(info)
        return
    rows = _summary_rows(info)
    rows.insert(2, ("not indexed yet", f"{info['stale_faces']:,}"))
    rows.insert(3, ("deleted (filtered)", f"{info['deleted_filtered']:,}"))
    _table(f"Index of {gallery}", rows)
    if info["stale_faces"]:
        console.print(f"Add the new faces with: gallery index update --gallery {gallery}")
    _warn(info.get("warnings") or [])
