"""Index build benchmark: synthetic face embeddings -> gallery shards -> `indexer.build_index`, then
recall against exact search, latency and memory.

    python benchmarks/index_build.py --n 1000000 --output bench-1m.json     # the full run (minutes)
    python benchmarks/index_build.py --quick                                 # 100k faces, ~1-2 min

Measured:
- build time (sample+train, add, save), peak RSS during the build (sampled every 20 ms, see
  indexer/memory.py), index bytes per vector (whole file, and without the fixed coarse centroids),
  re-rank file bytes per vector (on disk, memory-mapped);
- on ~1000 held-out queries (new faces of existing identities, see benchmarks/synthetic.py), against
  exact inner-product search over the same vectors: recall@1 (top-1 id equals the exact top-1),
  recall@10 (overlap of the top-10 sets / 10), and mate recall: of the exact top-10 neighbours whose
  similarity clears the threshold (0.5: the synthetic genuine/impostor boundary), the fraction returned
  in the top-10;
- latency of one query at a time on one thread (mean, p50, p99) and batch throughput on all threads;
- the same for the reference IVF4096,PQ64 (8-bit, no re-ranking) at nprobe 32. The reference shares the
  coarse centroids of the main build (same sample and seed: k-means would give the same ones) to save
  minutes, and is built without polysemous training ("PQ64np"), which does not change its ADC scores.

Set OMP_WAIT_POLICY=PASSIVE (done below unless set): on a shared, loaded machine OpenMP's spin-waiting
threads otherwise slow faiss several-fold.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.synthetic import SyntheticFaces, SyntheticSpec, write_synthetic_gallery  # noqa: E402
from gallery.store import Gallery  # noqa: E402
from gallery.store.shards import iter_shard_batches  # noqa: E402
from indexer import build_index, load_index  # noqa: E402
from indexer.galleryio import sample_vectors  # noqa: E402
from indexer.memory import current_rss  # noqa: E402


def recall_metrics(ids: np.ndarray, gt_ids: np.ndarray, gt_scores: np.ndarray, threshold: float) -> dict:
    r1 = float(np.mean(ids[:, 0] == gt_ids[:, 0]))
    k = min(10, ids.shape[1], gt_ids.shape[1])
    r10 = float(np.mean([len(set(gt_ids[q, :k]) & set(ids[q, :k])) / k for q in range(len(ids))]))
    mates = gt_scores[:, :k] >= threshold
    found = sum(int(np.isin(gt_ids[q, :k][mates[q, :k]], ids[q, :k]).sum()) for q in range(len(ids)))
    return {
        "recall@1": round(r1, 4),
        "recall@10": round(r10, 4),
        "mate_recall@10": round(found / max(1, int(mates.sum())), 4),
        "mates": int(mates.sum()),
    }


def latency(search, queries: np.ndarray, n: int = 300) -> dict:
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for q in queries[:20]:  # warm-up (page cache of the re-rank file, code paths)
            search(q[None, :])
        times = []
        for q in queries[:n]:
            t = time.perf_counter()
            search(q[None, :])
            times.append(time.perf_counter() - t)
    finally:
        faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    search(queries)
    batch = time.perf_counter() - t
    ms = np.asarray(times) * 1000
    return {
        "single_query_ms_mean": round(float(ms.mean()), 3),
        "single_query_ms_p50": round(float(np.percentile(ms, 50)), 3),
        "single_query_ms_p99": round(float(np.percentile(ms, 99)), 3),
        "batch_qps": round(len(queries) / batch, 1),
        "threads_batch": threads,
    }


def ensure_gallery(root: Path, spec: SyntheticSpec) -> dict:
    if (root / "gallery.db").is_file():
        g = Gallery.open(root)
        n = g.info().faces
        g.close()
        if n == spec.n:
            return {"generated": False, "faces": n}
        raise SystemExit(f"{root} holds {n:,} faces, not {spec.n:,}: choose another --gallery or delete it")
    t = time.time()
    write_synthetic_gallery(root, spec, chunk=100_000, progress=True).close()
    return {"generated": True, "faces": spec.n, "seconds": round(time.time() - t, 1)}


def exact_and_reference(
    gallery: Gallery, queries: np.ndarray, k: int, reference: faiss.Index | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """One streaming pass: exact top-k by inner product (faiss ResultHeap) and adds to the reference."""
    heap = faiss.ResultHeap(queries.shape[0], k, keep_max=True)
    t_add = 0.0
    for ids, x in iter_shard_batches(gallery.shard_paths(), 65536):
        flat = faiss.IndexFlatIP(x.shape[1])
        flat.add(x)
        d, i = flat.search(queries, k)
        heap.add_result(d, np.where(i >= 0, ids[np.maximum(i, 0)], -1))
        if reference is not None:
            t = time.time()
            reference.add_with_ids(x, ids)
            t_add += time.time() - t
    heap.finalize()
    return heap.D, heap.I, t_add


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery faces (default 1M)")
    parser.add_argument("--quick", action="store_true", help="100k faces, 500 queries")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--gallery", type=Path, help="gallery folder (default /tmp/face-gallery-bench-N)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--factory", default=None, help="override the automatic index choice")
    parser.add_argument("--nprobe-sweep", default="16,32,64,128")
    parser.add_argument("--no-reference", action="store_true", help="skip the IVF-PQ64 reference")
    parser.add_argument("--skip-build", action="store_true", help="reuse the gallery's current index")
    parser.add_argument("--output", type=Path, help="write the results as JSON")
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries = 100_000, 500
    spec = SyntheticSpec(n=args.n, dim=args.dim)
    root = args.gallery or Path(f"/tmp/face-gallery-bench-{args.n}")
    result: dict = {
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "threshold": args.threshold,
        "synthetic": spec.__dict__,
        "cpu_count": os.cpu_count(),
        "omp_threads": faiss.omp_get_max_threads(),
        "load_avg_start": os.getloadavg(),
        "faiss": faiss.__version__,
    }
    print(f"gallery {root}: {args.n:,} x {args.dim}-d synthetic faces", flush=True)
    result["gallery"] = ensure_gallery(root, spec)
    gallery = Gallery.open(root)

    if args.skip_build:
        manifest = json.loads((gallery.index_dir / "manifest.json").read_text())
    else:
        print("building the index ...", flush=True)
        last = [0.0]

        def progress(stage: str, done: int, total: int) -> None:
            if time.time() - last[0] > 30 or stage != "add":
                print(f"  {stage}: {done:,}/{total:,}", flush=True)
                last[0] = time.time()

        manifest = build_index(gallery, factory=args.factory, device="cpu", progress=progress)
    result["load_avg_after_build"] = os.getloadavg()
    ivf_quantizer_bytes = (manifest.get("nlist") or 0) * args.dim * 4
    result["build"] = {
        "factory": manifest["factory"],
        "reason": manifest["reason"],
        "timing_s": manifest["timing_s"],
        "training_sample": manifest["training"]["sample_size"],
        "memory": manifest["memory"],
        "index_bytes": manifest["index_bytes"],
        "index_bytes_per_vector": manifest["index_bytes_per_vector"],
        "index_bytes_per_vector_excl_centroids": round(
            (manifest["index_bytes"] - ivf_quantizer_bytes) / manifest["ntotal"], 2
        ),
        "rerank_bytes_per_vector_on_disk": round((manifest["rerank"].get("bytes") or 0) / manifest["ntotal"], 1),
        "nprobe_default": manifest["nprobe"],
    }

    # load: memory-mapped vs read
    loads = {}
    for mmap in (False, True):
        rss = current_rss()
        t = time.perf_counter()
        index = load_index(gallery, mmap=mmap)
        loads["mmap" if mmap else "read"] = {
            "seconds": round(time.perf_counter() - t, 3),
            "rss_delta_bytes": current_rss() - rss,
            "mode": index.mmap_mode,
        }
        if not mmap:
            index.close()
            del index
    result["load"] = loads

    gen = SyntheticFaces(spec)
    _, queries = gen.queries(args.queries)

    reference = None
    if not args.no_reference and manifest.get("nlist"):
        nlist = int(manifest["nlist"])
        print(f"reference IVF{nlist},PQ{args.dim // 8} (8-bit): training codes on the same sample ...", flush=True)
        coarse = faiss.extract_index_ivf(index.index).quantizer
        centroids = coarse.reconstruct_n(0, nlist)
        quantizer = faiss.IndexFlatIP(args.dim)
        quantizer.add(centroids)
        reference = faiss.IndexIVFPQ(quantizer, args.dim, nlist, args.dim // 8, 8, faiss.METRIC_INNER_PRODUCT)
        reference.own_fields = True
        quantizer.this.disown()
        t = time.time()
        reference.train(sample_vectors(gallery.shard_paths(), args.n, manifest["training"]["sample_size"], args.dim, 0))
        ref_train = time.time() - t
    print("exact search (ground truth) ...", flush=True)
    t = time.time()
    gt_scores, gt_ids, ref_add = exact_and_reference(gallery, queries, 10, reference)
    result["ground_truth_seconds"] = round(time.time() - t - ref_add, 1)
    genuine = gt_scores[:, 0]
    result["query_top1_similarity"] = {
        "p01": round(float(np.percentile(genuine, 1)), 3),
        "p50": round(float(np.percentile(genuine, 50)), 3),
        "p99": round(float(np.percentile(genuine, 99)), 3),
    }

    rows = []
    default_nprobe = manifest["nprobe"]
    for rerank in (True, False):
        s, ids = index.search(queries, 10, rerank=rerank)
        row = {"config": f"{manifest['factory']} nprobe {default_nprobe}" + (" +rerank" if rerank else "")}
        row.update(recall_metrics(ids, gt_ids, gt_scores, args.threshold))
        row.update(latency(lambda q, r=rerank: index.search(q, 10, rerank=r), queries))
        rows.append(row)
    if manifest.get("nlist"):
        for nprobe in [int(p) for p in args.nprobe_sweep.split(",") if p]:
            if nprobe == default_nprobe:
                continue
            s, ids = index.search(queries, 10, nprobe=nprobe)
            row = {"config": f"{manifest['factory']} nprobe {nprobe} +rerank"}
            row.update(recall_metrics(ids, gt_ids, gt_scores, args.threshold))
            row.update(latency(lambda q, p=nprobe: index.search(q, 10, nprobe=p), queries))
            rows.append(row)
    if reference is not None:
        ps = faiss.SearchParametersIVF(nprobe=32)
        d, ids = reference.search(queries, 10, params=ps)
        row = {"config": f"reference IVF{manifest['nlist']},PQ{args.dim // 8} nprobe 32 (no rerank)"}
        row.update(recall_metrics(ids, gt_ids, gt_scores, args.threshold))
        row.update(latency(lambda q: reference.search(q, 10, params=ps), queries))
        row["build_s"] = {"train_codes": round(ref_train, 1), "add": round(ref_add, 1)}
        row["index_bytes_per_vector"] = 64 + 8
        rows.append(row)
    result["search"] = rows
    result["load_avg_end"] = os.getloadavg()
    index.close()
    gallery.close()

    try:
        from rich.console import Console
        from rich.table import Table

        b = result["build"]
        console = Console()
        t1 = Table(title=f"Index build: {args.n:,} x {args.dim}-d ({b['factory']})", title_justify="left")
        for col in (
            "train s",
            "add s",
            "total s",
            "peak RSS",
            "B/vector",
            "B/vector excl. centroids",
            "re-rank B/vector (disk)",
            "load mmap s",
        ):
            t1.add_column(col, justify="right")
        mem = b["memory"]
        t1.add_row(
            str(b["timing_s"]["train"]),
            str(b["timing_s"]["add"]),
            str(b["timing_s"]["total"]),
            f"{mem['peak_rss_bytes'] / 2**30:.2f} GiB (+{mem['peak_rss_delta_bytes'] / 2**30:.2f})",
            str(b["index_bytes_per_vector"]),
            str(b["index_bytes_per_vector_excl_centroids"]),
            str(b["rerank_bytes_per_vector_on_disk"]),
            str(result["load"]["mmap"]["seconds"]),
        )
        console.print(t1)
        t2 = Table(
            title=f"Search ({args.queries} held-out queries, k=10, threshold {args.threshold})", title_justify="left"
        )
        for col in ("config", "R@1", "R@10", "mate R@10", "1-query ms (1 thread)", "p99 ms", "batch QPS"):
            t2.add_column(col, justify="right" if col != "config" else "left")
        for r in rows:
            t2.add_row(
                r["config"],
                f"{r['recall@1']:.4f}",
                f"{r['recall@10']:.4f}",
                f"{r['mate_recall@10']:.4f}",
                f"{r['single_query_ms_mean']:.3f}",
                f"{r['single_query_ms_p99']:.3f}",
                f"{r['batch_qps']:.0f}",
            )
        console.print(t2)
        console.print(f"load average: start {result['load_avg_start']}, end {result['load_avg_end']}")
    except ImportError:
        print(json.dumps(result, indent=2))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
