"""`gallery search`, `gallery calibrate`, `gallery verify`: thin CLI over search.Searcher, search.calibrate
and gallery.app.verify; `--json` prints the answers of gallery.app.answers (those the HTTP API gives).

Exit codes of `search`: 0 every query photo answered (an "unknown" face is an answer); 1 some query
photos could not be answered (unreadable, no face), each reported, the batch went on; 2 a problem
the message explains (no gallery, no index, model mismatch).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Column, Table

from gallery.cli.common import (
    DeviceOpt,
    GalleryOpt,
    GalleryTyper,
    JsonOpt,
    PresetOpt,
    ThresholdOpt,
    WeightsOpt,
    err,
    exit_without_teardown,
    fail,
    fpir_range,
    note,
    out,
    plural,
    safe,
    warn,
)
from search.decision import decimals_apart, verdict_text

CSV_FIELDS = [
    "query",
    "face_index",
    "x1",
    "y1",
    "x2",
    "y2",
    "det_score",
    "is_main",
    "identity",
    "unknown",
    "score",
    "statistic",
    "margin",
    "runner_up",
    "threshold",
    "threshold_source",
    "question",
    "too_poor",
    "mode",
    "candidates",
    "warnings",
    "error",
    "detail",
]


def _csv_row(record: dict) -> dict:
    face = record.get("face") or {}
    box = face.get("box") or [None] * 4
    return {
        "query": record.get("query"),
        "face_index": face.get("index"),
        "x1": box[0],
        "y1": box[1],
        "x2": box[2],
        "y2": box[3],
        "det_score": face.get("det_score"),
        "is_main": face.get("is_main"),
        "threshold": record.get("threshold"),
        "threshold_source": record.get("threshold_source"),
        "mode": record.get("mode"),
        "warnings": " | ".join(record.get("warnings") or []),
        "identity": record.get("identity"),
        "unknown": record.get("unknown"),
        "score": record.get("score"),
        "statistic": record.get("statistic"),
        "margin": record.get("margin"),
        "runner_up": (record.get("runner_up") or {}).get("identity"),
        "question": record.get("question"),
        "too_poor": record.get("too_poor"),
        "candidates": ";".join(
            f"{c['identity'] if c['identity'] is not None else 'face:' + str(c['face_id'])}={c['score']}"
            for c in record.get("candidates", [])
        ),
        "error": record.get("error"),
        "detail": record.get("detail"),
    }


def register(app: GalleryTyper) -> None:
    """Add the query commands to the main `gallery` app."""

    @app.command()
    def search(
        queries: Annotated[list[Path], typer.Argument(help="Query photos and/or folders of photos.")],
        gallery: GalleryOpt,
        k: Annotated[int, typer.Option("-k", "--top-k", help="Identities (or faces) per query face.", min=1)] = 5,
        nprobe: Annotated[int | None, typer.Option(help="IVF lists to visit (default: the index's).", min=1)] = None,
        threshold: ThresholdOpt = None,
        largest_only: Annotated[
            bool, typer.Option("--largest-only", help="Answer only each photo's main face.", metavar="")
        ] = False,
        faces: Annotated[
            bool, typer.Option("--faces", help="Nearest gallery faces instead of identities.", metavar="")
        ] = False,
        aggregation: Annotated[str, typer.Option(help="Identity score: 'max' or 'mean:M'.")] = "max",
        weight: Annotated[float | None, typer.Option(
            help="Runner-up weight of the decision statistic (default: the gallery's calibrated one).", min=0)] = None,
        device: DeviceOpt = "auto",
        weights: WeightsOpt = None,
        output: Annotated[Path | None, typer.Option(help="Write results to FILE.jsonl or FILE.csv.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Who is this? Every face of each query photo, with its top-k identities and an open-set decision."""
        if output is not None and output.suffix.lower() not in (".csv", ".jsonl", ".json"):
            raise typer.BadParameter(f"{output}: write .csv or .jsonl (one JSON object per line)",
                                     param_hint="--output")
        from gallery.app.answers import SearchResult
        from gallery.ingest.scan import expand_photo_args
        from search.searcher import Searcher

        searcher = Searcher(
            gallery, k=k, nprobe=nprobe, threshold=threshold, aggregation=aggregation, device=device, weights=weights,
            weight=weight,
        )
        try:
            photos = expand_photo_args(queries)
            if not photos:
                fail(f"No photos found in {', '.join(map(str, queries))} "
                     "(photos: .jpg .jpeg .png .webp .bmp .tif .tiff .heic .heif .avif, camera RAW).")
            found_all: list = []  # per photo: (photo, found, answers)
            failed = 0
            with Progress(console=err, transient=True, disable=len(photos) < 2 or not err.is_terminal) as progress:
                task = progress.add_task("search", total=len(photos))
                for photo in photos:
                    found, answers = searcher.search(photo, largest_only=largest_only, faces_mode=faces)
                    if not found.ok:
                        failed += 1
                        if not as_json and output is None:
                            err.print(f"[yellow]{safe(str(photo))}:[/] {found.error} — {safe(found.detail or '')}")
                    found_all.append((photo, found, answers))
                    progress.advance(task)
            warnings = searcher.warnings
        finally:
            searcher.close()
            exit_without_teardown()
        results: list[SearchResult] = []
        for photo, found, answers in found_all:
            if found.ok:
                results.extend(SearchResult.of(a, warnings) for a in answers)
            else:
                results.append(SearchResult(query=str(photo), error=found.error, detail=found.detail,
                                            threshold=None, mode="faces" if faces else "identities",
                                            warnings=warnings))
        records = [r.model_dump() for r in results]
        for w in warnings:
            warn(w)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            if output.suffix.lower() == ".csv":
                with open(output, "w", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
                    writer.writeheader()
                    writer.writerows(_csv_row(r) for r in records)
            else:
                output.write_text("".join(json.dumps(r) + "\n" for r in records))
            note(f"wrote {len(records)} records for {len(photos)} photos to {output} ({failed} failed)")
        if as_json:  # one answer per line: the objects POST /v1/search answers under `results`
            for result in results:
                print(result.model_dump_json())
        elif output is None:
            for r in records:
                if not r.get("error"):
                    out.print(_answer_table(r, faces))
        if failed:
            raise typer.Exit(1)

    @app.command()
    def calibrate(
        gallery: GalleryOpt,
        target_fpir: Annotated[
            float, typer.Option(help="False positive identification rate to allow, above 0 and at most 1.",
                                callback=fpir_range)
        ] = 0.01,
        max_probes: Annotated[int, typer.Option(help="Labeled faces searched leave-one-out.", min=10)] = 2000,
        seed: Annotated[int, typer.Option()] = 0,
        nprobe: Annotated[int | None, typer.Option(help="IVF lists to visit (default: the index's).", min=1)] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Report without storing the threshold.", metavar="")
        ] = False,
        weight: Annotated[float | None, typer.Option(
            help="Fix the runner-up weight instead of choosing it with the threshold.", min=0)] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Choose the decision rule's runner-up weight and threshold together for a target FPIR, and the 1:1
        threshold, on the gallery's own labeled faces, and store them."""
        from gallery.app.answers import Calibration
        from search.calibrate import calibrate as run_calibrate
        from search.searcher import Searcher

        with Searcher(gallery, nprobe=nprobe) as searcher:
            report = run_calibrate(searcher, target_fpir, max_probes, seed, apply=not dry_run, weight=weight)
        if as_json:
            print(Calibration.model_validate(report.as_dict()).model_dump_json())
            return
        table = Table(show_header=False, title=f"Calibration of {gallery}")
        rule = report.rule
        table.add_row("1:K threshold", f"{report.threshold:.4f} on the statistic "
                      f"({1 - rule['template_share']:g} x best face + {rule['template_share']:g} x template "
                      f"- {rule['weight']:g} x runner-up)" + ("" if report.applied else " (dry run: not stored)"))
        table.add_row("runner-up weight", f"{rule['weight']:g}" + (
            " (chosen with the threshold; FNIR by weight: " + ", ".join(f"{w}: {v:.1%}" for w, v in
                                                                         report.weights_tried.items()) + ")"
            if report.weights_tried else " (fixed)"))
        table.add_row(
            "FPIR", f"{report.fpir:.2%} (target {report.target_fpir:.2%}, {report.nonmated_searches} searches)"
        )
        table.add_row("FNIR", f"{report.fnir:.2%} ({report.mated_searches} mated searches)")
        table.add_row("FNIR at FPIR", ", ".join(f"{'-' if v is None else f'{v:.2%}'} at {k}"
                                                for k, v in report.fnir_at.items()))
        table.add_row("rank-1", f"{report.rank1:.2%}")
        if report.one_to_one:
            one = report.one_to_one
            table.add_row("1:1 threshold", f"{one['value']:.4f} on the cosine of two faces (FMR {one['fmr']:.2%}, "
                          f"FNMR {one['fnmr']:.2%}, {one['genuine_pairs']:,} genuine pairs): gallery verify")
        else:
            table.add_row("1:1 threshold", "not calibrated (too few pairs): the model's default")
        if report.low_quality_faces_left_out:
            table.add_row("left out", f"{report.low_quality_faces_left_out} labeled faces below the quality gate")
        out.print(table)

    @app.command()
    def verify(
        photo_a: Annotated[Path, typer.Argument(help="First photo (its main face).")],
        photo_b: Annotated[Path | None, typer.Argument(help="Second photo (its main face); or --identity.",
                                                       show_default=False)] = None,
        gallery: Annotated[
            Path | None, typer.Option("--gallery", "-g", help="Use this gallery's model and threshold.")
        ] = None,
        identity: Annotated[str | None, typer.Option(
            help="Compare with this person of the gallery (their best-matching face) instead of a second photo.",
            show_default=False)] = None,
        model: Annotated[
            str | None, typer.Option(help="Model when no gallery is given (default: dlib-resnet).", show_default=False)
        ] = None,
        threshold: ThresholdOpt = None,
        device: DeviceOpt = "auto",
        weights: WeightsOpt = None,
        preset: PresetOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Are these two photos the same person? (1:1 verification of their main faces; or of photo A's main
        face against a gallery identity: --identity NAME --gallery G.)"""
        from gallery.app.verify import verify as run_verify

        if (photo_b is None) == (identity is None):
            fail("Give a second photo or --identity NAME (with --gallery), not both.")
        result = run_verify(photo_a, photo_b, gallery, model, threshold, device, weights, preset, identity=identity)
        exit_without_teardown()
        if as_json:  # the object POST /v1/verify answers
            print(result.model_dump_json())
            return
        verdict = "[bold green]same person[/]" if result.same else "[bold yellow]different people[/]"
        d = decimals_apart(result.score, result.threshold)
        against = (f" (best of {plural(result.faces_compared or 0, 'face')} of {safe(result.identity)}: face "
                   f"{result.face_id})" if result.identity is not None else "")
        out.print(
            f"{verdict}: similarity {result.score:.{d}f} {'>=' if result.same else '<'} 1:1 threshold "
            f"{result.threshold:.{d}f} ({safe(result.threshold_source)}; model {result.model}){against}"
        )
        for name, q in (("A", result.quality_a), ("B", result.quality_b)):
            if q and not q["ok"]:
                warn(f"photo {name}'s face is below the quality gate ({q['issue']}): the similarity is less reliable")


def _verdict(r: dict) -> str:
    """The decision in words: a name, "unknown" or "too poor to identify", with the numbers behind it."""
    if r.get("too_poor"):
        return f"[bold yellow]too poor to identify[/] ({safe(r['too_poor'])})"
    if r.get("mode") == "faces":  # a face has no name to give: how many of the nearest clear the threshold
        above = sum(1 for c in r["candidates"] if c["above_threshold"])
        found = (f"[bold green]{plural(above, 'gallery face')} above the threshold[/]" if above else
                 "[bold yellow]no gallery face above the threshold[/]")
        return f"{found} (1:1 threshold {r['threshold']:.3f})"
    name = f"[bold green]{safe(r['identity'])}[/]" if not r["unknown"] else "[bold yellow]unknown[/]"
    if r.get("statistic") is None:
        return f"{name} (no labeled identity among the neighbours; threshold {r['threshold']:.3f})"
    runner = (r.get("runner_up") or {}).get("identity")
    return f"{name} ({verdict_text(r['statistic'], r['threshold'])}" + (
        f"; runner-up {safe(runner)})" if runner else ")")


def _answer_table(r: dict, faces_mode: bool) -> Table:
    face = r["face"]
    table = Table("rank", "identity" if not faces_mode else "face", "face score",
                  *(("template", "combined") if not faces_mode else ()), "faces", Column("photo", overflow="fold"),
                  title=f"{safe(r['query'])} · face {face['index']} {face['box']} → {_verdict(r)}")
    for rank, c in enumerate(r["candidates"], 1):
        mark = "" if c["above_threshold"] else " [dim](below threshold)[/]"
        label = safe(c["identity"]) if c["identity"] is not None else f"face {c['face_id']}"
        extra = () if faces_mode else (
            "-" if c.get("template_score") is None else f"{c['template_score']:.3f}",
            "-" if c.get("combined") is None else f"{c['combined']:.4f}")
        where = f"video {c['photo']}, {c['clip']}" if c.get("clip") else c["photo"]
        table.add_row(str(rank), f"{label}{mark}", f"{c['score']:.3f}", *extra, str(c["faces_in_neighbours"]),
                      safe(where))
    return table
