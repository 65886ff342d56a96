"""`gallery bench`: recall against exact search vs latency, on the user's own gallery.

What one run does (`run_bench`):

1. **Queries.** A seeded sample of the gallery's own live faces (held out: each query's own face id is
   excluded from the ground truth *and* from the index's answers, a query finding itself is no recall
   win), or the faces of query photos (`query_photos`, embedded with the gallery's model).
2. **Ground truth.** Exact inner-product top-k streamed over the Parquet shards in batches
   (`exact_ground_truth`: one shard batch and a running top-k heap per query in memory, deleted faces
   skipped), over the faces the index covers.
3. **Sweep.** Every search setting of the index: nprobe (powers of two up to min(nlist, 2048), plus
   the index's default) for IVF indexes, and the re-ranking depth (candidates re-scored exactly, or
   re-ranking off) where the index keeps re-ranking vectors. At each point: recall@1, recall@10
   (overlap of the top-10 with the exact top-10), mate recall (of the exact top-10 neighbours whose
   similarity clears the gallery's match threshold, the share the index returns in its top-10),
   single-query latency p50/p95/p99 (one query per call, one faiss thread) and batched throughput (all
   queries in one call, all threads). A flat index has one point, and it is exact.
4. **Exact baseline.** faiss `IndexFlatIP` over the same live vectors when they fit in memory.
5. **Recommendation.** The cheapest point (lowest p50) whose *target metric* reaches the target.
   The default metric is mate recall: the faces above the threshold are the ones that decide an
   answer (who is this, or unknown), so losing one of them changes answers, while losing a far
   neighbour below the threshold changes nothing. Without a threshold (or without any mates among
   the queries' neighbours) it falls back to recall@10. Only points that the index's defaults
   reproduce are recommended (re-ranking as built, depth >= 10*k: `LoadedIndex.search` re-scores
   max(manifest candidates, 10*k)). `apply=True` stores the recommended nprobe and depth in the index
   manifest, so that `load_index` (and every search) uses them by default.
6. **Identification** (labeled galleries): leave-one-out through the real search path
   (`Searcher.neighbours` + `rank_identities`) at the recommended nprobe: rank-1 and rank-5 accuracy
   and FNIR at FPIR = 1%.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from gallery.store import Gallery, GalleryError
from gallery.store.shards import iter_shard_batches

K = 10
SYNTHETIC_THRESHOLD = 0.5  # benchmarks/synthetic.py: the genuine/impostor boundary of its generator
METRICS = ("mate_recall", "recall@10", "recall@1")
DEFAULT_DEPTHS = (0, 100, 200, 400)  # 0 = re-ranking off
MAX_NPROBE = 2048  # FAISS GPU cap; beyond it an IVF index scans most of its lists anyway

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class BenchError(GalleryError):
    """A problem the user can act on (no index, empty gallery, bad option)."""


# --- ground truth & metrics -----------------------------------------------------------------------


@dataclass
class GroundTruth:
    scores: np.ndarray  # (nq, k) float32, best first
    ids: np.ndarray  # (nq, k) int64 face ids, -1 padded
    n_vectors: int  # live vectors searched
    seconds: float
    flat: Any = None  # faiss.IndexFlatIP over the same vectors (collect=True and it fitted)
    flat_ids: np.ndarray | None = None  # row -> face id for `flat`


def drop_excluded(
    scores: np.ndarray, ids: np.ndarray, exclude: np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's excluded id (its own face) from (scores, ids) and keep the first k columns."""
    if exclude is None:
        return scores[:, :k], ids[:, :k]
    hit = ids == np.asarray(exclude, dtype=np.int64)[:, None]
    if not hit.any():
        return scores[:, :k], ids[:, :k]
    order = np.argsort(hit, axis=1, kind="stable")[:, :k]  # the excluded id moves to the end
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def exact_ground_truth(
    paths: Sequence[Path],
    queries: np.ndarray,
    k: int = K,
    exclude: np.ndarray | None = None,
    deleted: np.ndarray | None = None,
    max_face_id: int | None = None,
    batch_size: int = 65536,
    collect: bool = False,
) -> GroundTruth:
    """Exact top-k by inner product, streamed over shard batches (memory: one batch + the heaps).

    exclude: one face id per query left out of its answers (the query's own face). deleted: sorted ids
    to skip. max_face_id: only faces up to this id (those the index covers). collect: also build an
    in-memory IndexFlatIP over the vectors (the exact-search baseline; the caller checks it fits).
    """
    t0 = time.perf_counter()
    q = np.ascontiguousarray(queries, dtype=np.float32)
    kk = k + (1 if exclude is not None else 0)
    heap = faiss.ResultHeap(q.shape[0], kk, keep_max=True)
    flat = faiss.IndexFlatIP(q.shape[1]) if collect else None
    flat_ids: list[np.ndarray] = []
    n = 0
    for ids, x in iter_shard_batches(paths, batch_size):
        keep = np.ones(ids.shape[0], dtype=bool)
        if max_face_id is not None:
            keep &= ids <= max_face_id
        if deleted is not None and deleted.size:
            pos = np.minimum(np.searchsorted(deleted, ids), deleted.size - 1)
            keep &= deleted[pos] != ids
        if not keep.all():
            ids, x = ids[keep], x[keep]
        if ids.size == 0:
            continue
        x = np.ascontiguousarray(x, dtype=np.float32)
        batch = faiss.IndexFlatIP(x.shape[1])
        batch.add(x)
        d, i = batch.search(q, min(kk, ids.size))
        if d.shape[1] < kk:
            d = np.pad(d, ((0, 0), (0, kk - d.shape[1])), constant_values=-np.inf)
            i = np.pad(i, ((0, 0), (0, kk - i.shape[1])), constant_values=-1)
        heap.add_result(d, np.where(i >= 0, ids[np.maximum(i, 0)], -1))
        if flat is not None:
            flat.add(x)
            flat_ids.append(ids.copy())
        n += int(ids.size)
    heap.finalize()
    scores, gt_ids = drop_excluded(heap.D, heap.I, exclude, k)
    return GroundTruth(
        scores=np.ascontiguousarray(scores),
        ids=np.ascontiguousarray(gt_ids),
        n_vectors=n,
        seconds=time.perf_counter() - t0,
        flat=flat,
        flat_ids=np.concatenate(flat_ids) if flat_ids else np.empty(0, np.int64),
    )


def recall_metrics(
    ids: np.ndarray, gt_ids: np.ndarray, gt_scores: np.ndarray, threshold: float | None, k: int = K
) -> dict[str, Any]:
    """recall@1, recall@k (top-k overlap / k) and mate recall against the exact (gt_ids, gt_scores)."""
    k = min(k, ids.shape[1], gt_ids.shape[1])
    valid = gt_ids[:, :k] >= 0
    r1 = float(np.mean((ids[:, 0] == gt_ids[:, 0]) & (gt_ids[:, 0] >= 0)))
    found = np.zeros_like(valid)
    for j in range(k):  # (nq, k) membership without a Python loop over queries
        found[:, j] = (ids[:, :k] == gt_ids[:, j : j + 1]).any(axis=1)
    found &= valid
    rk = float(found.sum() / max(1, int(valid.sum())))
    out: dict[str, Any] = {"recall@1": round(r1, 4), f"recall@{k}": round(rk, 4)}
    if threshold is not None:
        mates = valid & (gt_scores[:, :k] >= threshold)
        n_mates = int(mates.sum())
        out["mate_recall"] = round(float((found & mates).sum() / n_mates), 4) if n_mates else None
        out["mates"] = n_mates
    else:
        out["mate_recall"] = None
        out["mates"] = 0
    return out


def measure_latency(
    search: SearchFn, queries: np.ndarray, k: int, n_single: int = 200, warmup: int = 10
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Single-query latency (one query per call, faiss on one thread) and batched QPS (one call, all
    threads). Returns the timings and the batched call's (scores, ids)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for q in queries[:warmup]:
            search(q[None, :], k)
        times = np.empty(min(n_single, len(queries)))
        for j, q in enumerate(queries[: times.size]):
            t = time.perf_counter()
            search(q[None, :], k)
            times[j] = time.perf_counter() - t
    finally:
        faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    result = search(queries, k)
    batch = time.perf_counter() - t
    ms = times * 1000.0
    p50, p95, p99 = (float(v) for v in np.percentile(ms, [50, 95, 99]))
    return {
        "p50_ms": round(p50, 4),
        "p95_ms": round(p95, 4),
        "p99_ms": round(p99, 4),
        "mean_ms": round(float(ms.mean()), 4),
        "qps": round(len(queries) / max(batch, 1e-9), 1),
    }, result


def evaluate(
    search: SearchFn,
    queries: np.ndarray,
    gt: GroundTruth,
    threshold: float | None,
    exclude: np.ndarray | None = None,
    k: int = K,
    n_single: int = 200,
) -> dict[str, Any]:
    """Recall metrics and latency of one search function; excluded ids are dropped (search k+1)."""
    kk = k + (1 if exclude is not None else 0)
    timing, (scores, ids) = measure_latency(search, queries, kk, n_single)
    scores, ids = drop_excluded(scores, ids, exclude, k)
    point = recall_metrics(ids, gt.ids, gt.scores, threshold, k)
    point.update(timing)
    return point


# --- the gallery side ------------------------------------------------------------------------------


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
    meets_target: bool
    applied: bool
    identification: dict[str, Any] | None
    ground_truth: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _live_faces(db_path: Path, max_face_id: int, labeled_only: bool = False) -> tuple[np.ndarray, list[str], list]:
    """(face ids, shard filenames, identity names) of live faces with id <= max_face_id, in id order."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        sql = (
            "SELECT f.face_id, s.filename, i.name FROM faces f JOIN shards s ON s.shard_id = f.shard_id "
            "LEFT JOIN identities i ON i.identity_id = f.identity_id WHERE f.deleted = 0 AND f.face_id <= ?"
        )
        if labeled_only:
            sql += " AND f.identity_id IS NOT NULL"
        rows = conn.execute(sql + " ORDER BY f.face_id", (max_face_id,)).fetchall()
    finally:
        conn.close()
    return np.fromiter((r[0] for r in rows), np.int64, len(rows)), [r[1] for r in rows], [r[2] for r in rows]


def _deleted_ids(db_path: Path) -> np.ndarray:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT face_id FROM faces WHERE deleted = 1 ORDER BY face_id").fetchall()
    finally:
        conn.close()
    return np.fromiter((r[0] for r in rows), np.int64, len(rows))


def _read_vectors(root: Path, face_ids: np.ndarray, shards: list[str]) -> np.ndarray:
    from search.calibrate import read_embeddings

    ids = [int(i) for i in face_ids]
    return read_embeddings(root, ids, dict(zip(ids, shards))).astype(np.float32)


def _photo_queries(gallery_dir: Path, photos: Sequence[Path]) -> tuple[np.ndarray, list[str]]:
    """Main-face embeddings of query photos (folders scanned), through the search pipeline."""
    from gallery.scan import scan_photos
    from search.searcher import Searcher

    files: list[Path] = []
    for p in photos:
        p = Path(p)
        if p.is_dir():
            files.extend(f.path for f in scan_photos(p))
        else:
            files.append(p)
    vectors, used, skipped = [], [], []
    with Searcher(gallery_dir, device="auto") as searcher:
        for photo in files:
            found = searcher.pipeline.faces_of(photo, largest_only=True)
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


def resolve_threshold(gallery: Gallery, threshold: float | None) -> tuple[float | None, str]:
    if threshold is not None:
        return float(threshold), "--threshold"
    value, source = gallery.threshold()
    if value is not None:
        return float(value), str(source)
    stamp = gallery.model_stamp or {}
    if stamp.get("name") == "synthetic":
        return SYNTHETIC_THRESHOLD, "synthetic generator boundary (benchmarks/synthetic.py)"
    return None, "none known for this model: mate recall not measured (pass --threshold)"


def default_nprobes(nlist: int, default: int | None) -> list[int]:
    top = min(nlist, MAX_NPROBE)
    values = [1 << i for i in range(int(math.log2(top)) + 1)]
    if top not in values:
        values.append(top)
    if default and default <= top and default not in values:
        values.append(int(default))
    return sorted(values)


def memory_available() -> int:
    """Bytes the kernel says are available now (0 when unknown): decides what fits in RAM."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _point_label(p: dict[str, Any]) -> str:
    parts = [p["method"]]
    if p.get("nprobe") is not None:
        parts.append(f"nprobe {p['nprobe']}")
    if p.get("rerank") is not None:
        parts.append(f"rerank {p['candidates']}" if p["rerank"] else "no rerank")
    return " ".join(parts)


def recommend(
    points: list[dict[str, Any]], metric: str, target: float
) -> tuple[dict[str, Any] | None, bool]:
    """Lowest-p50 point with points[metric] >= target among the applicable ones; else the best one."""
    pool = [p for p in points if p.get("applicable", True) and p.get(metric) is not None]
    if not pool:
        return None, False
    meeting = [p for p in pool if p[metric] >= target]
    if meeting:
        return min(meeting, key=lambda p: (p["p50_ms"], -p[metric])), True
    return max(pool, key=lambda p: (p[metric], -p["p50_ms"])), False


def apply_setting(gallery: Gallery, index_file: str, point: dict[str, Any]) -> dict[str, Any]:
    """Store the point's nprobe (and re-rank depth) as the index's defaults: the manifest is rewritten
    atomically under the index lock, and only if it still names the index that was benchmarked."""
    from indexer import files

    with files.index_lock(gallery.index_dir):
        manifest = files.read_manifest(gallery.index_dir, gallery.root)
        if manifest.get("index_file") != index_file:
            raise BenchError("The index was rebuilt while the benchmark ran: run `gallery bench` again.")
        if point.get("nprobe") is not None:
            manifest["nprobe"] = int(point["nprobe"])
        rerank = manifest.get("rerank") or {}
        if rerank.get("enabled") and point.get("rerank") and point.get("candidates"):
            rerank["candidates"] = int(point["candidates"])
            manifest["rerank"] = rerank
        manifest["tuned"] = {
            "by": "gallery bench",
            "at": time.time(),
            "nprobe": point.get("nprobe"),
            "rerank_candidates": point.get("candidates"),
            "metrics": {m: point.get(m) for m in (*METRICS, "p50_ms", "qps")},
        }
        files.write_manifest(gallery.index_dir, manifest)
    return manifest


def identification_metrics(
    gallery_dir: Path, nprobe: int | None, probes: int = 1000, seed: int = 0, target_fpir: float = 0.01
) -> dict[str, Any]:
    """Leave-one-out rank-1/rank-5 accuracy and FNIR at FPIR = target over labeled faces, through
    `Searcher.neighbours` + `rank_identities` (as `gallery calibrate` does)."""
    from search.identify import rank_identities
    from search.searcher import Searcher

    db_path = Path(gallery_dir) / "gallery.db"
    face_ids, shards, names = _live_faces(db_path, 2**62, labeled_only=True)
    if face_ids.size == 0:
        return {"skipped": "no labeled faces"}
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    if len(counts) < 2:
        return {"skipped": "needs labeled faces of at least 2 identities"}
    try:
        searcher = Searcher(gallery_dir, nprobe=nprobe)
    except Exception as exc:  # an unregistered model (synthetic, test stamps): the search path cannot open it
        return {"skipped": f"the search path cannot open this gallery: {exc}"}
    t0 = time.perf_counter()
    try:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.permutation(face_ids.size)[:probes])
        pf = face_ids[pick]
        pnames = [names[i] for i in pick]
        x = _read_vectors(Path(gallery_dir), pf, [shards[i] for i in pick])
        rank_hits = {1: 0, 5: 0}
        mated, mated_scores_if_top, impostor = 0, [], []
        for s in range(0, pf.size, 256):
            neighbours = searcher.neighbours(x[s : s + 256], k=5, exclude_face_ids=[{int(f)} for f in pf[s : s + 256]])
            for name, found in zip(pnames[s : s + 256], neighbours):
                ranked = rank_identities(found, k=max(5, len(found)), aggregation=searcher.aggregation)
                others = [score for ident, score, _ in ranked if ident != name]
                impostor.append(others[0] if others else -1.0)
                if counts[name] >= 2:
                    mated += 1
                    top = [ident for ident, _, _ in ranked[:5]]
                    rank_hits[1] += int(top[:1] == [name])
                    rank_hits[5] += int(name in top)
                    mated_scores_if_top.append(ranked[0][1] if top[:1] == [name] else -math.inf)
    finally:
        searcher.close()
    imp = np.sort(np.asarray(impostor))[::-1]
    allowed = int(math.floor(target_fpir * imp.size))
    thr = float(np.nextafter(np.float32(imp[min(allowed, imp.size - 1)]), np.float32(2.0)))
    hits = np.asarray(mated_scores_if_top)
    return {
        "probes": int(pf.size),
        "mated_searches": mated,
        "nonmated_searches": int(imp.size),
        "identities": len(counts),
        "nprobe": nprobe,
        "rank1": round(rank_hits[1] / mated, 4) if mated else None,
        "rank5": round(rank_hits[5] / mated, 4) if mated else None,
        "target_fpir": target_fpir,
        "threshold_at_fpir": round(thr, 6),
        "fpir": round(float((imp >= thr).mean()), 4),
        "fnir_at_fpir": round(float((hits < thr).mean()), 4) if mated else None,
        "seconds": round(time.perf_counter() - t0, 2),
        "method": "leave-one-out over labeled faces: Searcher.neighbours (own face excluded) + rank_identities "
        f"({searcher.aggregation}); non-mated score = best other identity",
    }


def run_bench(
    gallery_dir: Path | str,
    queries: int = 1000,
    seed: int = 0,
    target_recall: float = 0.95,
    nprobes: Sequence[int] | None = None,
    rerank_depths: Sequence[int] | None = None,
    query_photos: Sequence[Path] | None = None,
    apply: bool = False,
    output: Path | str | None = None,
    target_metric: str = "mate_recall",
    threshold: float | None = None,
    k: int = K,
    latency_queries: int = 200,
    identification: bool = True,
    identification_probes: int = 1000,
    exact_baseline: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Benchmark the gallery's index against exact search; see the module docstring."""
    from indexer import load_index

    if target_metric not in METRICS:
        raise BenchError(f"Unknown target metric '{target_metric}': use one of {', '.join(METRICS)}.")
    say = progress or (lambda _msg: None)
    root = Path(gallery_dir)
    notes: list[str] = []
    gallery = Gallery.open(root)
    try:
        index = load_index(gallery)
        manifest = index.manifest
        max_id = int(manifest["max_face_id"])
        thr, thr_source = resolve_threshold(gallery, threshold)
        db_path = gallery.db_path
        shard_paths = gallery.shard_paths()
        all_ids, all_shards, _ = _live_faces(db_path, max_id)
        stale = len(_live_faces(db_path, 2**62)[0]) - all_ids.size
        if stale:
            notes.append(
                f"{stale:,} live faces are newer than the index and not benchmarked: "
                f"run `gallery index update --gallery {root}` first to include them"
            )
        if all_ids.size < 2:
            raise BenchError(f"Gallery '{root}' needs at least 2 indexed faces to benchmark.")

        # queries
        if query_photos:
            say("embedding query photos ...")
            qx, qsource = _photo_queries(root, query_photos)
            exclude = None
            qinfo = {"source": "photos", "n": int(qx.shape[0]), "photos": qsource}
        else:
            rng = np.random.default_rng(seed)
            n_q = int(min(queries, all_ids.size))
            pick = np.sort(rng.choice(all_ids.size, size=n_q, replace=False))
            exclude = all_ids[pick]
            say(f"reading {n_q} held-out query faces ...")
            qx = _read_vectors(root, exclude, [all_shards[i] for i in pick])
            qinfo = {"source": "gallery faces (seeded sample, own face excluded)", "n": n_q, "seed": seed}

        # ground truth (+ the exact baseline's flat index when it fits)
        dim = int(manifest["dim"])
        need = all_ids.size * dim * 4
        avail = memory_available()
        collect = exact_baseline and (avail == 0 or need <= 0.4 * avail)
        if exact_baseline and not collect:
            notes.append(
                f"exact flat baseline skipped: {need / 2**30:.1f} GiB of vectors > 40% of available memory "
                f"({avail / 2**30:.1f} GiB); recall is still measured against streamed exact search"
            )
        say(f"exact ground truth over {all_ids.size:,} faces (streamed) ...")
        deleted = _deleted_ids(db_path)
        gt = exact_ground_truth(shard_paths, qx, k, exclude, deleted, max_id, collect=collect)
        mates_per_query = float(((gt.scores >= thr) & (gt.ids >= 0)).sum(axis=1).mean()) if thr is not None else 0.0

        metric = target_metric
        if metric == "mate_recall" and (thr is None or mates_per_query == 0):
            metric = "recall@10"
            notes.append(
                "target metric mate_recall fell back to recall@10: "
                + ("no match threshold known" if thr is None else "no query has a neighbour above the threshold")
            )

        # the sweep
        nlist = manifest.get("nlist")
        default_np = index.nprobe
        has_vectors = index.vectors is not None
        if nlist:
            sweep_np = sorted({int(p) for p in nprobes}) if nprobes else default_nprobes(int(nlist), default_np)
            sweep_np = [p for p in sweep_np if p >= 1]
            auto_np = not nprobes
        else:
            sweep_np, auto_np = [None], False
            if nprobes:
                notes.append("--nprobe ignored: the index has no inverted lists (exhaustive search)")
        if has_vectors:
            depths = sorted({int(d) for d in (rerank_depths if rerank_depths is not None else DEFAULT_DEPTHS)})
            dflt = index.rerank_candidates
            if rerank_depths is None and dflt not in depths:
                depths = sorted({*depths, dflt})
        else:
            depths = [None]  # type: ignore[list-item]
            if rerank_depths:
                notes.append("re-ranking depths ignored: this index keeps no re-ranking vectors")
        min_applicable_depth = 10 * k  # LoadedIndex.search re-scores max(manifest candidates, 10*k) by default

        points: list[dict[str, Any]] = []
        method = str(manifest["factory"])
        index.search(qx, k + 1)  # warm-up: the first batched call would pay for cold pages (re-rank file)
        for depth in depths:
            prev: dict[str, Any] | None = None
            for p in sweep_np:
                rerank = None if depth is None else depth > 0
                cand = depth if depth else None

                def search(q: np.ndarray, kk: int, p=p, rerank=rerank, cand=cand) -> tuple[np.ndarray, np.ndarray]:
                    return index.search(q, kk, nprobe=p, rerank=rerank, candidates=cand)

                say(f"  {method}: nprobe {p}, re-rank depth {depth}")
                point: dict[str, Any] = {"method": method, "nprobe": p, "rerank": rerank, "candidates": cand}
                point.update(evaluate(search, qx, gt, thr, exclude, k, latency_queries))
                point["applicable"] = depth is None or (
                    bool(rerank) == bool(has_vectors) and (cand or 0) >= min_applicable_depth
                )
                point["exact"] = not nlist and not has_vectors and "Flat" in method and "PQ" not in method.upper()
                point["bytes_per_vector"] = manifest.get("index_bytes_per_vector")
                point["label"] = _point_label(point)
                points.append(point)
                # automatic sweep: stop once more lists buy nothing (the same recall twice, target met)
                if (
                    auto_np
                    and prev is not None
                    and all(point[m] == prev[m] for m in METRICS)
                    and (point.get(metric) or 0) >= target_recall
                ):
                    break
                prev = point

        exact: dict[str, Any] | None = None
        if gt.flat is not None and gt.flat.ntotal:
            flat, flat_ids = gt.flat, gt.flat_ids

            def exact_search(q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
                d, i = flat.search(q, kk)
                return d, np.where(i >= 0, flat_ids[np.maximum(i, 0)], -1)

            say("exact flat baseline (faiss IndexFlatIP) ...")
            exact = {"method": "exact flat (faiss IndexFlatIP)", "nprobe": None, "rerank": None, "candidates": None}
            exact.update(evaluate(exact_search, qx, gt, thr, exclude, k, latency_queries))
            exact["bytes_per_vector"] = 4 * dim
            exact["label"] = exact["method"]
            exact["applicable"] = False
            exact["exact"] = True
        elif not exact_baseline:
            notes.append("exact flat baseline not measured (disabled)")

        rec, meets = recommend(points, metric, target_recall)
        if rec is not None and not meets:
            notes.append(
                f"no setting reaches {metric} >= {target_recall}: recommending the best one "
                f"({rec['label']}, {metric} {rec[metric]}); consider rebuilding with more memory per vector"
            )
        if rec is not None and exact is not None and exact["p50_ms"] > 0:
            rec["speedup_vs_exact"] = round(exact["p50_ms"] / max(rec["p50_ms"], 1e-9), 1)

        applied = False
        if apply and rec is not None:
            if rec.get("nprobe") is None and not rec.get("rerank"):
                notes.append("--apply: nothing to store (the index has no search parameters)")
            else:
                apply_setting(gallery, str(manifest["index_file"]), rec)
                applied = True

        ident = None
        if identification:
            say("identification metrics (leave-one-out, labeled faces) ...")
            ident = identification_metrics(root, rec.get("nprobe") if rec else None, identification_probes, seed)
            if ident.get("skipped"):
                notes.append(f"identification metrics skipped: {ident['skipped']}")

        index_desc = {
            "factory": method,
            "kind": manifest.get("kind_of_index"),
            "ntotal": index.ntotal,
            "nlist": nlist,
            "default_nprobe": default_np,
            "rerank": has_vectors,
            "rerank_candidates": index.rerank_candidates if has_vectors else None,
            "index_bytes_per_vector": manifest.get("index_bytes_per_vector"),
            "rerank_bytes_per_vector_on_disk": round(
                ((manifest.get("rerank") or {}).get("bytes") or 0) / max(1, index.ntotal), 1
            ),
        }
        index.close()
    finally:
        gallery.close()

    report = BenchReport(
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
        report.files = write_outputs(report, Path(output))
    return report


# --- outputs ---------------------------------------------------------------------------------------

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
