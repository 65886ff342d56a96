"""`gallery info`, `gallery models`: what a gallery holds and which models exist.

`gallery info` renders gallery.app.status (the object GET /v1/status answers); they import no torch.
"""

from __future__ import annotations

import json
import time

from rich.table import Table

from gallery.cli.common import GalleryOpt, GalleryTyper, JsonOpt, human_bytes, out, plural, safe, warn


def _model_text(stamp: dict) -> str:
    """The model stamp for a person: name, dimension, input, preprocessing, weights (`--json`: as stored)."""
    known = ("name", "dim", "input_size", "preset", "preprocessing", "weights_sha256")
    lines = [f"[bold]{safe(stamp.get('name'))}[/], {stamp.get('dim')}-d embeddings"
             + (f", {stamp['input_size']} px input" if stamp.get("input_size") else "")
             + (f", preset {safe(stamp['preset'])}" if stamp.get("preset") else "")]
    if stamp.get("preprocessing"):
        lines.append(f"preprocessing {safe(stamp['preprocessing'])}")
    if stamp.get("weights_sha256"):
        lines.append(f"weights SHA-256 {safe(stamp['weights_sha256'])}")
    lines += [f"{safe(k)}: {safe(json.dumps(v))}" for k, v in stamp.items() if k not in known]
    return "\n".join(lines)


def register(app: GalleryTyper) -> None:
    @app.command()
    def info(gallery: GalleryOpt, as_json: JsonOpt = False) -> None:
        """Summarise a gallery: model, photos, faces, identities, failures, shards, disk size, threshold."""
        from gallery.app.status import status
        from search.decision import DecisionRule

        summary = status(gallery)
        if as_json:
            print(summary.model_dump_json())
            return
        threshold, source = summary.threshold, summary.threshold_source
        one, one_source = summary.one_to_one_threshold, summary.one_to_one_source
        calibration, problems, kept_out = summary.calibration, summary.problems, summary.kept_out
        rule = DecisionRule.from_dict(summary.rule)
        report = {"fnir_at": summary.identification.fnir_at, "rank1": summary.identification.rank1}
        table = Table(title=f"Gallery {safe(str(gallery))}", show_header=False)
        table.add_column()
        table.add_column(overflow="fold")  # a weights hash wraps rather than being cut
        table.add_row("model", _model_text(summary.model_stamp) if summary.model_stamp else "(none yet)")
        table.add_row("photos", str(summary.photos))
        table.add_row("faces", f"{summary.faces} ({summary.labeled_faces} labeled, {summary.deleted_faces} deleted)")
        table.add_row("identities", str(summary.identities))
        failures = ", ".join(f"{k}: {v}" for k, v in sorted(summary.failures.items())) or "none"
        table.add_row("failed photos", f"{summary.failed} ({failures})")
        table.add_row("duplicate files", str(summary.duplicates))
        if kept_out:
            table.add_row("kept out", f"{plural(kept_out, 'photo')} (erased): ingest and sync do not read them in")
        table.add_row("shards", str(summary.shards))
        table.add_row("disk size", human_bytes(summary.disk_bytes))
        if summary.low_quality_faces:
            table.add_row("quality", f"{summary.low_quality_faces} faces below the quality gate (stored, not enrolled)"
                          + (f"; {summary.unmeasured_faces} not measured" if summary.unmeasured_faces else ""))
        if threshold is not None:
            table.add_row("1:K threshold (search)", f"{threshold:.4f} on {safe(rule.describe())} — "
                          f"{safe(source)}")
        if one is not None:
            table.add_row("1:1 threshold (verify)", f"{one:.4f} on the cosine of two faces — {safe(one_source)}")
        if report.get("fnir_at"):
            table.add_row("identification", ", ".join(f"FNIR {'-' if v is None else f'{v:.1%}'} at FPIR {k}"
                                                       for k, v in report["fnir_at"].items())
                          + f", rank-1 {report.get('rank1', float('nan')):.1%}, runner-up weight "
                          f"{rule.weight:g} (leave-one-out at calibration)")
        if calibration.outdated:
            table.add_row("calibrated", "[yellow]for an earlier decision rule: recalibrated at the next index build, "
                          f"ingest or sync, or now with gallery calibrate --gallery {safe(str(gallery))}[/]")
        if calibration.calibrated_at is not None:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(calibration.calibrated_at))
            stale = (f" [yellow]stale: labeled faces grew from {calibration.labeled_faces_at_calibration} to "
                     f"{calibration.labeled_faces}; run gallery calibrate[/]") if calibration.stale else ""
            table.add_row("calibrated", f"{when} on {calibration.identities_at_calibration} identities{stale}")
        out.print(table)
        for problem in problems:
            warn(f"{problem}: run gallery check --gallery {gallery}")

    @app.command()
    def models(as_json: JsonOpt = False) -> None:
        """List the embedding models, their dimension, default threshold and where weights come from."""
        from gallery.faces.models import DEFAULT_MODEL, list_models
        from gallery.faces.models.registry import ONNX_PRESETS, UNPUBLISHED

        specs = list_models()

        def source(s) -> str:
            if s.offline:
                return "yes"
            return "download or --weights" if s.weights_url else "--weights"

        if as_json:
            print(json.dumps([
                {"name": s.name, "dim": s.dim or None, "input_size": s.input_size, "offline": s.offline,
                 "pretrained": s.pretrained,
                 "default_threshold": None if s.default_threshold >= UNPUBLISHED else s.default_threshold,
                 "default": s.name == DEFAULT_MODEL, "description": s.description, "warning": s.warning,
                 "weights": s.weights_formats or None,
                 **({"presets": {p.name: {"input_size": p.input_size, "channels": p.channels, "mean": p.mean,
                                          "std": p.std, "for": p.families} for p in ONNX_PRESETS.values()}}
                    if s.name == "onnx" else {})}
                for s in specs
            ]))
            return
        table = Table("model", "dim", "weights", "threshold", "description")
        for s in specs:
            name = f"{s.name} (default)" if s.name == DEFAULT_MODEL else s.name
            threshold = "calibrate" if s.default_threshold >= UNPUBLISHED else f"{s.default_threshold:.3f}"
            text = s.description + (f"\n[dim]{safe(s.weights_formats)}[/]" if s.weights_formats else "")
            if s.name == "onnx":
                threshold = "per preset"
                text += "".join(f"\n  --preset {p.name}: {p.input_size}px {p.channels} (x-{p.mean:g})/{p.std:g}; "
                                f"{safe(p.families)}" for p in ONNX_PRESETS.values())
            table.add_row(name, str(s.dim or "file"), source(s), threshold,
                          text + (f"\n[yellow]{safe(s.warning)}[/]" if s.warning else ""))
        out.print(table)
