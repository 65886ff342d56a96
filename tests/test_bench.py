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
from indexer.choose import default_nprobe
from search.bench import exact_ground_truth, recall_metrics, recommend, run_bench
from search.bench.sweep import _index_pays, explain
from tests.conftest import copy_lfw_people, requires_lfw
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
    assert point["nprobe"] is None and point["exact"] and point["method"] == point["label"] == "exact flat"
    assert point["recall@1"] == point["recall@10"] == point["mate_recall"] == 1.0
    assert report.exact is point  # a flat index's point is the exact point: one row, one name
    assert report.recommended is not None and report.recommended["label"] == "exact flat"
    assert "already exact search" in report.why
    assert report.meets_target and report.threshold == 0.5 and report.target_metric == "mate_recall"
    for name in ("bench.csv", "bench.json", "bench.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert {"points", "recommended", "exact", "identification"} <= set(data)
    csv_lines = (tmp_path / "out" / "bench.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 1  # header, the exact point (the index is exact: not listed twice)
    assert csv_lines[1].startswith("exact flat,exact flat,")
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
    assert report.exact["recall@1"] == 1.0 and report.exact["applicable"] and report.identification is None
    meeting = [p for p in report.points + [report.exact] if p["mate_recall"] >= 0.97]
    # the exact point is a candidate like any other; an index setting must beat it by 1.2x and 0.05 ms
    fastest = min(meeting, key=lambda p: (p["p50_ms"], -p["mate_recall"]))
    if rec is report.exact:
        assert fastest is report.exact or fastest["p50_ms"] > _index_pays(report.exact["p50_ms"])
    else:
        assert rec["p50_ms"] == fastest["p50_ms"] and rec["p50_ms"] <= _index_pays(report.exact["p50_ms"])
    assert all(p["method"] == "IVF64,Flat" and p["label"].startswith("IVF64,Flat, nprobe ") for p in report.points)
    assert report.why


def test_apply_changes_the_default_nprobe(galleries, tmp_path: Path) -> None:
    before = load_index(galleries["ivf"])
    default = default_nprobe(64, SPEC.dim)
    assert before.nprobe == default == 32  # 4 * sqrt(64) lists for vectors of up to 128-d
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
                                 "--latency-queries", "10", "--nprobe", str(default), "--no-identification",
                                 "--no-exact",
                                 "--apply",
                                 "--json", "--output", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["applied"] and data["recommended"]["nprobe"] == default
    for point in data["points"] + [data["recommended"]]:
        assert {"nprobe", "recall@1", "recall@10", "mate_recall", "p50_ms", "p95_ms", "p99_ms", "qps"} <= set(point)
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["bench.csv", "bench.json", "bench.png"]
    with load_index(galleries["ivf"]) as index:
        assert index.nprobe == default


def test_cli_table_and_errors(galleries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["bench", "--gallery", str(galleries["ivf"]), "--queries", "50",
                                 "--latency-queries", "5", "--nprobe", "2,64", "--no-identification"])
    assert result.exit_code == 0, result.output
    assert "recommended" in result.output and "nprobe 64" in result.output and "why:" in result.output
    assert "exact flat" in result.output and "IVF64,Flat" in result.output
    # the plot is written without --output, and its path said (on stdout, after the answer)
    assert sorted(p.name for p in (tmp_path / "bench-ivf").iterdir()) == ["bench.csv", "bench.json", "bench.png"]
    assert "the plot: bench-ivf/bench.png" in result.stdout and "stale" not in result.output
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
    exact = {"label": "exact flat", "mate_recall": 1.0, "p50_ms": 1.5, "exact": True, "applicable": True}
    assert recommend(pts + [exact], "mate_recall", 0.95) == (exact, True)  # cheaper than c: exact wins
    why = explain(exact, pts, exact, "mate_recall", 0.95, True, 1049, index_is_exact=False)
    assert "exact search (1.5 ms" in why and "faster than any index setting" in why and "c, takes 2 ms" in why
    assert "use the flat index until ~1,700 faces" in why  # 1049 * (1.2 * 2.0) / 1.5: where c would win
    near = dict(exact, p50_ms=2.3)  # c is faster, but not 1.2x faster: exact answers win
    assert recommend(pts + [near], "mate_recall", 0.95) == (near, True)
    assert "no index setting is 1.2x faster than exact search" in explain(near, pts, near, "mate_recall", 0.95,
                                                                          True, 1049, index_is_exact=False)
    slow = dict(exact, p50_ms=3.0)
    assert recommend(pts + [slow], "mate_recall", 0.95) == (pts[2], True)
    # microseconds apart (a gallery of a few faces): 1.5x faster, but 0.01 ms is timer noise
    tiny = [{"label": "ivf", "mate_recall": 1.0, "p50_ms": 0.02}, dict(exact, p50_ms=0.03)]
    assert recommend(tiny, "mate_recall", 0.95) == (tiny[1], True)
    assert "no index setting is 0.05 ms a query faster" in explain(tiny[1], tiny, tiny[1], "mate_recall", 0.95,
                                                                   True, 9, index_is_exact=False)
    close = [{"label": "ivf", "mate_recall": 1.0, "p50_ms": 0.025}, dict(exact, p50_ms=0.028)]  # neither
    assert "is 1.2x or 0.05 ms a query faster" in explain(close[1], close, close[1], "mate_recall", 0.95, True, 9,
                                                          index_is_exact=False)


def test_recall_latency_suite_smoke(tmp_path: Path) -> None:
    from benchmarks import recall_latency

    result = recall_latency.main(["--sizes", "4000", "--dims", "32", "--queries", "100", "--latency-queries", "10",
                                  "--output", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                                  "--nprobes", "1,4,16", "--ef-search", "16,64"])
    methods = {row["method"] for row in result["runs"][0]["rows"]}
    assert {"exact flat", "numpy brute force", "HNSW32"} <= methods
    assert any(m.endswith("(default)") for m in methods)
    exact = [r for r in result["runs"][0]["rows"] if r["method"].startswith(("exact", "numpy"))]
    assert all(r["recall@10"] == 1.0 for r in exact)
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"recall_latency.json", "recall_latency_4000x32.csv", "recall_latency_4000x32.png"} <= files


def test_replot_remarks_the_current_default_only_when_the_sweep_holds_it() -> None:
    """--replot/--growth move the default mark of a saved run to today's rule (a search-time setting
    measured on the same index) and keep the old mark, with a note, when the sweep lacks it."""
    from benchmarks.recall_latency import remark_default
    from indexer.choose import choose_index

    choice = choose_index(1_000_000, 128)
    method = f"{choice.factory} (default)"

    def row(nprobe: int, depth: int, is_default: bool) -> dict:
        return {"method": method, "setting": f"nprobe {nprobe}, rerank {depth}", "nprobe": nprobe,
                "candidates": depth, "is_default": is_default, "recall@1": 0.99, "mate_recall": 0.9,
                "p50_ms": nprobe / 100, "p99_ms": nprobe / 50, "qps": 100.0, "bytes_per_vector": 79.0}

    def run(rows: list[dict]) -> dict:
        return {"n": 1_000_000, "dim": 128, "rows": rows, "notes": [],
                "default_index": {"factory": choice.factory, "nprobe": 64, "rerank_candidates": 100,
                                  "timing_s": {"total": 93.0}, "memory": {"peak_rss_bytes": 2**29},
                                  "index_bytes_per_vector": 79.0, "disk_bytes_per_vector": 591.0}}

    swept = run([row(64, 100, True), row(choice.nprobe, choice.rerank_candidates, False)])
    assert remark_default(swept)
    assert [r["is_default"] for r in swept["rows"]] == [False, True]
    assert swept["default_index"]["nprobe"] == choice.nprobe
    assert swept["targets"]["default_setting"].endswith(f"nprobe {choice.nprobe}, rerank {choice.rerank_candidates}")

    narrow = run([row(64, 100, True), row(128, 100, False)])
    assert not remark_default(narrow)
    assert [r["is_default"] for r in narrow["rows"]] == [True, False]
    assert narrow["default_index"]["nprobe"] == 64 and "not in this sweep" in narrow["notes"][0]
    narrow["rows"].append(row(choice.nprobe, choice.rerank_candidates, False))  # a later sweep holds it
    assert remark_default(narrow) and not any("not in this sweep" in n for n in narrow["notes"])


def test_fitted_generator_reproduces_the_real_histograms_it_was_fitted_to() -> None:
    """benchmarks/synthetic_fit.json (dlib-resnet on LFW A-J: genuine p50 0.955, impostor p50 0.837)."""
    from benchmarks.recall_latency import _simulate
    from benchmarks.synthetic import fitted_spec

    spec = fitted_spec(12_000, 128)  # 1,500 identities
    assert spec.fitted and spec.threshold == 0.91 and spec.stamp()["preprocessing"].endswith(
        f"-m{spec.mean_norm}-c{spec.centroid_scale}")
    genuine, impostor = _simulate(spec, faces=6000, identities=1500)
    assert abs(np.median(genuine) - 0.955) < 0.01 and abs(np.median(impostor) - 0.837) < 0.01
    assert (genuine >= spec.threshold).mean() > 0.95 and (impostor < spec.threshold).mean() > 0.98
    plain = fitted_spec(10_000, 128, fitted=False)
    assert not plain.fitted and plain.threshold == 0.5 and plain.stamp() == SyntheticSpec(
        n=10_000, dim=128, rank=64).stamp()


@requires_lfw
def test_small_real_gallery_recommends_exact_search_and_apply_switches_back(tmp_path: Path) -> None:
    """The issue's case: a small real gallery with an IVF index. Exact search is faster than any
    index setting, so it is the recommendation, and --apply rebuilds the index as exact search."""
    copy_lfw_people(tmp_path / "photos", {"Abdullah_Gul": 3, "Alejandro_Toledo": 3, "Ari_Fleischer": 3})
    gallery = tmp_path / "g"
    ingest = runner.invoke(app, ["ingest", str(tmp_path / "photos"), "--gallery", str(gallery), "--workers", "0",
                                 "--labels", "folder", "--device", "cpu", "--json"])
    assert ingest.exit_code == 0, ingest.output
    built = runner.invoke(app, ["index", "build", "--gallery", str(gallery), "--factory", "IVF4,Flat", "--json"])
    assert built.exit_code == 0, built.output
    args = ["bench", "--gallery", str(gallery), "--latency-queries", "20", "--no-identification", "--json"]
    result = runner.invoke(app, args + ["--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["index"]["factory"] == "IVF4,Flat" and data["exact"]["method"] == "exact flat"
    rec = data["recommended"]
    assert rec["exact"] and rec["label"] == "exact flat" and rec["recall@1"] == 1.0
    # no index setting beats it by the margin the rule asks (1.2x and 0.05 ms): at 9 faces they are microseconds
    assert min(p["p50_ms"] for p in data["points"]) > _index_pays(rec["p50_ms"])
    assert data["why"].startswith(("exact search (", "no index setting is "))
    csv_text = (tmp_path / "out" / "bench.csv").read_text()
    assert csv_text.count("exact flat") == 2 and "IVF4,Flat, nprobe 1" in csv_text  # label + method columns
    assert (tmp_path / "out" / "bench.png").stat().st_size > 10_000

    applied = runner.invoke(app, args + ["--apply"])
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["applied"]
    with load_index(gallery) as index:
        assert index.manifest["factory"] == "IDMap2,Flat" and index.manifest.get("nlist") is None
    again = json.loads(runner.invoke(app, args).stdout)
    assert len(again["points"]) == 1 and again["recommended"]["label"] == "exact flat"
    assert "already exact search" in again["why"]


def test_cli_says_first_that_the_index_is_stale(galleries, tmp_path: Path) -> None:
    from gallery.store import Gallery, append_embedded_faces

    shutil.copytree(galleries["flat"], tmp_path / "g")
    with Gallery.open(tmp_path / "g") as g:
        append_embedded_faces(g, SPEC.stamp(), unit_vectors(7, SPEC.dim, seed=9))
    result = runner.invoke(app, ["bench", "--gallery", str(tmp_path / "g"), "--queries", "30",
                                 "--latency-queries", "3", "--no-identification", "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    first = result.output.strip().splitlines()[0]
    assert "the index is stale: 7 live faces are newer than the index" in first
    assert result.output.count("the index is stale") == 1  # said first, not again with the notes
    data = json.loads(runner.invoke(app, ["bench", "--gallery", str(tmp_path / "g"), "--queries", "30",
                                          "--latency-queries", "3", "--no-identification", "--json"]).stdout)
    assert any(n.startswith("the index is stale: 7") for n in data["notes"]) and data["files"] == {}


def test_plot_legend_never_lists_a_line_that_is_not_drawn(tmp_path: Path) -> None:
    from search.bench import plot_curves

    point = {"method": "IVF4,Flat", "rerank": False, "nprobe": 4, "p50_ms": 0.2, "mate_recall": 0.9,
             "recall@1": 0.95}
    entries = plot_curves({"IVF4,Flat": [point]}, tmp_path / "one.png", title="one point")
    assert entries and all(kind == "point" for _, kind in entries), entries
    assert any("one setting" in label for label, _ in entries)
    two = [point, {**point, "nprobe": 8, "p50_ms": 0.4, "mate_recall": 0.97, "recall@1": 0.99}]
    entries = plot_curves({"IVF4,Flat": two}, tmp_path / "two.png", title="two points")
    assert ("IVF4,Flat, no rerank", "line") in entries and ("mate recall", "line") in entries
    assert (tmp_path / "one.png").stat().st_size > 10_000
