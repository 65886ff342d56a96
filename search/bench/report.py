"""What a benchmark leaves on disk: bench.csv, bench.json and the recall-vs-latency curves (PNG).

`plot_curves` is shared with benchmarks/recall_latency.py, so that `gallery bench` on a user's gallery
and the synthetic suite draw the same picture. matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.bench.sweep import BenchReport

CSV_FIELDS = ["label", "method", "nprobe", "rerank", "candidates", "recall@1", "recall@10", "mate_recall",
              "p50_ms", "p95_ms", "p99_ms", "mean_ms", "qps", "bytes_per_vector", "applicable", "recommended"]


def _rows(report: BenchReport) -> list[dict[str, Any]]:
    rows = [dict(p) for p in report.points] + ([dict(report.exact)] if report.exact else [])
    for r in rows:
        r["recommended"] = report.recommended is not None and r.get("label") == report.recommended.get("label")
    return rows


def write_outputs(report: BenchReport, out_dir: Path) -> dict[str, str]:
    """bench.csv, bench.json and bench.png (the recall-vs-latency curve) in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "bench.csv", "json": out_dir / "bench.json", "png": out_dir / "bench.png"}
    with open(paths["csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(_rows(report))
    plot_curves(
        {report.index["factory"]: report.points, **({"exact": [report.exact]} if report.exact else {})},
        paths["png"],
        title=f"{Path(report.gallery).name}: {report.index['ntotal']:,} faces, {report.queries['n']} queries",
        metrics=("recall@1", "recall@10", "mate_recall"),
        target=(report.target_metric, report.target_recall),
        highlight=report.recommended,
    )
    files = {k: str(v) for k, v in paths.items()}
    report.files = files
    paths["json"].write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
    return files


def _group_of(p: dict[str, Any]) -> str | None:
    if p.get("group") is not None:
        return str(p["group"])
    if p.get("rerank") is None:
        return None
    return f"rerank {p['candidates']}" if p["rerank"] else "no rerank"


def plot_curves(
    series: dict[str, list[dict[str, Any]]],
    path: Path,
    title: str,
    metrics: Sequence[str] = ("recall@1", "recall@10", "mate_recall"),
    target: tuple[str, float] | None = None,
    highlight: dict[str, Any] | None = None,
) -> None:
    """One panel per metric: recall vs single-query p50 latency (log x), one line per series (split by
    re-rank depth), exact points as stars. Agg backend: no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if any(p.get(m) is not None for pts in series.values() for p in pts)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for name, pts in series.items():
            groups: dict[str | None, list[dict[str, Any]]] = {}
            for p in pts:
                if p.get(m) is not None:
                    groups.setdefault(_group_of(p), []).append(p)
            for key, g in groups.items():
                # along the sweep (nprobe / efSearch), not by latency: timing noise must not zig-zag the line
                g = sorted(g, key=lambda p: (p.get("order") or p.get("nprobe") or 0, p["p50_ms"]))
                label = name if key is None else f"{name} ({key})"
                xs, ys = [p["p50_ms"] for p in g], [p[m] for p in g]
                is_exact = all(p.get("exact") for p in g) and len(g) == 1
                ax.plot(xs, ys, marker="*" if is_exact else "o", markersize=12 if is_exact else 4,
                        linestyle="none" if is_exact else "-", label=label)
        if highlight is not None and highlight.get(m) is not None:
            ax.plot([highlight["p50_ms"]], [highlight[m]], "o", markersize=14, markerfacecolor="none",
                    markeredgecolor="red", label="recommended")
        if target is not None and target[0] == m:
            ax.axhline(target[1], color="grey", linestyle="--", linewidth=1, label=f"target {target[1]}")
        ax.set_xscale("log")
        ax.set_xlabel("single-query latency p50 (ms, log)")
        ax.set_ylabel(m)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
