"""`gallery bench`: the thin CLI over search.bench.run_bench (recall vs latency on the user's gallery)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gallery.cli.common import GalleryOpt, GalleryTyper, JsonOpt, ThresholdOpt, WeightsOpt, err, hint, out, safe, warn


def _int_list(text: str | None, what: str, minimum: int = 0) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated integers, e.g. 1,4,16,64") from None
    if any(v < minimum for v in values):
        raise typer.BadParameter(f"{what} must be >= {minimum}")
    return values


def _fmt(value: object, spec: str = ".4f") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def register(app: GalleryTyper) -> None:
    """Add the `bench` command to the main `gallery` app."""

    @app.command()
    def bench(
        gallery: GalleryOpt,
        queries: Annotated[int, typer.Option(help="Held-out query faces sampled from the gallery.", min=1)] = 1000,
        seed: Annotated[int, typer.Option(help="Seed of the query sample.")] = 0,
        target_recall: Annotated[
            float, typer.Option(help="Recall the recommended setting must reach.", min=0, max=1)
        ] = 0.95,
        target_metric: Annotated[
            str,
            typer.Option(help="mate_recall (default: the neighbours above the threshold, which decide answers), "
                              "recall@10 or recall@1."),
        ] = "mate_recall",
        nprobe: Annotated[
            str | None, typer.Option("--nprobe", help="nprobe values to sweep, e.g. 8,16,32 (default: powers of 2).")
        ] = None,
        rerank_depth: Annotated[
            str | None,
            typer.Option("--rerank-depth", help="Re-ranking depths to sweep, 0 = off (default: 0,100,200,400)."),
        ] = None,
        queries_from: Annotated[
            list[Path] | None, typer.Option("--queries-from", help="Query photos or folders instead of gallery faces.")
        ] = None,
        weights: WeightsOpt = None,
        threshold: ThresholdOpt = None,
        k: Annotated[int, typer.Option("-k", help="Neighbours compared with exact search.", min=1)] = 10,
        latency_queries: Annotated[int, typer.Option(help="Queries timed one at a time per point.", min=1)] = 200,
        exact: Annotated[
            bool, typer.Option(help="Measure exact search too (when its vectors fit in memory) and consider it.")
        ] = True,
        identification: Annotated[
            bool, typer.Option(help="Rank-1/5 and FNIR@FPIR=1% on labeled faces (leave-one-out).")
        ] = True,
        apply: Annotated[
            bool,
            typer.Option("--apply", metavar="",
                         help="Store the recommended nprobe/depth as the index's default, or rebuild the index as "
                              "exact search (flat) when exact search is recommended."),
        ] = False,
        output: Annotated[Path | None, typer.Option(
            help="Folder for bench.csv, bench.json, bench.png (default: ./bench-GALLERYNAME; with --json, none).",
            show_default=False)] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Recall against exact search vs latency for every search setting of the gallery's index and for
        exact search itself; recommends (and with --apply stores) the cheapest one that meets the recall
        target, exact search included, and says why."""
        from indexer import index_info
        from search.bench import run_bench
        from search.bench.sweep import stale_index_note

        nprobes = _int_list(nprobe, "--nprobe", minimum=1)
        depths = _int_list(rerank_depth, "--rerank-depth")
        # said first, not after minutes of measuring: faces the index does not hold are not benchmarked
        stale = index_info(gallery)["stale_faces"]
        said = stale_index_note(stale, gallery) if stale else None
        if said and not as_json:
            warn(said)
        if output is None and not as_json:  # the plot is for a person: written unless asked otherwise
            output = Path(f"bench-{gallery.resolve().name}")
        quiet = as_json or not err.is_terminal
        status = err.status("benchmarking ...") if not quiet else None
        try:
            if status is not None:
                status.start()
            report = run_bench(
                gallery,
                queries=queries,
                seed=seed,
                target_recall=target_recall,
                nprobes=nprobes,
                rerank_depths=depths,
                query_photos=queries_from or None,
                weights=weights,
                apply=apply,
                output=output,
                target_metric=target_metric,
                threshold=threshold,
                k=k,
                latency_queries=latency_queries,
                identification=identification,
                exact_baseline=exact,
                on_progress=(lambda e: status.update(e.message)) if status is not None else None,
            )
        finally:
            if status is not None:
                status.stop()
        if as_json:
            from gallery.app.answers import BenchAnswer

            print(BenchAnswer.model_validate(report.as_dict()).model_dump_json())
            return
        idx = report.index
        table = Table(
            title=f"{report.gallery}: index {idx['factory']}, {idx['ntotal']:,} faces, {report.queries['n']} queries, "
            f"k={report.k}, threshold {_fmt(report.threshold, '.3f')}",
            title_justify="left",
        )
        for col in ("method", "setting", "R@1", f"R@{report.k}", "mate R", "p50 ms", "p99 ms", "QPS"):
            if col in ("method", "setting"):
                table.add_column(col, justify="left", overflow="fold")
            else:  # numbers are never cut: the text columns wrap instead
                table.add_column(col, justify="right", no_wrap=True, min_width=5)
        rec_label = report.recommended.get("label") if report.recommended else None
        rows = list(report.points)
        if report.exact and all(report.exact.get("label") != p.get("label") for p in rows):
            rows.append(report.exact)
        for p in rows:
            mark = " [bold green]←[/]" if p.get("label") == rec_label else ""
            table.add_row(
                f"{p['method']}{mark if not p.get('setting') else ''}",
                f"{p.get('setting', '')}{mark if p.get('setting') else ''}",
                _fmt(p.get("recall@1"), ".3f"),
                _fmt(p.get(f"recall@{report.k}"), ".3f"),
                _fmt(p.get("mate_recall"), ".3f"),
                _fmt(p.get("p50_ms"), ".3f"),
                _fmt(p.get("p99_ms"), ".3f"),
                _fmt(p.get("qps"), ".0f"),
            )
        out.print(table)
        out.print("[dim]latency: one query per call, one faiss thread; QPS: all queries in one call; "
                  "R@k: recall against exact search; mate R: of the exact neighbours above the threshold; "
                  "← recommended[/]")
        rec = report.recommended
        if rec is not None:
            verdict = "meets" if report.meets_target else "[yellow]does not meet[/]"
            if report.applied:
                tail = (" — [green]the index was rebuilt as exact search[/]" if rec.get("exact")
                        else " — [green]stored as the index default[/]")
            elif rec.get("exact") and any(p.get("exact") for p in report.points):  # the index is exact already
                tail = ""
            else:
                tail = " (--apply " + ("rebuilds the index as exact search)" if rec.get("exact") else "stores it)")
            out.print(
                f"recommended: [bold]{rec['label']}[/] ({report.target_metric} {_fmt(rec.get(report.target_metric))} "
                f"{verdict} the target {report.target_recall}){tail}"
            )
            out.print(f"why: {report.why}")
        ident = report.identification
        if ident and not ident.get("skipped"):
            out.print(
                f"identification ({ident['mated_searches']} mated / {ident['nonmated_searches']} searches, "
                f"leave-one-out): rank-1 {_fmt(ident['rank1'])}, rank-5 {_fmt(ident['rank5'])}, "
                + ", ".join(f"FNIR {_fmt(v)} at FPIR {k}" for k, v in (ident.get("fnir_at") or {}).items())
                + f" (runner-up weight {ident['weight']:g})"
            )
        for note in report.notes:
            if note != said:
                err.print(f"[yellow]note:[/] {safe(note)}")
        if report.files:
            hint(f"wrote {', '.join(report.files.values())} (the plot: {report.files['png']}; --output DIR to "
                 "write elsewhere)")
