"""`gallery cluster` and `gallery clusters ...`: find the people in an unlabeled archive, review, name.

Thin layers over gallery.app.clusters; `--json` prints the answers the /v1/clusters API gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from gallery.cli.common import (
    GalleryOpt,
    GalleryTyper,
    JsonOpt,
    OptionalGalleryOpt,
    finite_threshold,
    hint,
    listing_gallery,
    note,
    out,
    plural,
    safe,
)

clusters_app = GalleryTyper(help="Review the clusters `gallery cluster` found: list, show, name, split, reject.")

ClusterArg = Annotated[int, typer.Argument(help="Cluster id (see `gallery clusters`).", min=0, max=2**63 - 1)]
Similarity = Annotated[float | None, typer.Option(
    help="Cosine two single faces of one person must reach (default: the gallery's setting, else the model's "
         "measured default).", callback=finite_threshold, show_default=False)]


def _print_json(answer: object) -> None:
    """An answer (gallery.app.answers), or a list of them, as one line of JSON."""
    from pydantic import TypeAdapter

    print(TypeAdapter(type(answer)).dump_json(answer).decode() if isinstance(answer, list)
          else answer.model_dump_json())  # type: ignore[attr-defined]


@clusters_app.callback(invoke_without_command=True)
def clusters_list(
    ctx: typer.Context,
    gallery: OptionalGalleryOpt = None,
    limit: Annotated[int, typer.Option(help="Show at most this many (0 = all).", min=0)] = 20,
    min_size: Annotated[int, typer.Option(help="Only clusters of at least this many faces.", min=1)] = 2,
    suggest: Annotated[bool, typer.Option(help="Suggest the nearest labeled person for unnamed clusters.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Clusters, largest first: size, name (or a suggested one), representative photo."""
    if ctx.invoked_subcommand is not None:
        return
    gallery = listing_gallery(gallery)
    from gallery.app.clusters import clusters
    from search.cluster import count_clusters

    rows = clusters(gallery, min_size=min_size, limit=limit, suggest=suggest)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        note(f"No clusters yet: run gallery cluster --gallery {gallery}")
        return
    total = count_clusters(gallery, min_size=min_size) if limit and len(rows) == limit else len(rows)
    shown = (f"showing {len(rows):,} of {total:,} clusters (--limit 0 for all)" if total > len(rows)
             else plural(total, "cluster"))
    table = Table("cluster", "faces", "name", "suggestion", Column("representative photo", overflow="fold"),
                  title=f"{shown}, largest first")
    for r in rows:
        hint = f"{safe(r.suggestion['identity'])} ({r.suggestion['score']:.3f})" if r.suggestion else ""
        table.add_row(str(r.cluster), str(r.size), safe(r.name or "-"), hint, safe(r.representative_photo or ""))
    out.print(table)


@clusters_app.command("show")
def clusters_show(
    cluster: ClusterArg,
    gallery: GalleryOpt,
    sheet: Annotated[Path | None, typer.Option(help="Also write a contact sheet of its face crops (.jpg/.png).",
                                               show_default=False)] = None,
    max_faces: Annotated[int, typer.Option(help="Faces on the contact sheet at most.", min=1)] = 64,
    as_json: JsonOpt = False,
) -> None:
    """The faces of one cluster, those far from the rest first (? marks the faces a stricter split would
    take out); --sheet draws them for a glance."""
    from gallery.app.clusters import cluster as show_cluster

    detail = show_cluster(gallery, cluster, sheet, max_faces=max_faces)
    written = detail.sheet
    if as_json:
        _print_json(detail)
        return
    title = f"cluster {cluster}: {plural(detail.size, 'face')}"
    title += f", named {safe(detail.name)}" if detail.name else ""
    if detail.suggestion:
        title += f", looks like {safe(detail.suggestion['identity'])} ({detail.suggestion['score']:.3f})"
    if detail.doubtful:
        title += f"; {detail.doubtful} doubtful (?) first"
    table = Table("face", "", Column("to rest", justify="right"), Column("photo", overflow="fold"), "box",
                  "identity", title=title)
    for f in detail.faces:
        table.add_row(str(f["face_id"]), "?" if f["doubtful"] else "", f"{f['similarity']:.3f}", safe(f["photo"]),
                      str(f["box"]), safe(f["identity"] or ""))
    out.print(table)
    if written:
        note(f"contact sheet: {written}")
    if detail.doubtful:
        note(f"faces marked ? are far from the rest: look at them before naming (not this person: gallery clusters "
             f"reject {cluster} FACE_ID... --gallery {gallery})")


@clusters_app.command("name")
def clusters_name(
    cluster: ClusterArg,
    name: Annotated[str, typer.Argument(help="The person's name.")],
    gallery: GalleryOpt,
    strict: Annotated[bool, typer.Option("--strict", help="Leave the faces far from the rest of the cluster "
                                         "without the name.", metavar="")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Give the cluster's faces a name (an existing name merges the cluster into that person); faces far
    from the rest of the cluster are listed (--strict leaves them unnamed)."""
    from gallery.app.clusters import name as name_cluster

    result = name_cluster(gallery, cluster, name, strict=strict)
    if as_json:
        _print_json(result)
        return
    how = "merged into the existing" if result.merged else "named"
    out.print(safe(f"cluster {cluster}: {plural(result.faces_labeled, 'face')} {how} '{result.name}'"), highlight=False)
    if result.far_faces:
        ids = " ".join(str(f["face_id"]) for f in result.far_faces)
        what = "left unnamed" if result.left_unnamed else "named too"
        out.print(f"{plural(len(result.far_faces), 'face')} far from the rest of the cluster ({what}): {ids}",
                  highlight=False)
        fix = (f"gallery clusters reject {cluster} FACE_ID... --gallery {gallery}" if result.left_unnamed else
               f"gallery faces relabel FACE_ID... --unlabeled --gallery {gallery}")
        note(f"look at them first in: gallery clusters show {cluster} --gallery {gallery} "
             f"--sheet cluster{cluster}.jpg; those that are not {result.name}: {fix}")


@clusters_app.command("split")
def clusters_split(cluster: ClusterArg, gallery: GalleryOpt, threshold: Similarity = None,
                   as_json: JsonOpt = False) -> None:
    """Cluster one cluster again with a stricter setting; its parts become new clusters."""
    from gallery.app.clusters import split

    result = split(gallery, cluster, threshold=threshold)
    if as_json:
        _print_json(result)
        return
    if not result.into and not result.unclustered:
        out.print(f"cluster {cluster} stays one cluster at threshold {result.threshold:.3f} "
                  "(give a higher --threshold to split harder)")
        return
    parts = ", ".join(f"{p['cluster']} ({p['size']} faces)" for p in result.into) or "no cluster"
    out.print(f"cluster {cluster} split at threshold {result.threshold:.3f} into {parts}; "
              f"{result.unclustered} faces left alone")


@clusters_app.command("reject")
def clusters_reject(
    cluster: ClusterArg,
    face_ids: Annotated[list[int], typer.Argument(help="Faces that are not this person.", min=1, max=2**63 - 1)],
    gallery: GalleryOpt,
    as_json: JsonOpt = False,
) -> None:
    """Take faces out of a cluster: they become unclustered and never rejoin it."""
    from gallery.app.clusters import reject

    result = reject(gallery, cluster, face_ids)
    if as_json:
        _print_json(result)
        return
    out.print(f"cluster {cluster}: {plural(result.rejected, 'face')} taken out")


def register(app: GalleryTyper) -> None:
    app.add_typer(clusters_app, name="clusters")

    @app.command("cluster")
    def cluster(
        gallery: GalleryOpt,
        rebuild: Annotated[bool, typer.Option("--rebuild", help="Cluster every face again from scratch "
                                              "(names stay: they are on the faces).", metavar="")] = False,
        include_labeled: Annotated[bool | None, typer.Option(
            "--include-labeled/--unlabeled-only", help="Also cluster faces that already have a name.",
            show_default=False)] = None,
        include_low_quality: Annotated[bool | None, typer.Option(
            "--include-low-quality/--good-quality-only",
            help="Also cluster faces below the quality gate (blurred, cut off, tiny: left out by default).",
            show_default=False)] = None,
        threshold: Similarity = None,
        floor: Annotated[float | None, typer.Option(
            help="Mean cosine two large clusters need to merge (default: keeps the model's gap below "
                 "--threshold).", callback=finite_threshold, show_default=False)] = None,
        cohesion_gap: Annotated[float | None, typer.Option(
            help="Consistency check: two clusters of 3+ faces merge only if their mean cosine is within this of "
                 "the looser one's own inner mean (default: the model's measured setting; none for other models).",
            callback=finite_threshold, show_default=False)] = None,
        join_gap: Annotated[float | None, typer.Option(
            help="Consistency check for a smaller group joining a cluster of 3+ faces (default: the model's).",
            callback=finite_threshold, show_default=False)] = None,
        crowd_k: Annotated[int | None, typer.Option(
            help="Crowd check: how close other people come to a face is its cosine to its k-th nearest face "
                 "outside its cluster; 0 turns the check off (default: the model's measured setting, 3 for "
                 "dlib-resnet; none for other models).", min=0, show_default=False)] = None,
        crowd_margin: Annotated[float | None, typer.Option(
            help="Crowd check: how far above that level two single faces must be to merge (default: the "
                 "model's).", callback=finite_threshold, show_default=False)] = None,
        crowd_margin_large: Annotated[float | None, typer.Option(
            help="Crowd check: the same for large clusters, whose mean may sit below it (default: the "
                 "model's).", callback=finite_threshold, show_default=False)] = None,
        k: Annotated[int | None, typer.Option(help="Neighbours per face in the graph (default 30).", min=1,
                                              show_default=False)] = None,
        method: Annotated[str | None, typer.Option(help="average (default), single or core.",
                                                   show_default=False)] = None,
        as_json: JsonOpt = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.", metavar="")] = False,
    ) -> None:
        """Group faces into candidate people: the first run clusters every face, later runs add new faces
        to the clusters (named ones keep their names and pass them on)."""
        from gallery.app.clusters import cluster_run

        def progress(event: object) -> None:
            if not quiet and not as_json:
                note(f"{event.stage}: {event.total:,} {event.message}")  # type: ignore[attr-defined]

        result = cluster_run(gallery, rebuild=rebuild, progress=progress, include_labeled=include_labeled,
                             include_low_quality=include_low_quality, threshold=threshold,
                             floor=floor, k=k, method=method, cohesion_gap=cohesion_gap, join_gap=join_gap,
                             crowd_k=crowd_k, crowd_margin=crowd_margin, crowd_margin_large=crowd_margin_large)
        if as_json:
            _print_json(result)
            return
        if result.incremental and not result.new_faces:
            out.print("no new faces since the last clustering (to start over: --rebuild)")
            return
        what = (f"added {result.new_faces:,} new faces: {result.joined:,} joined existing clusters "
                f"({result.named_joined:,} took a cluster's name), {result.new_clusters:,} new clusters"
                if result.incremental else f"clustered {result.faces:,} faces")
        out.print(f"{what}; {result.clusters:,} clusters hold {result.clustered_faces:,} faces, "
                  f"{result.singletons:,} faces alone ({result.seconds:.1f} s)")
        hint(f"next: gallery clusters --gallery {gallery}")
