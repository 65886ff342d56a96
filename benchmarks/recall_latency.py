"""Recall vs latency, side by side in one process on the same vectors and queries:

- the project's default index (`indexer.build_index`'s automatic choice, loaded with `load_index`),
  built first (its peak RSS is its own), sweeping nprobe x re-rank depth (and re-ranking off);
- exact flat search (`faiss.knn`, IndexFlatIP's own search, over the vectors collected into one
  preallocated array while the ground truth streams: never two copies);
- numpy brute force (matrix product + argpartition; queries batched so that one score block stays
  under 256 MiB);
- HNSW (faiss `IndexHNSWFlat`, M=32, efConstruction 40 by default), sweeping efSearch: the structure
  users pick instead; skipped, saying why, when it would take the process over --max-rss-gb.

Data: face-like synthetic embeddings (benchmarks/synthetic.py, its parameters are in the output); at
128-d by default the generator fitted to dlib-resnet's real similarity histograms (threshold 0.91),
else the plain one (threshold 0.5). Generated in chunks straight into a gallery folder (Parquet shards
+ SQLite rows), so the whole path (shards -> index build -> load -> search) is exercised. Queries are
new faces of gallery identities (never in the gallery). Ground truth: exact inner-product top-10
streamed over the shards (its time is reported as "exact search streamed").

Metrics per point: recall@1, recall@10, mate recall (of the exact top-10 neighbours whose similarity
clears the threshold, the share returned), single-query latency p50/p95/p99 (one query per call; faiss
on one thread; numpy's BLAS uses its own threads), batched QPS (all queries in one call, all threads),
bytes per vector in RAM and on disk, build time and peak RSS; the issue's targets checked per run.

    python benchmarks/recall_latency.py --quick --output results/rl-quick        # 100k x 512
    python benchmarks/recall_latency.py --sizes 1000000 --dims 128,512 --output results/rl-1m
    python benchmarks/recall_latency.py --sizes 1000000 --dims 128 --also-factory IVF4096,PQ32 ...
    python benchmarks/recall_latency.py --sizes 10000000 --dims 128 --queries 500 --latency-queries 100 \
        --nprobes 64,128,256,512,1024 --rerank-depths 100,400 --exact-queries 50 \
        --exact-latency-queries 10 --no-numpy --ef-search 16,32,64,128 --max-rss-gb 18 --output results/rl-10m
    python benchmarks/recall_latency.py --replot --output results/rl-10m   # redraw; re-mark the default
    python benchmarks/recall_latency.py --growth results/rl-*/recall_latency.json --output results/
    python benchmarks/recall_latency.py --fit-from-gallery GALLERY --sizes "" [--save-fit]

Galleries are kept under --work (default /tmp/face-gallery-recall) and reused when they already hold
the requested faces; --reuse-index also keeps a complete index of today's automatic choice (its build
figures then come from its manifest). --also-factory FACTORY builds another index through the same
build_index and sweeps it the same way (e.g. 32-byte codes against the default's 64).
`--fit-from-gallery DIR` fits the generator to a real labeled gallery's genuine and
impostor histograms (scipy Nelder-Mead on their percentiles) and draws both (PNG, and in the JSON);
`--save-fit` stores the parameters in benchmarks/synthetic_fit.json, which `fitted_spec` reads.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads slow faiss on a shared machine

import argparse  # noqa: E402
import csv  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.synthetic import (  # noqa: E402
    FIT_FILE,
    SyntheticFaces,
    SyntheticSpec,
    ensure_synthetic_gallery,
    fitted_spec,
)
from gallery.fsutil import atomic_write  # noqa: E402
from gallery.store import Gallery  # noqa: E402
from indexer import build_index, choose_index, index_info, load_index  # noqa: E402
from indexer.memory import current_rss, maxrss  # noqa: E402
from search.bench import (  # noqa: E402
    GroundTruth,
    K,
    evaluate,
    exact_ground_truth,
    plot_curves,
)

NUMPY_BLOCK_FLOATS = 1 << 26  # 256 MiB of float32 scores per query block
COLUMNS = ["method", "setting", "recall@1", "recall@10", "mate_recall", "p50_ms", "p95_ms", "p99_ms", "qps",
           "bytes_per_vector", "disk_bytes_per_vector", "build_s"]


def spec_for(n: int, dim: int, seed: int = 0, fitted: bool = True) -> SyntheticSpec:
    """The generator: fitted to a real model's histograms where a fit exists for `dim` (128), else plain."""
    return fitted_spec(n, dim, seed, fitted=fitted)


def hnsw_bytes_per_vector(index: Any, dim: int) -> float:
    h = index.hnsw
    graph = h.neighbors.size() * 4 + h.offsets.size() * 8 + h.levels.size() * 4
    return round((graph + index.ntotal * dim * 4) / max(1, index.ntotal), 1)


def numpy_search_fn(x: np.ndarray, ids: np.ndarray):
    block = max(1, NUMPY_BLOCK_FLOATS // max(1, x.shape[0]))

    def search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        out_d = np.empty((q.shape[0], k), np.float32)
        out_i = np.empty((q.shape[0], k), np.int64)
        for s in range(0, q.shape[0], block):
            scores = q[s : s + block] @ x.T  # (b, n)
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(scores, part, axis=1)
            order = np.argsort(-top, axis=1)
            out_d[s : s + block] = np.take_along_axis(top, order, axis=1)
            out_i[s : s + block] = ids[np.take_along_axis(part, order, axis=1)]
        return out_d, out_i

    return search


class _Collector:
    """Every streamed (ids, vectors) batch copied into one preallocated array: the exact baseline's
    vectors without a second copy (a growing faiss IndexFlat would reallocate, briefly holding 2x)."""

    def __init__(self, n: int, dim: int) -> None:
        self.x = np.empty((n, dim), np.float32)
        self.ids = np.empty(n, np.int64)
        self.n = 0

    def __call__(self, ids: np.ndarray, x: np.ndarray) -> None:
        m = ids.shape[0]
        self.x[self.n : self.n + m] = x
        self.ids[self.n : self.n + m] = ids
        self.n += m


def _row(method: str, setting: str, point: dict[str, Any], **extra: Any) -> dict[str, Any]:
    row = {"method": method, "setting": setting}
    row.update({k: point.get(k) for k in ("recall@1", "recall@10", "mate_recall", "mates", "p50_ms", "p95_ms",
                                          "p99_ms", "mean_ms", "qps")})
    row.update(extra)
    return row


def _gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB"


def run_size(n: int, dim: int, args: argparse.Namespace, say) -> dict[str, Any]:
    spec = spec_for(n, dim, args.seed, fitted=not args.plain_generator)
    threshold = args.threshold if args.threshold is not None else spec.threshold
    root = args.work / f"gal-{n}x{dim}"
    run: dict[str, Any] = {"n": n, "dim": dim, "threshold": threshold, "generator": asdict(spec),
                           "generator_kind": "fitted to dlib-resnet on LFW A-J" if spec.fitted else "plain (no fit "
                           f"for {dim}-d)", "notes": [], "rss": {}}
    say(f"== {n:,} x {dim}-d ({run['generator_kind']}): gallery {root}")
    # big galleries in 1M-face commits: each commit rewrites the touched pages of SQLite's random-key
    # indexes, so 100k-face commits make a 10M gallery several times slower to write
    chunk = 1_000_000 if spec.n >= 5_000_000 else min(100_000, max(1000, spec.n // 4))
    run["gallery"] = ensure_synthetic_gallery(root, spec, chunk=chunk, progress=spec.n >= 1_000_000)
    gen = SyntheticFaces(spec)
    _, queries = gen.queries(args.queries, seed=args.seed + 12345)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    with Gallery.open(root) as g:
        paths = g.shard_paths()
    run["rss"]["start"] = current_rss()

    # 1. the default index, built first: its peak RSS is the build's alone
    manifest = _reusable_index(root, n, dim) if args.reuse_index else None
    if manifest is not None:
        say(f"reusing the gallery's {manifest['factory']} index (--reuse-index): build figures from its manifest")
        run["notes"].append("default index reused (--reuse-index): its build time and peak RSS are those its "
                            "manifest recorded when it was built")
    else:
        say("building the default index (indexer.build_index, automatic choice) ...")
        manifest = build_index(root, device="cpu", seed=args.seed)
    factory = str(manifest["factory"])
    default_name = f"{factory} (default)"
    rerank_bytes = (manifest.get("rerank") or {}).get("bytes") or 0
    ntotal = max(1, int(manifest["ntotal"]))
    disk_bpv = round((int(manifest["index_bytes"]) + rerank_bytes) / ntotal, 1)
    build_s = manifest["timing_s"]["total"]
    run["default_index"] = {k: manifest.get(k) for k in ("factory", "reason", "nlist", "nprobe", "timing_s",
                                                        "index_bytes_per_vector", "memory", "training")}
    run["default_index"]["disk_bytes_per_vector"] = disk_bpv
    run["default_index"]["rerank_candidates"] = (manifest.get("rerank") or {}).get("candidates")
    say(f"  built {factory} in {build_s:.0f} s, peak RSS {_gib(manifest['memory']['peak_rss_bytes'])}")

    # 2. exact ground truth, streamed over the shards; the exact baseline's vectors collected on the way
    vec_bytes = n * dim * 4
    hold = not args.no_exact and vec_bytes + current_rss() <= args.max_rss_gb * 2**30 * 0.9
    if not args.no_exact and not hold:
        run["notes"].append(f"exact flat in RAM skipped: {_gib(vec_bytes)} of vectors do not fit under "
                            f"--max-rss-gb {args.max_rss_gb}")
    collector = _Collector(n, dim) if hold else None
    say("exact ground truth (streamed over the shards) ...")
    gt: GroundTruth = exact_ground_truth(paths, queries, K, each_batch=collector)
    run["exact_streamed"] = {
        "seconds": round(gt.seconds, 1), "queries": len(queries), "qps": round(len(queries) / gt.seconds, 1),
        "what": "exact top-10 of every query in one pass over the Parquet shards (faiss k-NN per batch): "
        "exact search without holding the vectors; the ground truth of every row",
    }
    run["mates_per_query"] = round(float((gt.scores >= threshold).sum(axis=1).mean()), 3)
    run["rss"]["after_ground_truth"] = current_rss()
    rows: list[dict[str, Any]] = []
    lat = args.latency_queries

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        mate = row["mate_recall"] if row["mate_recall"] is not None else float("nan")
        say(f"  {row['method']:<34} {row['setting']:<24} R@1 {row['recall@1']:.4f} R@10 {row['recall@10']:.4f} "
            f"mate {mate:.4f} p50 {row['p50_ms']:.3f} ms p99 {row['p99_ms']:.3f} ms {row['qps']:.0f} QPS")

    # 3. the default index, every nprobe, with and without re-ranking
    run["rss"]["after_load"] = _sweep_index(root, manifest, default_name, queries, gt, threshold, args, add,
                                            is_default_index=True)
    # 3b. other factories (--also-factory), built through the same build_index into the same gallery
    for extra in args.also_factory:
        say(f"building --also-factory {extra} (indexer.build_index) ...")
        m = build_index(root, device="cpu", seed=args.seed, factory=extra)
        run.setdefault("also_factories", []).append(
            {k: m.get(k) for k in ("factory", "nlist", "nprobe", "timing_s", "index_bytes_per_vector", "memory")})
        # this process already holds the exact baseline's vectors: the build's own cost is the delta
        say(f"  built {extra} in {m['timing_s']['total']:.0f} s, peak RSS {_gib(m['memory']['peak_rss_bytes'])} "
            f"(+{_gib(m['memory']['peak_rss_delta_bytes'])} over the process before the build)")
        _sweep_index(root, m, extra, queries, gt, threshold, args, add, is_default_index=False)
    run["rss"]["after_default_sweep"] = current_rss()

    # 4. exact flat (faiss.knn over the collected vectors: IndexFlatIP's own search, without the copy)
    if collector is not None:
        x, ids = collector.x[: collector.n], collector.ids[: collector.n]

        def exact_search(q, k):
            d, i = faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)
            return d, np.where(i >= 0, ids[np.maximum(i, 0)], -1)

        say("exact flat ...")
        point = evaluate(exact_search, queries[: args.exact_queries], _gt_head(gt, args.exact_queries), threshold,
                         None, K, min(lat, args.exact_latency_queries))
        add(_row(EXACT, "in RAM", point, bytes_per_vector=4 * dim, disk_bytes_per_vector=4 * dim, build_s=0.0,
                 exact=True, queries=min(args.queries, args.exact_queries)))
        if not args.no_numpy:
            point = evaluate(numpy_search_fn(x, ids), queries[: args.exact_queries],
                             _gt_head(gt, args.exact_queries), threshold, None, K,
                             min(lat, args.exact_latency_queries))
            add(_row("numpy brute force", f"batch {max(1, NUMPY_BLOCK_FLOATS // n)} queries", point,
                     bytes_per_vector=4 * dim, build_s=0.0, exact=True))

        hnsw_need = n * dim * 4 + n * args.hnsw_m * 2 * 4 * 1.1
        if args.no_hnsw:
            run["notes"].append("HNSW not run (--no-hnsw)")
        elif current_rss() + hnsw_need > args.max_rss_gb * 2**30:
            run["notes"].append(
                f"HNSW{args.hnsw_m} not built: its vectors + graph (~{_gib(hnsw_need)}) on top of this process "
                f"({_gib(current_rss())}, the exact baseline's vectors) exceed --max-rss-gb {args.max_rss_gb}")
        else:
            say(f"building HNSW{args.hnsw_m} (efConstruction {args.ef_construction}) ...")
            hnsw = faiss.IndexHNSWFlat(dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = args.ef_construction
            t = time.perf_counter()
            hnsw.add(x)
            hnsw_build = round(time.perf_counter() - t, 1)
            run["rss"]["after_hnsw_build"] = current_rss()
            hbpv = hnsw_bytes_per_vector(hnsw, dim)
            for ef in args.ef_list:
                params_h = faiss.SearchParametersHNSW(efSearch=int(ef))

                def hsearch(q, k, params_h=params_h):
                    d, i = hnsw.search(q, k, params=params_h)
                    return d, np.where(i >= 0, ids[np.maximum(i, 0)], -1)

                point = evaluate(hsearch, queries, gt, threshold, None, K, lat)
                add(_row(f"HNSW{args.hnsw_m}", f"efSearch {ef}", point, ef_search=int(ef),
                         ef_construction=args.ef_construction, bytes_per_vector=hbpv, disk_bytes_per_vector=hbpv,
                         build_s=hnsw_build, group=f"efConstruction {args.ef_construction}"))
            del hnsw
        del x, ids
    collector = None
    run["rss"]["process_peak"] = maxrss()
    run["rows"] = rows
    run["targets"] = targets(run)
    write_run_files(run, args.output, args.queries)
    print_table(run)
    return run


def _reusable_index(root: Path, n: int, dim: int) -> dict[str, Any] | None:
    """The manifest of the gallery's index when it is a complete build of today's automatic choice
    (same factory, every face), else None: --reuse-index then skips a rebuild that would be identical."""
    try:
        info = index_info(root)
    except Exception:  # no index, or one that cannot be read: build
        return None
    fresh = info.get("kind") == "build" and info.get("up_to_date") and int(info["ntotal"]) == n
    choice = choose_index(n, dim)
    if not fresh or info["factory"] != choice.factory:
        return None
    # the stored search setting is the one of the code that built it: the rows are marked at today's
    rerank = dict(info.get("rerank") or {})
    if rerank.get("enabled"):
        rerank["candidates"] = choice.rerank_candidates
    return {**info, "nprobe": choice.nprobe, "rerank": rerank}


def _sweep_index(root: Path, manifest: dict[str, Any], name: str, queries: np.ndarray, gt: GroundTruth,
                 threshold: float, args: argparse.Namespace, add: Any, is_default_index: bool) -> int:
    """Every nprobe x re-rank depth (and re-ranking off) of the gallery's current index, loaded with
    the product's load_index and searched through LoadedIndex.search (what `gallery search` runs);
    returns the process RSS right after the load."""
    rerank_bytes = (manifest.get("rerank") or {}).get("bytes") or 0
    ntotal = max(1, int(manifest["ntotal"]))
    bpv = manifest["index_bytes_per_vector"]
    disk_bpv = round((int(manifest["index_bytes"]) + rerank_bytes) / ntotal, 1)
    build_s = manifest["timing_s"]["total"]
    index = load_index(root)
    rss_loaded = current_rss()
    nprobes = [p for p in args.nprobe_list if not manifest.get("nlist") or p <= manifest["nlist"]]
    if manifest.get("nprobe") and manifest["nprobe"] not in nprobes:
        nprobes = sorted({*nprobes, int(manifest["nprobe"])})
    sweep = nprobes if manifest.get("nlist") else [None]
    default_depth = int((manifest.get("rerank") or {}).get("candidates") or 0)
    depths: list[int | None] = [None]
    if index.vectors is not None:
        depths = sorted({*args.depth_list, default_depth}) + [0]  # 0 = re-ranking off
    # every timed query runs once untimed first (evaluate's warmup): the re-rank vectors are read
    # through the page cache, and the first pass over a setting's candidates pays for cold pages (at
    # 10M, nprobe 64 + re-rank 400 read 3.6 ms p50 on a cold pass against 2.4 ms at nprobe 128 right
    # after it); the rows are the latency of a serving process whose re-rank file is cached
    try:
        for depth in depths:
            for p in sweep:
                rerank = None if depth is None else depth > 0

                def search(q, k, p=p, rerank=rerank, depth=depth):
                    return index.search(q, k, nprobe=p, rerank=rerank, candidates=depth or None)

                point = evaluate(search, queries, gt, threshold, None, K, args.latency_queries,
                                 warmup=args.latency_queries)
                group = None if depth is None else (f"rerank {depth}" if depth else "no rerank")
                setting = ", ".join(v for v in (f"nprobe {p}" if p is not None else None, group) if v) or "exhaustive"
                add(_row(name, setting, point, nprobe=p, rerank=rerank, candidates=depth or None, group=group,
                         is_default=is_default_index and p == manifest.get("nprobe")
                         and (depth is None or depth == default_depth),
                         bytes_per_vector=bpv,
                         disk_bytes_per_vector=disk_bpv if rerank else manifest["index_bytes_per_vector"],
                         build_s=build_s, exact=manifest.get("kind_of_index") == "flat"))
    finally:
        index.close()
    return rss_loaded


EXACT = "exact flat"


def _gt_head(gt: GroundTruth, m: int) -> GroundTruth:
    """The ground truth of the first m queries (the exact baselines time fewer queries at 10M)."""
    return GroundTruth(scores=gt.scores[:m], ids=gt.ids[:m], n_vectors=gt.n_vectors, seconds=gt.seconds)


def write_run_files(run: dict[str, Any], out: Path, queries: int) -> None:
    stem = f"recall_latency_{run['n']}x{run['dim']}"
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(run["rows"])
    plot_run(run, out / f"{stem}.png", queries)
    run["files"] = [str(out / f"{stem}.csv"), str(out / f"{stem}.png")]


def plot_run(run: dict[str, Any], path: Path, queries: int) -> None:
    series: dict[str, list[dict[str, Any]]] = {}
    for r in run["rows"]:
        p = dict(r)
        p["order"] = r.get("nprobe") or r.get("ef_search")
        series.setdefault(r["method"], []).append(p)
    default = (run.get("targets") or {}).get("default_setting")
    highlight = next((r for r in run["rows"] if default and f"{r['method']} {r['setting']}" == default), None)
    plot_curves(series, path, title=f"{run['n']:,} x {run['dim']}-d synthetic faces ({run['generator_kind']}), "
                f"{queries} queries, k={K}, threshold {run['threshold']}",
                highlight=highlight, highlight_label="default setting")


def _pick(rows: list[dict[str, Any]], r1: float, mate: float) -> dict[str, Any] | None:
    good = [r for r in rows if r["recall@1"] >= r1 and (r["mate_recall"] or 0) >= mate]
    return min(good, key=lambda r: r["p50_ms"]) if good else None


def targets(run: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets on this run, for the index's default setting and for the cheapest setting
    with recall@1 >= 0.99 and mate recall >= 0.99 (re-ranked)."""
    rows = run["rows"]
    default_rows = [r for r in rows if r["method"].endswith("(default)")]
    out: dict[str, Any] = {}
    d = next((r for r in default_rows if r.get("is_default")), None)
    if d:
        out["default_setting"] = f"{d['method']} {d['setting']}"
        out["default_point"] = {k: d[k] for k in ("recall@1", "mate_recall", "p50_ms", "p99_ms", "qps")}
    best = _pick(default_rows, 0.99, 0.99)
    out["cheapest_setting_r1_mate_0.99"] = f"{best['method']} {best['setting']}" if best else None
    flat = next((r for r in rows if r["method"] == EXACT), None)
    if d and flat:
        out["speedup_vs_exact_flat_p50"] = round(flat["p50_ms"] / d["p50_ms"], 1)
        out["memory_exact_flat_over_default"] = round(flat["bytes_per_vector"] / d["bytes_per_vector"], 1)
    hnsw = [r for r in rows if r["method"].startswith("HNSW")]
    if d and hnsw:
        eq = [r for r in hnsw if (r["mate_recall"] or 0) >= (d["mate_recall"] or 0)]
        if eq:
            h = min(eq, key=lambda r: r["p50_ms"])
            out["hnsw_at_equal_mate_recall"] = f"{h['setting']} (mate recall {h['mate_recall']}, p50 {h['p50_ms']} ms)"
            out["latency_default_over_hnsw"] = round(d["p50_ms"] / h["p50_ms"], 2)
            out["memory_default_over_hnsw"] = round(d["bytes_per_vector"] / h["bytes_per_vector"], 3)
        else:
            out["hnsw_at_equal_mate_recall"] = "no efSearch in the sweep reached the default setting's mate recall"
    if d:
        di = run["default_index"]
        out["build_s"] = di["timing_s"]["total"]
        out["build_peak_rss_gib"] = round(di["memory"]["peak_rss_bytes"] / 2**30, 2)
        out["ram_bytes_per_vector"] = di["index_bytes_per_vector"]
        out["disk_bytes_per_vector"] = di["disk_bytes_per_vector"]
    return out


def print_table(run: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run['n']:,} x {run['dim']}-d (threshold {run['threshold']}; mates/query "
                        f"{run['mates_per_query']})", title_justify="left")
    for col in ("method", "setting", "R@1", "R@10", "mate R", "p50 ms", "p99 ms", "QPS", "B/vec RAM", "B/vec disk",
                "build s"):
        table.add_column(col, justify="left" if col in ("method", "setting") else "right")
    for r in run["rows"]:
        table.add_row(r["method"], r["setting"], f"{r['recall@1']:.4f}", f"{r['recall@10']:.4f}",
                      "—" if r["mate_recall"] is None else f"{r['mate_recall']:.4f}", f"{r['p50_ms']:.3f}",
                      f"{r['p99_ms']:.3f}", f"{r['qps']:.0f}", str(r.get("bytes_per_vector")),
                      str(r.get("disk_bytes_per_vector")), str(r.get("build_s")))
    console = Console(width=200)
    console.print(table)
    console.print(f"exact search streamed over the shards: {json.dumps(run['exact_streamed'])}")
    console.print(f"targets: {json.dumps(run['targets'])}")
    console.print(f"RSS: {json.dumps({k: _gib(v) for k, v in run['rss'].items()})}")
    for note in run["notes"]:
        console.print(f"note: {note}")


# --- real vs synthetic similarity distributions: the fit --------------------------------------------

FIT_QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
FIT_RANKS = (8, 12, 16, 24, 32, 48)
HIST_BINS = np.linspace(-0.2, 1.0, 121)


def _pair_scores(x: np.ndarray, labels: np.ndarray, rng: np.random.Generator, per_identity: int = 10,
                 impostors: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) cosine scores: up to `per_identity` same-label pairs from every identity (so
    that a few people with hundreds of photos do not make the genuine histogram), and random
    different-label pairs."""
    order = np.argsort(labels, kind="stable")
    x, labels = x[order], labels[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], labels.size]
    genuine: list[np.ndarray] = []
    for s, e in zip(starts, ends):
        if e - s < 2:
            continue
        iu, ju = np.triu_indices(e - s, 1)
        pick = rng.choice(iu.size, min(per_identity, iu.size), replace=False)
        genuine.append(np.einsum("ij,ij->i", x[s + iu[pick]], x[s + ju[pick]]))
    a = rng.integers(0, labels.size, impostors)
    b = rng.integers(0, labels.size, impostors)
    keep = labels[a] != labels[b]
    impostor = np.einsum("ij,ij->i", x[a[keep]], x[b[keep]])
    return (np.concatenate(genuine) if genuine else np.empty(0)), impostor


def _summary(v: np.ndarray) -> dict[str, float]:
    if v.size == 0:
        return {"n": 0}
    q = np.percentile(v, [1, 50, 99])
    return {"n": int(v.size), "mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4),
            "p01": round(float(q[0]), 4), "p50": round(float(q[1]), 4), "p99": round(float(q[2]), 4)}


def _simulate(spec: SyntheticSpec, faces: int = 12_000, identities: int = 3_000) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor scores of the generator (fixed seeds: the fit's objective is deterministic)."""
    gen = SyntheticFaces(spec)
    labels = np.repeat(np.arange(identities), faces // identities)
    x = gen.faces(labels, np.random.default_rng(5))
    return _pair_scores(x, labels, np.random.default_rng(1), per_identity=6, impostors=60_000)


def _spec_from(theta: np.ndarray, rank: int, dim: int, threshold: float = 0.5) -> SyntheticSpec:
    m, c, lo, hi = (float(v) for v in theta)
    return SyntheticSpec(n=12_000, dim=dim, rank=rank, mean_norm=m, centroid_scale=c, noise_min=lo, noise_max=hi,
                         threshold=threshold, faces_per_identity=4.0)  # 3,000 identities, as _simulate draws


def fit_generator(real_g: np.ndarray, real_i: np.ndarray, dim: int) -> dict[str, Any]:
    """Fit (shared-direction norm, identity spread, noise range) for each rank in FIT_RANKS by
    Nelder-Mead (scipy) on the squared gaps between real and synthetic quantiles of both histograms;
    keep the best rank. The threshold is the best balanced-accuracy cut of the fitted distributions."""
    from scipy.optimize import minimize

    q = np.asarray(FIT_QUANTILES)
    tg, ti = np.percentile(real_g, q), np.percentile(real_i, q)

    def loss(theta: np.ndarray, rank: int) -> float:
        m, c, lo, hi = theta
        if m < 0 or c <= 0 or lo < 0 or hi < lo:
            return 10.0
        g, i = _simulate(_spec_from(theta, rank, dim))
        return float(np.mean((np.percentile(g, q) - tg) ** 2) + np.mean((np.percentile(i, q) - ti) ** 2))

    tried = []
    for rank in FIT_RANKS:
        r = minimize(loss, x0=[0.9, 0.35, 0.02, 0.1], args=(rank,), method="Nelder-Mead",
                     options={"maxiter": 150, "xatol": 1e-3, "fatol": 1e-7})
        tried.append({"rank": rank, "rms_quantile_gap": round(float(np.sqrt(r.fun)), 5),
                      "theta": [round(float(v), 4) for v in r.x]})
    best = min(tried, key=lambda t: t["rms_quantile_gap"])
    g, i = _simulate(_spec_from(np.asarray(best["theta"]), best["rank"], dim))
    cuts = np.linspace(0.0, 1.0, 1001)
    bal = [((g >= t).mean() + (i < t).mean()) / 2 for t in cuts]
    threshold = round(float(cuts[int(np.argmax(bal))]), 2)
    m, c, lo, hi = best["theta"]
    return {"params": {"rank": best["rank"], "mean_norm": m, "centroid_scale": c, "noise_min": lo, "noise_max": hi},
            "threshold": threshold, "rms_quantile_gap": best["rms_quantile_gap"], "tried": tried,
            "objective": f"mean squared gap of the {list(FIT_QUANTILES)} percentiles, genuine + impostor"}


def _hist(v: np.ndarray) -> list[float]:
    h, _ = np.histogram(v, bins=HIST_BINS, density=True)
    return [round(float(x), 4) for x in h]


def fit_from_gallery(gallery_dir: Path, out: Path, seed: int = 0, max_faces: int = 50_000,
                     save: bool = False) -> dict[str, Any]:
    """Fit the generator to a real labeled gallery's genuine/impostor histograms; write both histograms
    (real, fitted, plain generator) as a PNG and in the returned JSON; `save` stores the fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Gallery.open(gallery_dir) as gallery:
        labeled = gallery.labeled_faces()
        if not len(labeled):
            raise SystemExit(f"--fit-from-gallery: {gallery_dir} has no labeled faces; label them first "
                             f"(gallery ingest --labels-from-folders) or pick a labeled gallery")
        model = dict(gallery.model_stamp or {})
        rng = np.random.default_rng(seed)
        pick = np.arange(len(labeled))
        if len(labeled) > max_faces:
            pick = np.sort(rng.choice(len(labeled), max_faces, replace=False))
        x = gallery.read_embeddings(labeled.face_ids[pick])
    labels = np.asarray([labeled.identities[i] for i in pick])
    dim = int(x.shape[1])
    real_g, real_i = _pair_scores(x, labels, rng)
    t = time.time()
    fit = fit_generator(real_g, real_i, dim)
    fit["seconds"] = round(time.time() - t, 1)
    fitted = _spec_from(np.asarray([fit["params"][k] for k in ("mean_norm", "centroid_scale", "noise_min",
                                                               "noise_max")]), fit["params"]["rank"], dim)
    fit_g, fit_i = _simulate(fitted)
    plain = dataclasses.replace(fitted_spec(12_000, dim, seed, fitted=False), faces_per_identity=4.0)
    plain_g, plain_i = _simulate(plain)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    panels = ((f"real: {gallery_dir.name} ({model.get('name', '?')}, {dim}-d)", real_g, real_i),
              (f"fitted generator (rank {fit['params']['rank']})", fit_g, fit_i))
    for ax, (name, g, i) in zip(axes, panels):
        ax.hist(i, bins=HIST_BINS, density=True, alpha=0.55, color="tab:blue", label=f"impostor pairs ({i.size:,})")
        ax.hist(g, bins=HIST_BINS, density=True, alpha=0.55, color="tab:orange", label=f"genuine pairs ({g.size:,})")
        ax.axvline(fit["threshold"], color="grey", linestyle="--", linewidth=1,
                   label=f"fitted threshold {fit['threshold']}")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("cosine similarity")
        ax.set_xlim(0.6, 1.0)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("density")
    # the real histograms as outlines over the fitted ones: the fit at a glance
    axes[1].hist(real_i, bins=HIST_BINS, density=True, histtype="step", color="navy", linewidth=1.2,
                 label="real impostor")
    axes[1].hist(real_g, bins=HIST_BINS, density=True, histtype="step", color="darkred", linewidth=1.2,
                 label="real genuine")
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Genuine vs impostor similarity: real gallery and the generator fitted to it "
                 f"(RMS quantile gap {fit['rms_quantile_gap']:.4f})", fontsize=10)
    fig.tight_layout()
    png = out / "fit_from_gallery.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)

    result = {
        "gallery": str(gallery_dir),
        "model": model,
        "faces": len(pick),
        "identities": int(np.unique(labels).size),
        "fit": fit,
        "summary": {"real": {"genuine": _summary(real_g), "impostor": _summary(real_i)},
                    "fitted": {"genuine": _summary(fit_g), "impostor": _summary(fit_i)},
                    "plain": {"genuine": _summary(plain_g), "impostor": _summary(plain_i)}},
        "histograms": {"bin_edges": [round(float(b), 3) for b in HIST_BINS], "density": True,
                       "real": {"genuine": _hist(real_g), "impostor": _hist(real_i)},
                       "fitted": {"genuine": _hist(fit_g), "impostor": _hist(fit_i)}},
        "png": str(png),
    }
    if save:
        data = json.loads(FIT_FILE.read_text()) if FIT_FILE.is_file() else {"fits": {}}
        data["fits"][str(dim)] = {
            "model": model.get("name"),
            "source": f"{gallery_dir.name}: {len(pick):,} labeled faces, {result['identities']:,} identities",
            "params": fit["params"], "threshold": fit["threshold"], "rms_quantile_gap": fit["rms_quantile_gap"],
        }
        FIT_FILE.write_text(json.dumps(data, indent=2) + "\n")
        result["saved_to"] = str(FIT_FILE)
    return result


# --- growth: 100k -> 1M -> 10M ------------------------------------------------------------------------


NOT_SWEPT = "is not in this sweep"


def remark_default(run: dict[str, Any]) -> bool:
    """Mark the row of the current code's default search setting (nprobe, re-rank depth) in a saved
    run and recompute its targets: those are search-time settings, so a sweep measured before they
    changed already holds the point, on the same index. Only when the saved index is the factory the
    current code would build and the sweep holds that setting (else the old mark stays, with a note);
    returns whether the mark moved."""
    choice = choose_index(int(run["n"]), int(run["dim"]))
    if choice.factory != run["default_index"]["factory"] or not run.get("rows"):
        return False

    def is_current(r: dict[str, Any]) -> bool:
        return (r["method"].endswith("(default)") and r.get("nprobe") == choice.nprobe
                and (r.get("candidates") == choice.rerank_candidates if choice.rerank else True))

    notes = run.setdefault("notes", [])
    notes[:] = [n for n in notes if NOT_SWEPT not in n]  # from an earlier --replot
    if not any(is_current(r) for r in run["rows"]):
        depth = f"re-rank {choice.rerank_candidates}" if choice.rerank else "re-ranking off"
        notes.append(f"today's default setting (nprobe {choice.nprobe}, {depth}) {NOT_SWEPT}: the row marked "
                     "default is the one of the code that ran it")
        return False
    before = next((f"{r['method']} {r['setting']}" for r in run["rows"] if r.get("is_default")), None)
    for r in run["rows"]:
        if r["method"].endswith("(default)"):
            r["is_default"] = is_current(r)
    run["default_index"]["nprobe"] = choice.nprobe
    run["default_index"]["rerank_candidates"] = choice.rerank_candidates if choice.rerank else None
    run["targets"] = targets(run)
    return run["targets"].get("default_setting") != before


def growth(files: list[Path], dim: int, out: Path) -> dict[str, Any]:
    """How build time, memory and latency grow with the gallery: one row per size of `dim`-d runs
    found in the given recall_latency.json files, a table (JSON + Markdown) and a log-log plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for f in files:
        for run in json.loads(Path(f).read_text())["runs"]:
            if run["dim"] == dim:
                remark_default(run)
                runs[run["n"]] = run
    if not runs:
        raise SystemExit(f"--growth: no {dim}-d run in {', '.join(map(str, files))}")
    rows = []
    for n in sorted(runs):
        run = runs[n]
        di, t = run["default_index"], run.get("targets") or {}
        d = t.get("default_point") or {}
        exact = next((r for r in run["rows"] if r["method"] == EXACT), None)
        rows.append({
            "n": n, "factory": di["factory"], "build_s": di["timing_s"]["total"],
            "build_peak_rss_gib": round(di["memory"]["peak_rss_bytes"] / 2**30, 2),
            "ram_bytes_per_vector": di["index_bytes_per_vector"], "disk_bytes_per_vector": di["disk_bytes_per_vector"],
            "default_setting": t.get("default_setting"), "default_p50_ms": d.get("p50_ms"),
            "default_p99_ms": d.get("p99_ms"), "default_recall@1": d.get("recall@1"),
            "default_mate_recall": d.get("mate_recall"),
            "exact_flat_p50_ms": exact["p50_ms"] if exact else None,
            "exact_streamed_s_per_query": round(run["exact_streamed"]["seconds"] / run["exact_streamed"]["queries"], 4),
        })
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ns = [r["n"] for r in rows]
    for key, label, style, dy in (("build_s", "default index build (s)", "o-", 5),
                                  ("build_peak_rss_gib", "build peak RSS (GiB)", "s-", -11),
                                  ("default_p50_ms", "default setting p50 (ms)", "^-", 5),
                                  ("exact_flat_p50_ms", "exact flat p50 (ms)", "*--", 5)):
        pts = [(n, r[key]) for n, r in zip(ns, rows) if r.get(key)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
            for x, y in pts:
                ax.annotate(f"{y:,.0f}" if y >= 100 else f"{y:.3g}", (x, y), textcoords="offset points",
                            xytext=(5, dy), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gallery size (faces, log scale)")
    ax.set_ylabel("value in the unit of each line (log scale)")
    ax.set_title(f"Growth with gallery size, {dim}-d (2 shared CPU cores)", fontsize=10)
    ax.grid(True, which="major", alpha=0.35)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"growth_{dim}.png", dpi=120)
    plt.close(fig)
    head = ["faces", "index", "build s", "build peak RSS GiB", "B/vec RAM", "B/vec disk", "default p50 ms",
            "default p99 ms", "recall@1", "mate recall", "exact flat p50 ms", "exact streamed s/query"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [f"{r['n']:,}", r["factory"], r["build_s"], r["build_peak_rss_gib"], r["ram_bytes_per_vector"],
                r["disk_bytes_per_vector"], r["default_p50_ms"], r["default_p99_ms"], r["default_recall@1"],
                r["default_mate_recall"], r["exact_flat_p50_ms"] or "not run", r["exact_streamed_s_per_query"]]
        lines.append("| " + " | ".join(str(v) for v in vals) + " |")
    table = "\n".join(lines)
    (out / f"growth_{dim}.md").write_text(table + "\n")
    result = {"dim": dim, "rows": rows, "png": str(out / f"growth_{dim}.png"), "markdown": table}
    (out / f"growth_{dim}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    return result


# --- main ---------------------------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a run killed while writing (or --replot over a 1-hour 10M run) keeps the old file."""
    atomic_write(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def _ints(text: str) -> list[int]:
    return [int(float(v)) for v in text.replace("_", "").split(",") if v.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="gallery sizes, comma-separated")
    parser.add_argument("--dims", default="512,128", help="dimensions, comma-separated")
    parser.add_argument("--quick", action="store_true", help="100k x 512 only, short sweeps (CI: ~2 min)")
    parser.add_argument("--output", type=Path, default=Path("results/recall_latency"), help="results folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/face-gallery-recall"), help="gallery folders")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=200, help="queries timed one at a time per point")
    parser.add_argument("--exact-queries", type=int, default=1000,
                        help="queries for the in-RAM exact baselines (fewer at 10M: each scans every vector)")
    parser.add_argument("--exact-latency-queries", type=int, default=200,
                        help="of those, timed one at a time")
    parser.add_argument("--nprobes", default="8,16,32,64,128,256,512", help="nprobe sweep (default index)")
    parser.add_argument("--rerank-depths", default="100,400",
                        help="re-rank depths swept on the default index (its own depth is added; 0 = off always)")
    parser.add_argument("--ef-search", default="16,32,64,128,256,512", help="efSearch sweep (HNSW)")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--threshold", type=float, default=None,
                        help="mate threshold (default: the generator's boundary, 0.91 fitted 128-d, 0.5 plain)")
    parser.add_argument("--plain-generator", action="store_true", help="the plain generator even at 128-d")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-hnsw", action="store_true")
    parser.add_argument("--reuse-index", action="store_true",
                        help="keep the gallery's index when it is a complete build of the automatic choice "
                        "(build figures from its manifest) instead of building it again")
    parser.add_argument("--also-factory", action="append", default=[], metavar="FACTORY",
                        help="also build this faiss factory (build_index --factory) into the same gallery after "
                        "the default's sweep, and sweep it the same way (repeatable; the gallery keeps the last)")
    parser.add_argument("--no-numpy", action="store_true")
    parser.add_argument("--no-exact", action="store_true", help="no in-RAM exact baseline (streamed exact only)")
    parser.add_argument("--max-rss-gb", type=float, default=12.0,
                        help="in-RAM baselines (exact flat, HNSW) only when the process stays under this")
    parser.add_argument("--fit-from-gallery", type=Path,
                        help="real labeled gallery: fit the generator to its genuine/impostor histograms")
    parser.add_argument("--save-fit", action="store_true",
                        help=f"with --fit-from-gallery: store the fitted parameters in {FIT_FILE.name}")
    parser.add_argument("--replot", action="store_true", help="redraw the PNGs from --output's JSON and exit")
    parser.add_argument("--growth", type=Path, nargs="+",
                        help="recall_latency.json files of several sizes: growth table + log-log plot, then exit")
    parser.add_argument("--growth-dim", type=int, default=128)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.dims = "100000", "512"
        args.queries = min(args.queries, 500)
        args.latency_queries = min(args.latency_queries, 100)
        args.nprobes, args.ef_search = "16,32,64,128", "32,64,128"
    args.nprobe_list, args.ef_list = _ints(args.nprobes), _ints(args.ef_search)
    args.depth_list = [d for d in _ints(args.rerank_depths) if d > 0]
    args.output.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        print(msg, flush=True)

    if args.growth:
        return growth(args.growth, args.growth_dim, args.output)
    if args.replot:
        old = json.loads((args.output / "recall_latency.json").read_text())
        for run in old["runs"]:
            if remark_default(run):
                run.setdefault("notes", []).append(
                    "default setting re-marked by --replot with the current code's rule; rows as measured")
            write_run_files(run, args.output, old["queries"])
        _write_json(args.output / "recall_latency.json", old)
        say(f"redrew {len(old['runs'])} run(s) in {args.output} (CSV, PNG, JSON)")
        return old
    result: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "k": K,
        "queries": args.queries,
        "latency": "single query: one call per query, faiss on 1 thread (numpy: its BLAS threads); "
        "QPS: all queries in one call, all threads; other load on the machine: load_avg_start/end",
        "environment": {"cpu_count": os.cpu_count(), "faiss": faiss.__version__,
                        "faiss_threads": faiss.omp_get_max_threads(), "load_avg_start": os.getloadavg()},
        "runs": [],
    }
    if args.fit_from_gallery:
        result["fit_from_gallery"] = fit_from_gallery(args.fit_from_gallery, args.output, args.seed,
                                                      save=args.save_fit)
        say(f"real vs synthetic similarities: {json.dumps(result['fit_from_gallery']['summary'])}")
    t0 = time.time()
    for n in _ints(args.sizes):
        for dim in _ints(args.dims):
            result["runs"].append(run_size(n, dim, args, say))
            _write_json(args.output / "recall_latency.json", result)
    result["seconds"] = round(time.time() - t0, 1)
    result["environment"]["load_avg_end"] = os.getloadavg()
    _write_json(args.output / "recall_latency.json", result)
    say(f"wrote {args.output}/ ({result['seconds']} s)")
    return result


if __name__ == "__main__":
    main()
