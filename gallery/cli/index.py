"""`gallery index build|update|info`: a thin typer layer over gallery.app.indexing (the index operation,
then pending erasures finished and the calibration when due) and the indexer's info."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from gallery.cli.common import (
    DeviceOpt,
    GalleryOpt,
    GalleryTyper,
    JsonOpt,
    human_bytes,
    note,
    out,
    plural,
    safe,
    say_calibration,
    warn,
)

index_app = GalleryTyper(
    help="Build and maintain the FAISS index over a gallery's face embeddings (IVF-PQ or exact flat).",
    no_args_is_help=True,
)


def _print_json(data: dict) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(title: str, rows: list[tuple[str, Any]]) -> None:
    table = Table(title=safe(title), show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, "-" if value is None else safe(str(value)))
    out.print(table)


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
        ("index size", f"{human_bytes(m.get('index_bytes'))} ({m.get('index_bytes_per_vector')} B/vector)"),
        ("build time", f"{m.get('build_seconds')} s (train {timing.get('train')} s, add {timing.get('add')} s)"),
        (
            "peak memory",
            f"{human_bytes(mem.get('peak_rss_bytes'))} RSS (+{human_bytes(mem.get('peak_rss_delta_bytes'))})",
        ),
        ("device", m.get("device")),
        ("why", m.get("reason")),
    ]


@index_app.command("build")
def build_cmd(
    gallery: GalleryOpt,
    factory: Annotated[
        str | None, typer.Option(help="Any faiss index_factory string (overrides the automatic choice).")
    ] = None,
    memory_budget: Annotated[
        float | None, typer.Option(help="Bytes per vector for the in-RAM index (codes + id), e.g. 80.", min=1)
    ] = None,
    rerank: Annotated[
        bool | None,
        typer.Option("--rerank/--no-rerank", help="Exact re-ranking from on-disk float vectors (default: on for PQ).",
                     show_default=False, metavar=""),
    ] = None,
    device: DeviceOpt = "auto",
    nprobe: Annotated[int | None, typer.Option(help="Default number of lists searched.", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the training sample and k-means.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Build (or rebuild) the index from every live face; the old index stays usable until it is done."""
    from gallery.app.indexing import build

    if not as_json:
        note(f"Building the index of {gallery} ...")
    manifest = build(gallery, factory=factory, memory_budget=memory_budget, rerank=rerank, device=device,
                     nprobe=nprobe, seed=seed)
    if as_json:
        _print_json(manifest)
        return
    _say_erasures(manifest, gallery)
    _table(f"Index built for {gallery}", _summary_rows(manifest))
    _say_calibration(manifest)  # after the table it follows from


def _say_erasures(manifest: dict, gallery: object) -> None:
    erasures = manifest.get("erasures") or {}
    if erasures.get("finished"):
        note(f"finished {erasures['finished']} pending erasure(s)")
    if erasures.get("pending"):
        warn(f"an erasure is still pending ({'; '.join(f'{p}: {w}' for p, w in erasures['blocked'].items())}); "
             f"`gallery repair --gallery {gallery}` finishes it")


def _say_calibration(manifest: dict) -> None:
    from gallery.app.answers import Calibration

    if manifest.get("calibration"):
        say_calibration(Calibration.model_validate(manifest["calibration"]))


@index_app.command("update")
def update_cmd(gallery: GalleryOpt, as_json: JsonOpt = False) -> None:
    """Add the faces ingested since the last build, without retraining."""
    from gallery.app.indexing import update

    manifest = update(gallery)
    if as_json:
        _print_json(manifest)
        return
    _say_erasures(manifest, gallery)
    added = manifest.get("added", 0)
    out.print(
        f"Added {plural(added, 'face')}; the index now holds {manifest['ntotal']:,} (vector ids up to "
        f"{manifest['max_face_id']})."
        if added
        else "The index is up to date: no new faces."
    )
    _say_calibration(manifest)


@index_app.command("info")
def info_cmd(gallery: GalleryOpt, as_json: JsonOpt = False) -> None:
    """The index's manifest and how stale it is (live faces not indexed yet)."""
    from indexer import index_info

    info = index_info(gallery)
    if as_json:
        _print_json(info)
        return
    rows = _summary_rows(info)
    rows.insert(2, ("not indexed yet", f"{info['stale_faces']:,}"))
    rows.insert(3, ("deleted (filtered)", f"{info['deleted_filtered']:,}"))
    _table(f"Index of {gallery}", rows)
    if info["stale_faces"]:
        out.print(f"Add the new faces with: gallery index update --gallery {safe(str(gallery))}")
    for w in info.get("warnings") or []:
        warn(w)
