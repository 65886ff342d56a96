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
  similarity clears the threshold (the generator's genuine/impostor boundary: 0.5 plain, 0.91 for the
  128-d generator fitted to dlib-resnet, see benchmarks/synthetic.py), the fraction returned
  in the top-10;
- latency of one query at a time on one thread (mean, p50, p99) and batch throughput on all threads;
  ground truth, recall and latency are search.bench's own (`gallery bench` measures the same way);
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

from benchmarks.synthetic import SyntheticFaces, ensure_synthetic_gallery, fitted_spec  # noqa: E402
from gallery.progress import Progress  # noqa: E402
from gallery.store import Gallery  # noqa: E402
from indexer import build_index, load_index  # noqa: E402
from indexer.manifest import read_manifest  # noqa: E402
from indexer.memory import current_rss  # noqa: E402
from indexer.vectors import sample_vectors  # noqa: E402
from search.bench import GroundTruth, SearchFn, evaluate, exact_ground_truth  # noqa: E402

K = 10
LATENCY_QUERIES = 300
LATENCY_WARMUP = 20  # page cache of the re-rank file, code paths


def measure(search: SearchFn, queries: np.ndarray, gt: GroundTruth, threshold: float) -> dict:
    """Recall against the exact top-10 and latency, measured as `gallery bench` measures them."""
    return evaluate(search, queries, gt, threshold, None, K, LATENCY_QUERIES, LATENCY_WARMUP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery faces (default 1M)")
    parser.add_argument("--quick", action="store_true", help="100k faces, 500 queries")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--gallery", type=Path, help="gallery folder (default /tmp/face-gallery-bench-N)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="mate threshold (default: the generator's boundary, 0.91 fitted 128-d, 0.5 plain)")
    parser.add_argument("--plain-generator", action="store_true", help="the plain generator even at 128-d")
    parser.add_argument("--factory", default=None, help="override the automatic index choice")
    parser.add_argument("--nprobe-sweep", default="16,32,64,128")
    parser.add_argument("--no-reference", action="store_true", help="skip the IVF-PQ64 reference")
    parser.add_argument("--skip-build", action="store_true", help="reuse the gallery's current index")
    parser.add_argument("--output", type=Path, help="write the results as JSON")
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries = 100_000, 500
    spec = fitted_spec(args.n, args.dim, fitted=not args.plain_generator)  # fitted to dlib-resnet at 128-d
    if args.threshold is None:
        args.threshold = spec.threshold
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
    result["gallery"] = ensure_synthetic_gallery(root, spec, chunk=100_000, progress=True)
    gallery = Gallery.open(root)

    if args.skip_build:
        manifest = read_manifest(gallery.index_dir, gallery.root)
    else:
        print("building the index ...", flush=True)
        last = [0.0]

        def progress(event: Progress) -> None:
            if time.time() - last[0] > 30 or event.stage != "add":
                print(f"  {event.stage}: {event.done:,}/{event.total or 0:,}", flush=True)
                last[0] = time.time()

        manifest = build_index(gallery, factory=args.factory, device="cpu", on_progress=progress)
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
    ref_train = 0.0
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
        # the build's own sample: same rows, same seed (indexer.build draws it the same way)
        total_rows = sum(r.n_faces for r in gallery.shard_rows())
        reference.train(sample_vectors(gallery.iter_embeddings(), total_rows, manifest["training"]["sample_size"],
                                       args.dim, 0))
        ref_train = time.time() - t

    ref_add = [0.0]

    def add_to_reference(ids: np.ndarray, x: np.ndarray) -> None:
        if reference is not None:
            t = time.time()
            reference.add_with_ids(x, ids)
            ref_add[0] += time.time() - t

    print("exact search (ground truth) ..." + (" and filling the reference" if reference is not None else ""),
          flush=True)
    # one streaming pass over the shards: the exact top-10 and the reference's adds
    gt = exact_ground_truth(gallery.shard_paths(), queries, K, deleted=gallery.deleted_ids(),
                            each_batch=add_to_reference)
    result["ground_truth_seconds"] = round(gt.seconds - ref_add[0], 1)
    genuine = gt.scores[:, 0]
    result["query_top1_similarity"] = {
        "p01": round(float(np.percentile(genuine, 1)), 3),
        "p50": round(float(np.percentile(genuine, 50)), 3),
        "p99": round(float(np.percentile(genuine, 99)), 3),
    }

    rows = []
    default_nprobe = manifest["nprobe"]
    for rerank in (True, False):
        row = {"config": f"{manifest['factory']} nprobe {default_nprobe}" + (" +rerank" if rerank else "")}
        row.update(measure(lambda q, k, r=rerank: index.search(q, k, rerank=r), queries, gt, args.threshold))
        rows.append(row)
    if manifest.get("nlist"):
        for nprobe in [int(p) for p in args.nprobe_sweep.split(",") if p]:
            if nprobe == default_nprobe:
                continue
            row = {"config": f"{manifest['factory']} nprobe {nprobe} +rerank"}
            row.update(measure(lambda q, k, p=nprobe: index.search(q, k, nprobe=p), queries, gt, args.threshold))
            rows.append(row)
    if reference is not None:
        ps = faiss.SearchParametersIVF(nprobe=32)
        row = {"config": f"reference IVF{manifest['nlist']},PQ{args.dim // 8} nprobe 32 (no rerank)"}
        row.update(measure(lambda q, k: reference.search(q, k, params=ps), queries, gt, args.threshold))
        row["build_s"] = {"train_codes": round(ref_train, 1), "add": round(ref_add[0], 1)}
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
                "—" if r["mate_recall"] is None else f"{r['mate_recall']:.4f}",
                f"{r['mean_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                f"{r['qps']:.0f}",
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
