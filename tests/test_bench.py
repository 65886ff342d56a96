"""`gallery bench` (search.bench) on small synthetic galleries, and a smoke run of the benchmark suite."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.synthetic import SyntheticSpec, write_synthetic_gallery
from gallery.cli import app
from gallery.faces.models import get_model_spec, registered
from indexer import build_index, load_index
from search.bench import exact_ground_truth, recall_metrics, recommend, run_bench
from tests.helpers.galleries import make_gallery, mark_deleted, unit_vectors

SPEC = SyntheticSpec(n=6000, dim=64, rank=32, seed=0)
runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic_model():
    """Register the synthetic gallery's stamp as a model so that `Searcher` can open the gallery."""
    stamp = SPEC.stamp()
    spec = dataclasses.replace(
        get_model_spec("facenet-untrained"), name=stamp["name"], dim=stamp["dim"], input_size=stamp["input_size"],
        preprocessing=stamp["preprocessing"], default_threshold=0.5, threshold_source="synthetic boundary",
        description="synthetic test embeddings", warning=None,
    )
    with registered(spec):
        yield spec


@pytest.fixture(scope="module")
def galleries(tmp_path_factory: pytest.TempPathFactory, synthetic_model) -> dict[str, Path]:
    """The same labeled synthetic faces twice: with the automatic (flat) index and with IVF64,Flat."""
    root = tmp_path_factory.mktemp("bench")
    write_synthetic_gallery(root / "flat", SPEC, chunk=2500).close()
    shutil.copytree(root / "flat", root / "ivf")
    manifest = build_index(root / "flat", device="cpu")
    assert manifest["kind_of_index"] == "flat"
    build_index(root / "ivf", factory="IVF64,Flat", device="cpu")
    return {"flat": root / "flat", "ivf": root / "ivf"}


def test_flat_index_is_one_exact_point_with_outputs_and_identification(galleries, tmp_path: Path) -> None:
    report = run_bench(galleries["flat"], queries=200, latency_queries=30, identification_probes=300,
                       output=tmp_path / "out")
    assert len(report.points) == 1
    point = report.points[0]
    assert point["nprobe"] is None and point["exact"]
    assert point["recall@1"] == point["recall@10"] == point["mate_recall"] == 1.0
    assert report.exact is not None and report.exact["recall@10"] == 1.0
    assert report.recommended is not None and report.recommended["label"] == point["label"]
    assert report.meets_target and report.threshold == 0.5 and report.target_metric == "mate_recall"
    for name in ("bench.csv", "bench.json", "bench.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert {"points", "recommended", "exact", "identification"} <= set(data)
    csv_lines = (tmp_path / "out" / "bench.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 2  # header, the index point, the exact baseline
    ident = report.identification
    assert ident is not None and not ident.get("skipped"), ident
    assert ident["probes"] == 300 and ident["mated_searches"] > 0
    assert 0.5 < ident["rank1"] <= ident["rank5"] <= 1.0
    assert 0.0 <= ident["fnir_at_fpir"] <= 1.0 and ident["fpir"] <= 0.01 + 1e-9


def test_ivf_recall_grows_with_nprobe_and_recommendation_meets_target(galleries) -> None:
    report = run_bench(galleries["ivf"], queries=200, latency_queries=20, identification=False, target_recall=0.97)
    nprobes = [p["nprobe"] for p in report.points]
    assert nprobes == sorted(nprobes) and nprobes[0] == 1 and len(nprobes) >= 5
    for metric in ("recall@1", "recall@10", "mate_recall"):
        values = [p[metric] for p in report.points]
        assert all(b >= a for a, b in zip(values, values[1:])), (metric, values)
    assert report.points[0]["recall@10"] < 0.9  # nprobe 1 misses neighbours: the sweep means something
    assert report.points[-1]["recall@10"] >= 0.99
    rec = report.recommended
    assert report.meets_target and rec["mate_recall"] >= 0.97
    meeting = [p for p in report.points if p["mate_recall"] >= 0.97]
    assert rec["p50_ms"] == min(p["p50_ms"] for p in meeting)
    assert report.exact["recall@1"] == 1.0 and report.identification is None


def test_apply_changes_the_default_nprobe(galleries, tmp_path: Path) -> None:
    before = load_index(galleries["ivf"])
    assert before.nprobe == 16
    before.close()
    report = run_bench(galleries["ivf"], queries=100, latency_queries=10, nprobes=[4], identification=False,
                       apply=True, exact_baseline=False)
    assert report.applied and report.recommended["nprobe"] == 4
    after = load_index(galleries["ivf"])
    try:
        assert after.nprobe == 4
        assert after.manifest["tuned"]["by"] == "gallery bench"
    finally:
        after.close()
    # back to the default for the other tests, through the CLI this time
    result = runner.invoke(app, ["bench", "--gallery", str(galleries["ivf"]), "--queries", "100",
                                 "--latency-queries", "10", "--nprobe", "16", "--no-identification", "--apply",
                                 "--json", "--output", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["applied"] and data["recommended"]["nprobe"] == 16
    for point in data["points"] + [data["recommended"]]:
        assert {"nprobe", "recall@1", "recall@10", "mate_recall", "p50_ms", "p95_ms", "p99_ms", "qps"} <= set(point)
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["bench.csv", "bench.json", "bench.png"]
    with load_index(galleries["ivf"]) as index:
        assert index.nprobe == 16


def test_cli_table_and_errors(galleries, tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "--gallery", str(galleries["ivf"]), "--queries", "50",
                                 "--latency-queries", "5", "--nprobe", "2,64", "--no-identification"])
    assert result.exit_code == 0, result.output
    assert "recommended" in result.output and "nprobe 64" in result.output
    missing = runner.invoke(app, ["bench", "--gallery", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "No gallery" in missing.output
    bad = runner.invoke(app, ["bench", "--gallery", str(galleries["ivf"]), "--nprobe", "a,b"])
    assert bad.exit_code == 2


def test_ground_truth_streams_skips_deleted_and_excludes_self(tmp_path: Path) -> None:
    x = unit_vectors(3000, 32, seed=1, clusters=20)
    g = make_gallery(tmp_path / "g", x, shard_size=700)
    mark_deleted(g, [5, 6, 7, 1000])
    ids = np.arange(1, 3001)
    q_ids = np.array([5, 10, 2000])
    q = x[q_ids - 1]
    gt = exact_ground_truth(g.shard_paths(), q, k=10, exclude=q_ids, deleted=np.array([5, 6, 7, 1000]),
                            batch_size=256)
    live = ~np.isin(ids, [5, 6, 7, 1000])
    for row, qid in enumerate(q_ids):
        s = x[live] @ q[row]
        cand = ids[live]
        keep = cand != qid
        order = np.argsort(-s[keep])[:10]
        assert list(gt.ids[row]) == list(cand[keep][order])
        np.testing.assert_allclose(gt.scores[row], s[keep][order], rtol=1e-5, atol=1e-6)
    assert gt.n_vectors == 2996
    g.close()


def test_recall_metrics_and_recommend_rules() -> None:
    gt_ids = np.array([[1, 2, 3], [4, 5, 6]])
    gt_scores = np.array([[0.9, 0.6, 0.2], [0.8, 0.3, 0.1]], dtype=np.float32)
    found = np.array([[1, 3, 9], [5, 4, 7]])
    m = recall_metrics(found, gt_ids, gt_scores, threshold=0.5, k=3)
    assert m["recall@1"] == 0.5 and m["recall@3"] == pytest.approx(4 / 6, abs=1e-4)
    assert m["mates"] == 3 and m["mate_recall"] == pytest.approx(2 / 3, abs=1e-4)
    pts = [{"label": "a", "mate_recall": 0.9, "p50_ms": 1.0}, {"label": "b", "mate_recall": 0.96, "p50_ms": 3.0},
           {"label": "c", "mate_recall": 0.99, "p50_ms": 2.0}, {"label": "d", "mate_recall": 1.0, "p50_ms": 9.0,
                                                               "applicable": False}]
    assert recommend(pts, "mate_recall", 0.95) == (pts[2], True)
    assert recommend(pts, "mate_recall", 0.995) == (pts[2], False)  # none applicable meets it: the best one


def test_recall_latency_suite_smoke(tmp_path: Path) -> None:
    from benchmarks import recall_latency

    result = recall_latency.main(["--sizes", "4000", "--dims", "32", "--queries", "100", "--latency-queries", "10",
                                  "--output", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                                  "--nprobes", "1,4,16", "--ef-search", "16,64"])
    methods = {row["method"] for row in result["runs"][0]["rows"]}
    assert {"exact flat (faiss IndexFlatIP)", "numpy brute force", "HNSW32 (faiss IndexHNSWFlat)"} <= methods
    assert any(m.startswith("default index") for m in methods)
    exact = [r for r in result["runs"][0]["rows"] if r["method"].startswith(("exact", "numpy"))]
    assert all(r["recall@10"] == 1.0 for r in exact)
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"recall_latency.json", "recall_latency_4000x32.csv", "recall_latency_4000x32.png"} <= files
