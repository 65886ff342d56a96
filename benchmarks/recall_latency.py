"""Recall vs latency, side by side in one process on the same vectors and queries:

- the project's default index (`indexer.build_index`'s automatic choice, loaded with `load_index`),
  with exact re-ranking (as built) and without, sweeping nprobe;
- exact faiss flat search (`IndexFlatIP`);
- numpy brute force (matrix product + argpartition; queries batched so that one score block stays
  under 256 MiB);
- HNSW (faiss `IndexHNSWFlat`, M=32, efConstruction 40 by default), sweeping efSearch: the structure
  users pick instead.

Data: face-like synthetic embeddings (benchmarks/synthetic.py, its parameters are in the output),
generated in chunks straight into a gallery folder (Parquet shards + SQLite rows), so the whole path
(shards -> index build -> load -> search) is exercised. Queries are new faces of gallery identities
(never in the gallery). Ground truth: exact inner-product top-10 streamed over the shards.

Metrics per point: recall@1, recall@10, mate recall (of the exact top-10 neighbours whose similarity
clears the threshold, 0.5 = the generator's genuine/impostor boundary, the share returned), single-query
latency p50/p95/p99 (one query per call; faiss on one thread; numpy's BLAS uses its own threads),
batched QPS (all queries in one call, all threads), in-RAM bytes per vector, build time.

    python benchmarks/recall_latency.py --quick --output results/rl-quick        # 100k x 512, ~2 min
    python benchmarks/recall_latency.py --sizes 1000000 --dims 512,128 --output results/rl-1m
    python benchmarks/recall_latency.py --sizes 100000,1000000,10000000 --dims 512 --output results/rl

Galleries are kept under --work (default /tmp/face-gallery-recall) and reused when they already hold
the requested number of faces. Methods that need every vector in RAM (flat, numpy, HNSW) are skipped,
saying so, when the vectors would take more than --max-memory-fraction of the available memory.
`--fit-from-gallery DIR` compares a real labeled gallery's genuine/impostor similarity histograms with
the generator's (PNG + summary), without refitting the generator.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads slow faiss on a shared machine

import argparse  # noqa: E402
import csv  # noqa: E402
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
    THRESHOLD,
    SyntheticFaces,
    SyntheticSpec,
    ensure_synthetic_gallery,
)
from gallery.store import Gallery  # noqa: E402
from indexer import build_index, load_index  # noqa: E402
from indexer.memory import memory_available  # noqa: E402
from search.bench import (  # noqa: E402
    GroundTruth,
    K,
    evaluate,
    exact_ground_truth,
    flat_baseline,
    plot_curves,
)

NUMPY_BLOCK_FLOATS = 1 << 26  # 256 MiB of float32 scores per query block
COLUMNS = ["method", "params", "recall@1", "recall@10", "mate_recall", "p50_ms", "p95_ms", "p99_ms", "qps",
           "bytes_per_vector", "disk_bytes_per_vector", "build_s"]


def spec_for(n: int, dim: int, seed: int = 0) -> SyntheticSpec:
    return SyntheticSpec(n=n, dim=dim, rank=min(SyntheticSpec.rank, max(2, dim // 2)), seed=seed)


def _flat_vectors(flat: Any, n: int, dim: int) -> np.ndarray:
    """The flat index's vectors as an (n, dim) array (a view where faiss allows, else a copy)."""
    try:
        return faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)
    except (AttributeError, TypeError):
        return flat.reconstruct_n(0, n)


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


def hnsw_bytes_per_vector(index: Any, dim: int) -> float:
    h = index.hnsw
    graph = h.neighbors.size() * 4 + h.offsets.size() * 8 + h.levels.size() * 4
    return round((graph + index.ntotal * dim * 4) / max(1, index.ntotal), 1)


def _row(method: str, params: str, point: dict[str, Any], **extra: Any) -> dict[str, Any]:
    row = {"method": method, "params": params}
    row.update({k: point.get(k) for k in ("recall@1", "recall@10", "mate_recall", "mates", "p50_ms", "p95_ms",
                                          "p99_ms", "mean_ms", "qps")})
    row.update(extra)
    return row


def run_size(n: int, dim: int, args: argparse.Namespace, say) -> dict[str, Any]:
    spec = spec_for(n, dim, args.seed)
    root = args.work / f"gal-{n}x{dim}"
    run: dict[str, Any] = {"n": n, "dim": dim, "threshold": args.threshold, "generator": asdict(spec), "notes": []}
    say(f"== {n:,} x {dim}-d: gallery {root}")
    run["gallery"] = ensure_synthetic_gallery(root, spec, chunk=min(100_000, max(1000, spec.n // 4)),
                                              progress=spec.n >= 1_000_000)
    gen = SyntheticFaces(spec)
    _, queries = gen.queries(args.queries, seed=args.seed + 12345)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    with Gallery.open(root) as g:
        paths = g.shard_paths()

    need = n * dim * 4 * (2.2 if not args.no_hnsw else 1.0)
    avail = memory_available()
    in_ram = avail == 0 or need <= args.max_memory_fraction * avail
    if not in_ram:
        run["notes"].append(
            f"flat, numpy and HNSW skipped: their vectors (+ graph) need ~{need / 2**30:.1f} GiB > "
            f"{args.max_memory_fraction:.0%} of the {avail / 2**30:.1f} GiB available"
        )
    say("exact ground truth (streamed over the shards) ...")
    t = time.perf_counter()
    gt: GroundTruth = exact_ground_truth(paths, queries, K, collect=in_ram)
    load_s = time.perf_counter() - t
    run["ground_truth_seconds"] = round(gt.seconds, 1)
    run["mates_per_query"] = round(float((gt.scores >= args.threshold).sum(axis=1).mean()), 3)
    rows: list[dict[str, Any]] = []
    series: dict[str, list[dict[str, Any]]] = {}

    def add(series_name: str, row: dict[str, Any], point: dict[str, Any]) -> None:
        rows.append(row)
        p = dict(point)
        p["exact"] = row.get("exact", False)
        p["group"] = row.get("group")
        p["order"] = row.get("nprobe") or row.get("ef_search")
        p["bytes_per_vector"] = row.get("bytes_per_vector")
        series.setdefault(series_name, []).append(p)
        say(f"  {row['method']:<40} {row['params']:<22} R@1 {point['recall@1']:.4f} R@10 {point['recall@10']:.4f} "
            f"mate {point['mate_recall'] if point['mate_recall'] is not None else float('nan'):.4f} "
            f"p50 {point['p50_ms']:.3f} ms  {point['qps']:.0f} QPS")

    lat = args.latency_queries

    # the project's default index
    say("building the default index (indexer.build_index, automatic choice) ...")
    manifest = build_index(root, device="cpu", seed=args.seed)
    index = load_index(root)
    factory = manifest["factory"]
    bpv = manifest["index_bytes_per_vector"]
    disk = round(((manifest.get("rerank") or {}).get("bytes") or 0) / max(1, manifest["ntotal"]), 1)
    run["default_index"] = {k: manifest.get(k) for k in ("factory", "reason", "nlist", "nprobe", "timing_s",
                                                        "index_bytes_per_vector", "memory")}
    build_s = manifest["timing_s"]["total"]
    nprobes = [p for p in args.nprobe_list if not manifest.get("nlist") or p <= manifest["nlist"]]
    if manifest.get("nprobe") and manifest["nprobe"] not in nprobes:
        nprobes = sorted({*nprobes, int(manifest["nprobe"])})
    sweep = nprobes if manifest.get("nlist") else [None]
    index.search(queries, K)  # warm-up: the first batched call would pay for cold pages (re-rank file)
    for rerank in ([True, False] if index.vectors is not None else [None]):
        name = f"default index {factory}" + ({True: " +rerank", False: " no rerank"}.get(rerank, ""))
        for p in sweep:
            def search(q, k, p=p, rerank=rerank):
                return index.search(q, k, nprobe=p, rerank=rerank)

            point = evaluate(search, queries, gt, args.threshold, None, K, lat)
            params = (f"nprobe {p}" if p is not None else "exhaustive") + (
                f", {index.rerank_candidates} cand." if rerank else "")
            add("default index", _row(name, params, point, nprobe=p, rerank=rerank, bytes_per_vector=bpv,
                                      disk_bytes_per_vector=disk if rerank else 0, build_s=build_s,
                                      group=("+rerank" if rerank else "no rerank") if rerank is not None else None,
                                      exact=manifest.get("kind_of_index") == "flat"), point)
    index.close()

    if in_ram and gt.flat is not None:
        flat, flat_ids = gt.flat, gt.flat_ids
        point = flat_baseline(gt, queries, args.threshold, None, K, lat)
        add("exact flat", _row("exact flat (faiss IndexFlatIP)", "", point, bytes_per_vector=4 * dim,
                               build_s=round(load_s, 1), exact=True), point)

        x = _flat_vectors(flat, flat.ntotal, dim)
        if not args.no_numpy:
            point = evaluate(numpy_search_fn(x, flat_ids), queries, gt, args.threshold, None, K, lat)
            add("numpy", _row("numpy brute force", f"batch {max(1, NUMPY_BLOCK_FLOATS // n)} queries", point,
                              bytes_per_vector=4 * dim, build_s=0.0, exact=True), point)

        if not args.no_hnsw:
            say(f"building HNSW{args.hnsw_m} (efConstruction {args.ef_construction}) ...")
            hnsw = faiss.IndexHNSWFlat(dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = args.ef_construction
            t = time.perf_counter()
            hnsw.add(x)
            hnsw_build = round(time.perf_counter() - t, 1)
            hbpv = hnsw_bytes_per_vector(hnsw, dim)
            for ef in args.ef_list:
                params_h = faiss.SearchParametersHNSW(efSearch=int(ef))

                def hsearch(q, k, params_h=params_h):
                    d, i = hnsw.search(q, k, params=params_h)
                    return d, np.where(i >= 0, flat_ids[np.maximum(i, 0)], -1)

                point = evaluate(hsearch, queries, gt, args.threshold, None, K, lat)
                add("HNSW", _row(f"HNSW{args.hnsw_m} (faiss IndexHNSWFlat)",
                                 f"efSearch {ef} (efC {args.ef_construction})", point, ef_search=int(ef),
                                 bytes_per_vector=hbpv, build_s=hnsw_build), point)
            del hnsw
        del x
    run["rows"] = rows
    run["targets"] = targets(rows)

    out = args.output
    stem = f"recall_latency_{n}x{dim}"
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    plot_curves(series, out / f"{stem}.png",
                title=f"{n:,} x {dim}-d synthetic faces, {args.queries} queries, k={K}, threshold {args.threshold}")
    run["files"] = [str(out / f"{stem}.csv"), str(out / f"{stem}.png")]
    print_table(run)
    return run


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, checked on this run: the cheapest default-index point (+rerank) with
    recall@1 >= 0.99 and mate recall >= 0.95, against exact flat and against HNSW at equal recall@10."""
    default = [r for r in rows if r["method"].startswith("default index") and r.get("rerank") is not False]
    good = [r for r in default if r["recall@1"] >= 0.99 and (r["mate_recall"] or 0) >= 0.95]
    out: dict[str, Any] = {"rule": "default index point: cheapest p50 with recall@1 >= 0.99 and mate recall >= 0.95"}
    if not good:
        out["default_point"] = None
        return out
    d = min(good, key=lambda r: r["p50_ms"])
    out["default_point"] = f"{d['method']} {d['params']}"
    flat = next((r for r in rows if r["method"].startswith("exact flat")), None)
    if flat:
        out["speedup_vs_exact_flat_p50"] = round(flat["p50_ms"] / d["p50_ms"], 1)
        out["memory_ratio_exact_flat_over_default"] = round(flat["bytes_per_vector"] / d["bytes_per_vector"], 1)
    hnsw = [r for r in rows if r["method"].startswith("HNSW") and r["recall@10"] >= d["recall@10"]]
    if hnsw:
        h = min(hnsw, key=lambda r: r["p50_ms"])
        out["hnsw_at_equal_recall@10"] = f"{h['params']} (recall@10 {h['recall@10']})"
        out["latency_ratio_default_over_hnsw"] = round(d["p50_ms"] / h["p50_ms"], 2)
        out["memory_ratio_default_over_hnsw"] = round(d["bytes_per_vector"] / h["bytes_per_vector"], 3)
    elif any(r["method"].startswith("HNSW") for r in rows):
        out["hnsw_at_equal_recall@10"] = "no efSearch in the sweep reached the default index's recall@10"
    return out


def print_table(run: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run['n']:,} x {run['dim']}-d (threshold {run['threshold']}; mates/query "
                        f"{run['mates_per_query']})", title_justify="left")
    for col in ("method", "params", "R@1", "R@10", "mate R", "p50 ms", "p99 ms", "QPS", "B/vec RAM", "build s"):
        table.add_column(col, justify="left" if col in ("method", "params") else "right")
    for r in run["rows"]:
        table.add_row(r["method"], r["params"], f"{r['recall@1']:.4f}", f"{r['recall@10']:.4f}",
                      "—" if r["mate_recall"] is None else f"{r['mate_recall']:.4f}", f"{r['p50_ms']:.3f}",
                      f"{r['p99_ms']:.3f}", f"{r['qps']:.0f}", str(r.get("bytes_per_vector")), str(r.get("build_s")))
    console = Console(width=200)
    console.print(table)
    console.print(f"targets: {json.dumps(run['targets'])}")
    for note in run["notes"]:
        console.print(f"note: {note}")


# --- real vs synthetic similarity distributions -------------------------------------------------


def _pair_scores(x: np.ndarray, labels: np.ndarray, rng: np.random.Generator, max_pairs: int = 200_000):
    """(genuine, impostor) cosine scores: same-label pairs (all, capped), random different-label pairs."""
    order = np.argsort(labels, kind="stable")
    x, labels = x[order], labels[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], labels.size]
    genuine: list[np.ndarray] = []
    total = 0
    for s, e in zip(starts, ends):
        if e - s >= 2:
            sims = x[s:e] @ x[s:e].T
            genuine.append(sims[np.triu_indices(e - s, 1)])
            total += genuine[-1].size
            if total >= max_pairs:
                break
    a = rng.integers(0, labels.size, max_pairs)
    b = rng.integers(0, labels.size, max_pairs)
    keep = labels[a] != labels[b]
    impostor = np.einsum("ij,ij->i", x[a[keep]], x[b[keep]])
    return (np.concatenate(genuine) if genuine else np.empty(0)), impostor


def _summary(v: np.ndarray) -> dict[str, float]:
    if v.size == 0:
        return {"n": 0}
    q = np.percentile(v, [1, 50, 99])
    return {"n": int(v.size), "mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4),
            "p01": round(float(q[0]), 4), "p50": round(float(q[1]), 4), "p99": round(float(q[2]), 4)}


def fit_from_gallery(gallery_dir: Path, out: Path, seed: int = 0, max_faces: int = 50_000) -> dict[str, Any]:
    """Real labeled gallery vs the generator at the gallery's dimension: histograms (PNG) + summaries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Gallery.open(gallery_dir) as gallery:
        labeled = gallery.labeled_faces()
        if not len(labeled):
            raise SystemExit(f"--fit-from-gallery: {gallery_dir} has no labeled faces")
        rng = np.random.default_rng(seed)
        pick = np.arange(len(labeled))
        if len(labeled) > max_faces:
            pick = np.sort(rng.choice(len(labeled), max_faces, replace=False))
        x = gallery.read_embeddings(labeled.face_ids[pick])
    labels = np.asarray([labeled.identities[i] for i in pick])
    real_g, real_i = _pair_scores(x, labels, rng)
    spec = spec_for(max(len(pick), 20_000), x.shape[1], seed)
    gen = SyntheticFaces(spec)
    syn_ids, syn_x = next(gen.gallery_chunks(spec.n))
    syn_g, syn_i = _pair_scores(syn_x, syn_ids, rng)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    bins = np.linspace(-0.4, 1.0, 141)
    for ax, (name, g, i) in zip(axes, (("real: " + gallery_dir.name, real_g, real_i), ("synthetic", syn_g, syn_i))):
        ax.hist(i, bins=bins, density=True, alpha=0.6, label=f"impostor (n={i.size:,})")
        ax.hist(g, bins=bins, density=True, alpha=0.6, label=f"genuine (n={g.size:,})")
        ax.axvline(THRESHOLD, color="grey", linestyle="--", linewidth=1, label=f"synthetic threshold {THRESHOLD}")
        ax.set_title(f"{name} ({x.shape[1]}-d)")
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "fit_from_gallery.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return {
        "gallery": str(gallery_dir),
        "faces": len(pick),
        "identities": int(np.unique(labels).size),
        "real": {"genuine": _summary(real_g), "impostor": _summary(real_i)},
        "synthetic": {"generator": asdict(spec), "genuine": _summary(syn_g), "impostor": _summary(syn_i)},
        "png": str(png),
        "note": "comparison only: the generator is not refitted",
    }


# --- main ---------------------------------------------------------------------------------------


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
    parser.add_argument("--nprobes", default="8,16,32,64,128,256,512", help="nprobe sweep (default index)")
    parser.add_argument("--ef-search", default="16,32,64,128,256,512", help="efSearch sweep (HNSW)")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="mate threshold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-hnsw", action="store_true")
    parser.add_argument("--no-numpy", action="store_true")
    parser.add_argument("--max-memory-fraction", type=float, default=0.5,
                        help="skip in-RAM methods when their vectors need more than this share of free memory")
    parser.add_argument("--fit-from-gallery", type=Path, help="real labeled gallery to compare histograms with")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.dims = "100000", "512"
        args.queries = min(args.queries, 500)
        args.latency_queries = min(args.latency_queries, 100)
        args.nprobes, args.ef_search = "16,32,64,128", "32,64,128"
    args.nprobe_list, args.ef_list = _ints(args.nprobes), _ints(args.ef_search)
    args.output.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        print(msg, flush=True)

    result: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "k": K,
        "threshold": args.threshold,
        "queries": args.queries,
        "latency": "single query: one call per query, faiss on 1 thread (numpy: its BLAS threads); "
        "QPS: all queries in one call, all threads",
        "environment": {"cpu_count": os.cpu_count(), "faiss": faiss.__version__,
                        "faiss_threads": faiss.omp_get_max_threads(), "load_avg_start": os.getloadavg()},
        "runs": [],
    }
    if args.fit_from_gallery:
        result["fit_from_gallery"] = fit_from_gallery(args.fit_from_gallery, args.output, args.seed)
        say(f"real vs synthetic similarities: {json.dumps(result['fit_from_gallery'])}")
    t0 = time.time()
    for n in _ints(args.sizes):
        for dim in _ints(args.dims):
            result["runs"].append(run_size(n, dim, args, say))
            (args.output / "recall_latency.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    result["seconds"] = round(time.time() - t0, 1)
    result["environment"]["load_avg_end"] = os.getloadavg()
    (args.output / "recall_latency.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    say(f"wrote {args.output}/ ({result['seconds']} s)")
    return result


if __name__ == "__main__":
    main()
