"""What a benchmark leaves on disk: its `BenchReport`, as bench.csv, bench.json and the recall-vs-latency
curves (PNG). search.bench.sweep fills the report; this module knows nothing of how.

`plot_curves` is shared with benchmarks/recall_latency.py, so that `gallery bench` on a user's gallery
and the synthetic suite draw the same picture. matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CSV_FIELDS = ["label", "method", "setting", "nprobe", "rerank", "candidates", "recall@1", "recall@10", "mate_recall",
              "p50_ms", "p95_ms", "p99_ms", "mean_ms", "qps", "bytes_per_vector", "applicable", "recommended"]


@dataclass
class BenchReport:
    gallery: str
    index: dict[str, Any]
    queries: dict[str, Any]
    k: int
    threshold: float | None
    threshold_source: str
    target_recall: float
    target_metric: str
    points: list[dict[str, Any]]
    exact: dict[str, Any] | None
    recommended: dict[str, Any] | None
    why: str
    meets_target: bool
    applied: bool
    identification: dict[str, Any] | None
    ground_truth: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _all_points(report: BenchReport) -> list[dict[str, Any]]:
    """The index's points and the exact point, once (a flat index's point is the exact point)."""
    extra = [report.exact] if report.exact and all(report.exact is not p and report.exact.get("label") != p.get("label")
                                                   for p in report.points) else []
    return list(report.points) + extra


def _rows(report: BenchReport) -> list[dict[str, Any]]:
    rows = [dict(p) for p in _all_points(report)]
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
    series: dict[str, list[dict[str, Any]]] = {}
    for p in _all_points(report):
        series.setdefault(p["method"], []).append(p)
    plot_curves(
        series,
        paths["png"],
        title=f"{Path(report.gallery).name}: {report.index['ntotal']:,} faces, {report.queries['n']} queries, "
        f"k={report.k}, threshold {_fmt_threshold(report.threshold)}",
        metrics=("mate_recall", "recall@1") if report.threshold is not None else ("recall@10", "recall@1"),
        target=(report.target_metric, report.target_recall),
        highlight=report.recommended,
    )
    files = {k: str(v) for k, v in paths.items()}
    report.files = files
    paths["json"].write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
    return files


def _fmt_threshold(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}"


def _group_of(p: dict[str, Any]) -> str | None:
    if p.get("group") is not None:
        return str(p["group"])
    if p.get("rerank") is None:
        return None
    return f"rerank {p['candidates']}" if p["rerank"] else "no rerank"


def _ms(value: float, _pos: Any = None) -> str:
    """Tick labels on the log latency axis as plain numbers: 0.01, 0.1, 1, 10 (ms)."""
    return f"{value:g}"


def plot_curves(
    series: dict[str, list[dict[str, Any]]],
    path: Path,
    title: str,
    metrics: Sequence[str] = ("mate_recall", "recall@1"),
    target: tuple[str, float] | None = None,
    highlight: dict[str, Any] | None = None,
    highlight_label: str = "recommended",
) -> list[tuple[str, str]]:
    """One panel: recall against single-query p50 latency (log x, plain-number ticks), one colour per
    line (a method at one re-rank depth or efConstruction, along its nprobe/efSearch sweep), mate
    recall solid and recall@1 dashed; a single-point method (exact search) is a labelled star; the
    highlighted point (the recommendation) is ringed and labelled. Recall axis within [0, 1]. A line
    of one point is drawn (and shown in the legend) as a point, never as a line that is not there.
    Agg backend: no display needed. Returns the legend's entries, (label, "line" or "point")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    metrics = [m for m in metrics if any(p.get(m) is not None for pts in series.values() for p in pts)]
    styles = {"mate_recall": ("-", "o"), "recall@1": ("--", "s"), "recall@10": (":", "^")}
    names = {"mate_recall": "mate recall", "recall@1": "recall@1", "recall@10": "recall@10"}
    fig, ax = plt.subplots(figsize=(11, 5.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lows: list[float] = []
    xs_all: list[float] = []
    line_handles = []
    ci = 0
    exact_seen = 0
    any_line = False  # a metric is drawn as a line somewhere (else its legend entry is a point too)
    for name, pts in series.items():
        groups: dict[str | None, list[dict[str, Any]]] = {}
        for p in pts:
            groups.setdefault(_group_of(p), []).append(p)
        for key, g in groups.items():
            # along the sweep (nprobe / efSearch), not by latency: timing noise must not zig-zag the line
            g = sorted(g, key=lambda p: (p.get("order") or p.get("nprobe") or 0, p["p50_ms"]))
            label = name if key is None else f"{name}, {key}"
            xs = [p["p50_ms"] for p in g]
            xs_all += xs
            if len(g) == 1 and bool(g[0].get("exact")):
                p = g[0]
                y = next((p[m] for m in metrics if p.get(m) is not None), 1.0)
                marker = ("*", "D", "P")[exact_seen % 3]  # the exact methods told apart (exact flat, numpy)
                exact_seen += 1
                ax.plot(xs, [y], marker=marker, markersize=18 if marker == "*" else 11, color="black",
                        linestyle="none", zorder=5, clip_on=False)
                lows.append(y)
                line_handles.append(Line2D([], [], color="black", marker=marker, markersize=13 if marker == "*" else 8,
                                           linestyle="none",
                                           label=f"{label}: exact, every recall 1, p50 {p['p50_ms']:.3g} ms"))
                continue
            colour = colours[ci % len(colours)]
            ci += 1
            single = len(g) == 1
            any_line = any_line or not single
            for m in metrics:
                ys = [p.get(m) for p in g]
                if any(y is None for y in ys):
                    continue
                ls, mk = styles.get(m, ("-", "o"))
                ax.plot(xs, ys, linestyle=ls, marker=mk, markersize=8 if single else 4, color=colour, clip_on=False)
                lows += ys
            if single:  # one setting: a point, and the legend shows a point
                line_handles.append(Line2D([], [], color=colour, marker="o", markersize=7, linestyle="none",
                                           label=f"{label} (one setting)"))
            else:
                line_handles.append(Line2D([], [], color=colour, linewidth=2, label=label))
    if highlight is not None:
        m0 = next((m for m in metrics if highlight.get(m) is not None), None)
        if m0 is not None:
            ax.plot([highlight["p50_ms"]], [highlight[m0]], "o", markersize=17, markerfacecolor="none",
                    markeredgecolor="red", markeredgewidth=2, zorder=6, clip_on=False)
            what = highlight.get("label") or f"{highlight.get('method', '')}, {highlight.get('setting', '')}"
            line_handles.append(Line2D([], [], marker="o", markersize=11, markerfacecolor="none", linestyle="none",
                                       markeredgecolor="red", markeredgewidth=2,
                                       label=f"{highlight_label}: {what}\n{names.get(m0, m0)} {highlight[m0]:.3f}, "
                                             f"p50 {highlight['p50_ms']:.3g} ms"))
    if target is not None and target[0] in metrics:
        ax.axhline(target[1], color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"target {names.get(target[0], target[0])} {target[1]}", (0.01, target[1]),
                    xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(0, 3), fontsize=8,
                    color="grey")
    low = min(lows) if lows else 0.0
    ax.set_ylim(max(0.0, math.floor(low * 10) / 10 - 0.02) if low < 0.98 else 0.9, 1.0)
    ax.set_xscale("log")
    if xs_all:
        ax.set_xlim(min(xs_all) / 1.6, max(xs_all) * 1.6)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_ms))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("single-query latency, p50 (ms, log scale)")
    ax.set_ylabel("recall against exact search")
    ax.grid(True, which="major", alpha=0.35)
    metric_handles = [Line2D([], [], color="grey", linestyle=styles.get(m, ("-", "o"))[0] if any_line else "none",
                             marker=styles.get(m, ("-", "o"))[1], label=names.get(m, m)) for m in metrics]
    # legends outside the axes: they never hide a point
    first = ax.legend(handles=line_handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      title="method (one colour per line)", title_fontsize=8)
    ax.add_artist(first)
    second = ax.legend(handles=metric_handles, fontsize=8, loc="lower left", bbox_to_anchor=(1.01, 0.0),
                       title="metric", title_fontsize=8)
    ax.set_title(title, fontsize=10, pad=14)
    fig.tight_layout()
    # the legends outside the axes are part of the picture
    fig.savefig(path, dpi=120, bbox_inches="tight", bbox_extra_artists=[first, second])
    plt.close(fig)
    return [(h.get_label(), "line" if h.get_linestyle() not in ("None", "none", "") else "point")
            for h in [*line_handles, *metric_handles]]
