"""`gallery bench`, the gallery side: recall against exact search vs latency on the user's own gallery.

What one run does (`run_bench`):

1. **Queries.** A seeded sample of the gallery's own live faces (held out: each query's own face id is
   excluded from the ground truth *and* from the index's answers, a query finding itself is no recall
   win), or the faces of query photos (`query_photos`, embedded with the gallery's model).
2. **Ground truth.** Exact inner-product top-k streamed over the Parquet shards in batches
   (`metrics.exact_ground_truth`: one shard batch and a running top-k heap per query in memory,
   deleted faces skipped), over the faces the index covers.
3. **Sweep.** Every search setting of the index: nprobe (powers of two up to min(nlist, 2048), plus
   the index's default) for IVF indexes, and the re-ranking depth (candidates re-scored exactly, or
   re-ranking off) where the index keeps re-ranking vectors. At each point: recall@1, recall@10
   (overlap of the top-10 with the exact top-10), mate recall (of the exact top-10 neighbours whose
   similarity clears the gallery's match threshold, the share the index returns in its top-10),
   single-query latency p50/p95/p99 (one query per call, one faiss thread) and batched throughput (all
   queries in one call, all threads). A flat index has one point, and it is exact.
4. **Exact point.** faiss `IndexFlatIP` over the same live vectors when they fit in memory, searched
   through the same `LoadedIndex` wrapper as the index (so it costs what a flat gallery index would);
   for a flat index, the index's own point is the exact point (one row, one name: "exact flat").
5. **Recommendation.** The cheapest point (lowest p50) whose *target metric* reaches the target; the
   exact point is a candidate and wins unless an index setting is EXACT_MARGIN (1.2x) faster and
   EXACT_MIN_GAIN_MS (0.05 ms) quicker per query, and
   `why` says in words which and why (e.g. keep the flat index until ~N faces).
   The default metric is mate recall: the faces above the threshold are the ones that decide an
   answer (who is this, or unknown), so losing one of them changes answers, while losing a far
   neighbour below the threshold changes nothing. Without a threshold (or without any mates among
   the queries' neighbours) it falls back to recall@10. Only points that the index's defaults
   reproduce are recommended (re-ranking as built, depth >= 10*k: `LoadedIndex.search` re-scores
   max(manifest candidates, 10*k)). `apply=True` stores the recommended nprobe and depth in the index
   manifest (`indexer.set_search_defaults`), so that `load_index` (and every search) uses them; when
   exact search is recommended over an IVF/PQ index it rebuilds the index as `IDMap2,Flat`.
6. **Identification** (labeled galleries): leave-one-out through the real search path
   (`search.evaluation.leave_one_out`, as `gallery calibrate` does) at the recommended nprobe: rank-1
   and rank-5 accuracy and FNIR at FPIR 0.1% and 1% with the gallery's decision rule and weight.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from gallery.errors import BenchError, CalibrationError, GalleryError
from gallery.progress import ProgressFn, report
from gallery.store import Gallery
from indexer.choose import GPU_MAX_NPROBE
from indexer.memory import memory_available
from search.bench.metrics import METRICS, GroundTruth, K, evaluate, exact_ground_truth
from search.bench.report import BenchReport, write_outputs
from search.threshold import resolve_one_to_one

if TYPE_CHECKING:
    from indexer import LoadedIndex

DEFAULT_DEPTHS = (0, 100, 200, 400)  # 0 = re-ranking off
EXACT_METHOD = "exact flat"  # the one name of exact search in the table, CSV, JSON and plot
EXACT_FACTORY = "IDMap2,Flat"  # what --apply rebuilds when exact search wins
EXACT_MARGIN = 1.2  # an index setting must be this much faster than exact search to be recommended
# ... and save at least this much per query: on a gallery of a few faces both take microseconds, and
# which one the timer ranks first is noise (a 9-face gallery was recommended IVF in 1 run out of 8)
EXACT_MIN_GAIN_MS = 0.05
MAX_NPROBE = GPU_MAX_NPROBE  # the FAISS GPU cap; beyond it an IVF index scans most of its lists anyway
FLAT_BASELINE_MEMORY_FRACTION = 0.4  # the exact baseline holds every vector: only when it fits easily


# --- queries ---------------------------------------------------------------------------------------


def _photo_queries(gallery: Gallery, photos: Sequence[Path],
                   weights: Path | None = None) -> tuple[np.ndarray, list[str]]:
    """Main-face embeddings of query photos (folders scanned), through the gallery's own pipeline:
    gallery and query vectors must come from the same code."""
    from gallery.faces.models import model_for_gallery
    from gallery.faces.pipeline import FacePipeline
    from gallery.ingest.scan import expand_photo_args

    files = expand_photo_args(list(photos))
    pipeline = FacePipeline(model_for_gallery(gallery.model_stamp), device="auto", weights=weights)
    vectors, used, skipped = [], [], []
    for photo in files:
        found = pipeline.faces_of(photo, largest_only=True)
        if found.ok and found.faces:
            vectors.append(found.faces[0].embedding)
            used.append(str(photo))
        else:
            skipped.append(str(photo))
    if not vectors:
        raise BenchError(f"None of the {len(files)} query photos gave a face to search with.")
    x = np.stack(vectors).astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x, used + [f"skipped: {s}" for s in skipped]


def _held_out_queries(
    gallery: Gallery, face_ids: np.ndarray, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A seeded sample of the gallery's own faces: (vectors, their ids to exclude, description)."""
    rng = np.random.default_rng(seed)
    n_q = int(min(n, face_ids.size))
    exclude = face_ids[np.sort(rng.choice(face_ids.size, size=n_q, replace=False))]
    x = gallery.read_embeddings(exclude)
    return x, exclude, {"source": "gallery faces (seeded sample, own face excluded)", "n": n_q, "seed": seed}


# --- the sweep -------------------------------------------------------------------------------------


def default_nprobes(nlist: int, default: int | None) -> list[int]:
    """Powers of two up to min(nlist, MAX_NPROBE), that bound itself, and the index's default."""
    top = min(nlist, MAX_NPROBE)
    values = [1 << i for i in range(int(math.log2(top)) + 1)]
    if top not in values:
        values.append(top)
    if default and default <= top and default not in values:
        values.append(int(default))
    return sorted(values)


def _setting_of(p: dict[str, Any]) -> str:
    """The search setting in words: "nprobe 16, rerank 100"; "" for a point without settings."""
    parts = []
    if p.get("nprobe") is not None:
        parts.append(f"nprobe {p['nprobe']}")
    if p.get("rerank") is not None:
        parts.append(f"rerank {p['candidates']}" if p["rerank"] else "no rerank")
    return ", ".join(parts)


def _point_label(p: dict[str, Any]) -> str:
    """method + setting: the same string in the table, the CSV, the JSON and the plot."""
    return f"{p['method']}, {p['setting']}" if p.get("setting") else p["method"]


def _settings(
    index: LoadedIndex, nprobes: Sequence[int] | None, rerank_depths: Sequence[int] | None, notes: list[str]
) -> tuple[list[int | None], bool, list[int | None]]:
    """(nprobe values, whether they are the automatic sweep, re-rank depths) this index can take."""
    nlist = index.manifest.get("nlist")
    if nlist:
        sweep_np: list[int | None] = [p for p in (sorted({int(p) for p in nprobes}) if nprobes else
                                                  default_nprobes(int(nlist), index.nprobe)) if p >= 1]
        auto_np = not nprobes
    else:
        sweep_np, auto_np = [None], False
        if nprobes:
            notes.append("--nprobe ignored: the index has no inverted lists (exhaustive search)")
    depths: list[int | None]
    if index.vectors is not None:
        depths = sorted({int(d) for d in (rerank_depths if rerank_depths is not None else DEFAULT_DEPTHS)})
        if rerank_depths is None and index.rerank_candidates not in depths:
            depths = sorted({*depths, index.rerank_candidates})
    else:
        depths = [None]
        if rerank_depths:
            notes.append("re-ranking depths ignored: this index keeps no re-ranking vectors")
    return sweep_np, auto_np, depths


def sweep(
    index: LoadedIndex,
    qx: np.ndarray,
    gt: GroundTruth,
    threshold: float | None,
    exclude: np.ndarray | None,
    k: int,
    latency_queries: int,
    metric: str,
    target_recall: float,
    nprobes: Sequence[int] | None,
    rerank_depths: Sequence[int] | None,
    notes: list[str],
    on_progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """One point per (re-rank depth, nprobe) setting; an automatic nprobe sweep stops once more lists
    buy nothing (the same recall twice, target met)."""
    manifest = index.manifest
    sweep_np, auto_np, depths = _settings(index, nprobes, rerank_depths, notes)
    has_vectors = index.vectors is not None
    min_applicable_depth = 10 * k  # LoadedIndex.search re-scores max(manifest candidates, 10*k) by default
    exact_index = is_exact_index(manifest, has_vectors)
    method = EXACT_METHOD if exact_index else str(manifest["factory"])
    total = len(depths) * len(sweep_np)
    points: list[dict[str, Any]] = []
    index.search(qx, k + 1)  # warm-up: the first batched call would pay for cold pages (re-rank file)
    for depth in depths:
        prev: dict[str, Any] | None = None
        for p in sweep_np:
            rerank = None if depth is None else depth > 0
            cand = depth if depth else None

            def search(q: np.ndarray, kk: int, p=p, rerank=rerank, cand=cand) -> tuple[np.ndarray, np.ndarray]:
                return index.search(q, kk, nprobe=p, rerank=rerank, candidates=cand)

            report(on_progress, "sweep", len(points), total, f"{method}: nprobe {p}, re-rank depth {depth}")
            point: dict[str, Any] = {"method": method, "nprobe": p, "rerank": rerank, "candidates": cand}
            point.update(evaluate(search, qx, gt, threshold, exclude, k, latency_queries))
            point["applicable"] = depth is None or (
                bool(rerank) == has_vectors and (cand or 0) >= min_applicable_depth
            )
            point["exact"] = exact_index
            point["bytes_per_vector"] = manifest.get("index_bytes_per_vector")
            point["setting"] = _setting_of(point)
            point["label"] = _point_label(point)
            points.append(point)
            if (
                auto_np
                and prev is not None
                and all(point[m] == prev[m] for m in METRICS)
                and (point.get(metric) or 0) >= target_recall
            ):
                break
            prev = point
    return points


def is_exact_index(manifest: dict[str, Any], has_vectors: bool) -> bool:
    """An exhaustive float index (IDMap2,Flat): its one point is exact search itself."""
    factory = str(manifest.get("factory", ""))
    return not manifest.get("nlist") and not has_vectors and "Flat" in factory and "PQ" not in factory.upper()


class _LiveOnly:
    """The gallery's deleted-ids check, answered with "none": the baseline's flat index holds live faces
    only (deleted ones were skipped while streaming), but a query pays the same check as in the index."""

    def __init__(self, check: Any) -> None:
        self._check = check  # LoadedIndex.deleted_ids of the benchmarked index

    def get(self) -> np.ndarray:
        self._check()
        return np.empty(0, np.int64)

    def close(self) -> None:
        """Nothing to close: the real check belongs to the benchmarked index."""


def flat_baseline(
    gt: GroundTruth, qx: np.ndarray, threshold: float | None, exclude: np.ndarray | None, k: int,
    latency_queries: int, like: LoadedIndex | None = None,
) -> dict[str, Any] | None:
    """The same metrics for exact search (faiss IndexFlatIP over the live vectors, collected with the
    ground truth). With `like` (the benchmarked index), the search runs through the same `LoadedIndex`
    wrapper, so exact search is timed as the gallery would run it after switching to a flat index."""
    if gt.flat is None or not gt.flat.ntotal:
        return None
    flat, flat_ids = gt.flat, gt.flat_ids
    searcher: Any = flat
    if like is not None:
        from indexer import LoadedIndex

        manifest = dict(like.manifest, factory=EXACT_FACTORY, nlist=None, nprobe=None, rerank={"enabled": False})
        searcher = LoadedIndex(like.root, manifest, flat, None, "memory", _LiveOnly(like.deleted_ids))  # type: ignore[arg-type]

    def exact_search(q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        d, i = searcher.search(q, kk)
        return d, np.where(i >= 0, flat_ids[np.maximum(i, 0)], -1)

    point: dict[str, Any] = {"method": EXACT_METHOD, "nprobe": None, "rerank": None, "candidates": None}
    point.update(evaluate(exact_search, qx, gt, threshold, exclude, k, latency_queries))
    point["bytes_per_vector"] = 4 * flat.d + 8
    point["setting"] = ""
    point["label"] = point["method"]
    point["applicable"] = True  # always a candidate: --apply can switch the gallery back to exact search
    point["exact"] = True
    return point


# --- recommendation ---------------------------------------------------------------------------------


def recommend(
    points: list[dict[str, Any]], metric: str, target: float
) -> tuple[dict[str, Any] | None, bool]:
    """Lowest-p50 point with points[metric] >= target among the applicable ones; else the best one.
    The exact point (if given) meets every target and wins unless an index setting is at least
    EXACT_MARGIN times faster and EXACT_MIN_GAIN_MS quicker per query: exact answers with no index to
    maintain are worth a few per cent, and a few microseconds are timer noise."""
    pool = [p for p in points if p.get("applicable", True) and p.get(metric) is not None]
    if not pool:
        return None, False
    meeting = [p for p in pool if p[metric] >= target]
    if meeting:
        best = min(meeting, key=lambda p: (p["p50_ms"], -p[metric]))
        exact = next((p for p in meeting if p.get("exact")), None)
        if exact is not None and not best.get("exact") and best["p50_ms"] > _index_pays(exact["p50_ms"]):
            return exact, True
        return best, True
    return max(pool, key=lambda p: (p[metric], -p["p50_ms"])), False


def _index_pays(exact_p50_ms: float) -> float:
    """The p50 an index setting must beat to be recommended over exact search taking exact_p50_ms."""
    return min(exact_p50_ms / EXACT_MARGIN, exact_p50_ms - EXACT_MIN_GAIN_MS)


def explain(rec: dict[str, Any] | None, points: list[dict[str, Any]], exact: dict[str, Any] | None, metric: str,
            target: float, meets: bool, n_faces: int, index_is_exact: bool) -> str:
    """Why this point, in plain words (what a user needs in order to act on it)."""
    if rec is None:
        return "no setting could be measured"
    name = {"mate_recall": "mate recall", "recall@10": "recall@10", "recall@1": "recall@1"}.get(metric, metric)
    if rec.get("exact"):
        if index_is_exact:
            from indexer import FLAT_MAX_VECTORS

            return (f"the index is already exact search (flat): {rec['p50_ms']:.3g} ms per query over {n_faces:,} "
                    f"faces, every recall 1; keep it until ~{FLAT_MAX_VECTORS:,} faces, where `gallery index build` "
                    "switches to IVF-PQ by itself")
        meeting = [p for p in points if not p.get("exact") and p.get("applicable", True)
                   and (p.get(metric) or 0) >= target]
        if meeting:
            best = min(meeting, key=lambda p: p["p50_ms"])
            # exact search time grows in proportion to the gallery, an IVF search's far more slowly: the
            # index is recommended once exact search takes both 1.2x and 0.05 ms more than this setting
            pays_ms = max(EXACT_MARGIN * best["p50_ms"], best["p50_ms"] + EXACT_MIN_GAIN_MS)
            pays = max(n_faces, int(n_faces * pays_ms / max(rec["p50_ms"], 1e-9)))
            if best["p50_ms"] >= rec["p50_ms"]:
                return (f"exact search ({rec['p50_ms']:.3g} ms, every recall 1) is faster than any index setting "
                        f"that reaches {name} {target} (the fastest, {best['label']}, takes {best['p50_ms']:.3g} ms) "
                        f"at this size ({n_faces:,} faces): use the flat index until ~{_round_sig(pays):,} faces "
                        "(exact search time grows in proportion to the gallery)")
            short = [f"{EXACT_MARGIN}x" if best["p50_ms"] * EXACT_MARGIN > rec["p50_ms"] else "",
                     f"{EXACT_MIN_GAIN_MS} ms a query" if best["p50_ms"] + EXACT_MIN_GAIN_MS > rec["p50_ms"] else ""]
            return (f"no index setting is {' or '.join(w for w in short if w)} faster than exact search "
                    f"({rec['p50_ms']:.3g} ms, every "
                    f"recall 1): the fastest that reaches {name} {target}, {best['label']}, takes "
                    f"{best['p50_ms']:.3g} ms; exact answers with no index to tune are worth that at "
                    f"{n_faces:,} faces; an index starts to pay from ~{_round_sig(pays):,} faces")
        return (f"exact search ({rec['p50_ms']:.3g} ms) is the only setting that reaches {name} {target}: "
                "switch to the flat index, or rebuild the index with more memory per vector")
    faster = ""
    if exact:
        ratio = exact["p50_ms"] / max(rec["p50_ms"], 1e-9)
        faster = f"; {ratio:.1f}x faster than exact search ({exact['p50_ms']:.3g} ms)"
    if meets:
        return (f"the fastest setting that reaches {name} {target}: {name} {rec.get(metric)}, "
                f"p50 {rec['p50_ms']:.3g} ms{faster}")
    return (f"no setting reaches {name} {target}; this is the best one ({name} {rec.get(metric)}, "
            f"p50 {rec['p50_ms']:.3g} ms){faster}")


def _round_sig(n: int) -> int:
    if n < 100:
        return n
    digits = len(str(n)) - 2
    return int(round(n, -digits))


def apply_setting(gallery: Gallery, index_file: str, point: dict[str, Any]) -> dict[str, Any]:
    """Store the point's nprobe (and re-rank depth) as the index's defaults, only if the manifest still
    names the index that was benchmarked (the indexer owns the manifest rewrite)."""
    from indexer import set_search_defaults

    candidates = point.get("candidates") if point.get("rerank") else None
    return dict(set_search_defaults(
        gallery.index_dir, gallery.root, index_file, point.get("nprobe"), candidates,
        tuned={
            "by": "gallery bench",
            "nprobe": point.get("nprobe"),
            "rerank_candidates": point.get("candidates"),
            "metrics": {m: point.get(m) for m in (*METRICS, "p50_ms", "qps")},
        },
    ))


# --- identification -----------------------------------------------------------------------------


def identification_metrics(
    gallery_dir: Path, nprobe: int | None, probes: int = 1000, seed: int = 0, target_fpir: float = 0.01
) -> dict[str, Any]:
    """Leave-one-out rank-1/rank-5 accuracy and FNIR at FPIR 0.1% and 1% over labeled faces with the
    gallery's decision rule (its weight), through the search path (`search.evaluation.leave_one_out`,
    shared with `gallery calibrate`)."""
    from search.calibrate import fnir_report
    from search.evaluation import fnir_at_fpir, leave_one_out, rule_scores
    from search.searcher import Searcher

    try:
        searcher = Searcher(gallery_dir, nprobe=nprobe)
    except GalleryError as exc:  # an unregistered model (test stamps): the search path cannot open it
        return {"skipped": f"the search path cannot open this gallery: {exc}"}
    t0 = time.perf_counter()
    try:
        loo = leave_one_out(searcher, max_probes=probes, seed=seed)
    except CalibrationError as exc:
        return {"skipped": str(exc)}
    finally:
        searcher.close()
    rule = searcher.rule
    scores = rule_scores(loo, rule)
    thr, fpir, fnir = fnir_at_fpir(scores, target_fpir)
    return {
        "probes": loo.probes,
        "mated_searches": loo.mated,
        "nonmated_searches": loo.probes,
        "identities": loo.identities,
        "nprobe": nprobe,
        "rank1": round(scores.rank(1), 4) if loo.mated else None,
        "rank5": round(scores.rank(5), 4) if loo.mated else None,
        "rule": rule.as_dict(),
        "weight": rule.weight,
        "target_fpir": target_fpir,
        "threshold_at_fpir": round(thr, 6),
        "fpir": round(fpir, 4),
        "fnir_at_fpir": round(fnir, 4) if loo.mated else None,
        "fnir_at": fnir_report(loo, rule) if loo.mated else {},
        "seconds": round(time.perf_counter() - t0, 2),
        "method": "leave-one-out over good-quality labeled faces: Searcher.neighbours (own face excluded) + "
        f"identity templates (own face taken out), {searcher.aggregation} face score, decision rule "
        f"{rule.describe()}; non-mated = the probe's identity held out",
    }


# --- one run ----------------------------------------------------------------------------------------


def _index_description(index: LoadedIndex) -> dict[str, Any]:
    manifest = index.manifest
    has_vectors = index.vectors is not None
    return {
        "factory": str(manifest["factory"]),
        "kind": manifest.get("kind_of_index"),
        "ntotal": index.ntotal,
        "nlist": manifest.get("nlist"),
        "default_nprobe": index.nprobe,
        "rerank": has_vectors,
        "rerank_candidates": index.rerank_candidates if has_vectors else None,
        "index_bytes_per_vector": manifest.get("index_bytes_per_vector"),
        "rerank_bytes_per_vector_on_disk": round(
            ((manifest.get("rerank") or {}).get("bytes") or 0) / max(1, index.ntotal), 1
        ),
    }


def stale_index_note(stale: int, root: Path | str) -> str:
    """What a benchmark of an index that misses the newest faces must say (first, in the CLI)."""
    return (f"the index is stale: {stale:,} live faces are newer than the index and not benchmarked; "
            f"run `gallery index update --gallery {root}` first to include them")


def run_bench(
    gallery_dir: Path | str,
    queries: int = 1000,
    seed: int = 0,
    target_recall: float = 0.95,
    nprobes: Sequence[int] | None = None,
    rerank_depths: Sequence[int] | None = None,
    query_photos: Sequence[Path] | None = None,
    weights: Path | None = None,
    apply: bool = False,
    output: Path | str | None = None,
    target_metric: str = "mate_recall",
    threshold: float | None = None,
    k: int = K,
    latency_queries: int = 200,
    identification: bool = True,
    identification_probes: int = 1000,
    exact_baseline: bool = True,
    on_progress: ProgressFn | None = None,
) -> BenchReport:
    """Benchmark the gallery's index against exact search; see the module docstring."""
    from indexer import load_index

    if target_metric not in METRICS:
        raise BenchError(f"Unknown target metric '{target_metric}': use one of {', '.join(METRICS)}.")
    root = Path(gallery_dir)
    notes: list[str] = []
    gallery = Gallery.open(root)
    try:
        index = load_index(gallery)
        try:
            manifest = index.manifest
            max_id = int(manifest["max_face_id"])
            thr, thr_source = resolve_one_to_one(gallery, threshold)  # a face-to-face cosine: the 1:1 one
            indexed = gallery.live_faces(max_id).face_ids
            stale = gallery.live_face_count(after_face_id=max_id)
            if stale:
                notes.append(stale_index_note(stale, root))
            if indexed.size < 2:
                raise BenchError(f"Gallery '{root}' needs at least 2 indexed faces to benchmark.")

            exclude: np.ndarray | None
            if query_photos:
                report(on_progress, "queries", message="embedding query photos ...")
                qx, used = _photo_queries(gallery, query_photos, weights)
                exclude = None
                qinfo: dict[str, Any] = {"source": "photos", "n": int(qx.shape[0]), "photos": used}
            else:
                report(on_progress, "queries", message=f"reading {min(queries, indexed.size)} held-out query faces ...")
                qx, exclude, qinfo = _held_out_queries(gallery, indexed, queries, seed)

            # ground truth (+ the exact baseline's flat index when it fits)
            need = indexed.size * int(manifest["dim"]) * 4
            avail = memory_available()
            collect = exact_baseline and (avail == 0 or need <= FLAT_BASELINE_MEMORY_FRACTION * avail)
            if exact_baseline and not collect:
                notes.append(
                    f"exact flat baseline skipped: {need / 2**30:.1f} GiB of vectors > "
                    f"{FLAT_BASELINE_MEMORY_FRACTION:.0%} of available memory ({avail / 2**30:.1f} GiB); "
                    "recall is still measured against streamed exact search"
                )
            report(on_progress, "ground truth", 0, int(indexed.size),
                   f"exact ground truth over {indexed.size:,} faces (streamed) ...")
            gt = exact_ground_truth(gallery.shard_paths(), qx, k, exclude, gallery.deleted_ids(max_id), max_id,
                                    collect=collect)
            mates_per_query = (
                float(((gt.scores >= thr) & (gt.ids >= 0)).sum(axis=1).mean()) if thr is not None else 0.0
            )
            metric = target_metric
            if metric == "mate_recall" and (thr is None or mates_per_query == 0):
                metric = "recall@10"
                notes.append(
                    "target metric mate_recall fell back to recall@10: "
                    + ("no match threshold known" if thr is None else "no query has a neighbour above the threshold")
                )

            points = sweep(index, qx, gt, thr, exclude, k, latency_queries, metric, target_recall, nprobes,
                           rerank_depths, notes, on_progress)
            index_is_exact = is_exact_index(manifest, index.vectors is not None)
            exact = None
            if index_is_exact:
                exact = points[0]  # the index is exact search: its point is the exact point (one name, one row)
            elif gt.flat is not None:
                report(on_progress, "exact", message="exact flat baseline (faiss IndexFlatIP) ...")
                exact = flat_baseline(gt, qx, thr, exclude, k, latency_queries, like=index)
            elif not exact_baseline:
                notes.append("exact flat baseline not measured (disabled): it cannot be recommended")
            candidates = points + ([exact] if exact is not None and not index_is_exact else [])
            rec, meets = recommend(candidates, metric, target_recall)
            why = explain(rec, points, exact, metric, target_recall, meets, int(indexed.size), index_is_exact)
            if rec is not None and not meets:
                notes.append(
                    f"no setting reaches {metric} >= {target_recall}: recommending the best one "
                    f"({rec['label']}, {metric} {rec[metric]}); consider rebuilding with more memory per vector"
                )
            if rec is not None and exact is not None and exact["p50_ms"] > 0 and not rec.get("exact"):
                rec["speedup_vs_exact"] = round(exact["p50_ms"] / max(rec["p50_ms"], 1e-9), 1)

            applied = False
            switch_to_exact = apply and rec is not None and rec.get("exact") and not index_is_exact
            if apply and rec is not None and not switch_to_exact:
                if rec.get("nprobe") is None and not rec.get("rerank"):
                    notes.append("--apply: nothing to store (the index has no search parameters)")
                else:
                    apply_setting(gallery, str(manifest["index_file"]), rec)
                    applied = True
            index_desc = _index_description(index)
        finally:
            index.close()
        if switch_to_exact:
            from indexer import build_index

            report(on_progress, "apply", message=f"rebuilding the index as exact search ({EXACT_FACTORY}) ...")
            build_index(gallery, factory=EXACT_FACTORY, device="cpu")
            applied = True
            notes.append(f"--apply: the index was rebuilt as exact search ({EXACT_FACTORY}); "
                         f"`gallery index build --gallery {root}` chooses again by size")

        ident = None
        if identification:
            report(on_progress, "identification", message="identification metrics (leave-one-out, labeled faces) ...")
            ident = identification_metrics(root, rec.get("nprobe") if rec else None, identification_probes, seed)
            if rec is not None and rec.get("exact") and not index_is_exact and not applied:
                ident["note"] = "measured through the current index (the exact recommendation is not applied)"
            if ident.get("skipped"):
                notes.append(f"identification metrics skipped: {ident['skipped']}")
    finally:
        gallery.close()

    result = BenchReport(
        gallery=str(root),
        index=index_desc,
        queries=qinfo,
        k=k,
        threshold=thr,
        threshold_source=thr_source,
        target_recall=target_recall,
        target_metric=metric,
        points=points,
        exact=exact,
        recommended=rec,
        why=why,
        meets_target=meets,
        applied=applied,
        identification=ident,
        ground_truth={
            "faces": gt.n_vectors,
            "seconds": round(gt.seconds, 2),
            "mates_per_query": round(mates_per_query, 3),
            "method": "exact inner product streamed over the shards (deleted faces skipped)",
        },
        notes=notes,
        environment={
            "cpu_count": os.cpu_count(),
            "faiss_threads_batch": faiss.omp_get_max_threads(),
            "faiss_threads_single_query": 1,
            "latency_queries": int(min(latency_queries, qx.shape[0])),
            "faiss": faiss.__version__,
            "load_avg": os.getloadavg(),
        },
    )
    if output is not None:
        result.files = write_outputs(result, Path(output))
    return result
