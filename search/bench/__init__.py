"""Index benchmarks: recall against exact search vs latency (`gallery bench` and benchmarks/).

    metrics.py  ground truth (streamed exact search), recall metrics, latency: shared by every benchmark
    sweep.py    the gallery side: queries, the nprobe / re-rank sweep, exact baseline, recommendation,
                identification (via search.evaluation), `run_bench` and its `BenchReport`
    report.py   bench.csv / bench.json / bench.png and `plot_curves`

Importing this package imports faiss (the metrics need it); matplotlib loads only to draw a plot.
"""

from search.bench.metrics import (
    METRICS,
    GroundTruth,
    K,
    SearchFn,
    drop_excluded,
    evaluate,
    exact_ground_truth,
    measure_latency,
    recall_metrics,
)
from search.bench.report import plot_curves, write_outputs
from search.bench.sweep import (
    BenchReport,
    apply_setting,
    default_nprobes,
    flat_baseline,
    identification_metrics,
    recommend,
    run_bench,
)

__all__ = [
    "K",
    "METRICS",
    "BenchReport",
    "GroundTruth",
    "SearchFn",
    "apply_setting",
    "default_nprobes",
    "drop_excluded",
    "evaluate",
    "exact_ground_truth",
    "flat_baseline",
    "identification_metrics",
    "measure_latency",
    "plot_curves",
    "recall_metrics",
    "recommend",
    "run_bench",
    "write_outputs",
]
