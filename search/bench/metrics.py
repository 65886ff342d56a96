"""Recall against exact search, and latency: the measurements every index benchmark shares.

`gallery bench` (search.bench.sweep) and the benchmark scripts (benchmarks/index_build.py,
benchmarks/recall_latency.py) all measure with these functions, so a number means the same thing in
every report:

- **ground truth** (`exact_ground_truth`): exact inner-product top-k streamed over shard batches with
  faiss' `knn_ground_truth` (one batch and a result heap per query in memory; on every GPU faiss
  has), deleted faces skipped, each query's own face left out;
- **recall** (`recall_metrics`): recall@1, recall@k (top-k overlap / k) and mate recall (of the exact
  top-k neighbours whose similarity clears the match threshold, the share the index returns);
- **latency** (`measure_latency`): single-query p50/p95/p99 (one query per call, one faiss thread)
  and batched throughput (all queries in one call, all threads).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth

from gallery.store.shards import iter_shard_batches
from indexer.vectors import is_deleted

K = 10
METRICS = ("mate_recall", "recall@10", "recall@1")  # what a sweep point reports, and a target may name

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
BatchFn = Callable[[np.ndarray, np.ndarray], None]

# faiss pads a top-k that has fewer than k results with this score (-FLT_MAX) and a -1 label
_NO_RESULT = float(np.finfo(np.float32).min) / 2


@dataclass
class GroundTruth:
    scores: np.ndarray  # (nq, k) float32, best first, -inf padded
    ids: np.ndarray  # (nq, k) int64 face ids, -1 padded
    n_vectors: int  # live vectors searched
    seconds: float
    flat: Any = None  # faiss.IndexFlatIP over the same vectors (collect=True)
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


class _StreamIds:
    """Stream position -> face id for the vectors fed to `knn_ground_truth` (which answers positions).

    Kept as runs of consecutive ids, one entry per gap (a deleted face, a shard boundary), so memory
    grows with the gaps, not with the gallery: the ground truth stays one batch plus the heaps.
    """

    def __init__(self) -> None:
        self.n = 0
        self._starts: list[np.ndarray] = []  # stream position where each run starts
        self._first: list[np.ndarray] = []  # face id at that position

    def add(self, ids: np.ndarray) -> None:
        if ids.size == 0:
            return
        starts = np.flatnonzero(np.r_[True, np.diff(ids) != 1])
        self._starts.append(starts + self.n)
        self._first.append(ids[starts].astype(np.int64))
        self.n += int(ids.size)

    def lookup(self, positions: np.ndarray) -> np.ndarray:
        """Face ids at the given positions; -1 where a position is out of the stream."""
        if self.n == 0:
            return np.full(positions.shape, -1, np.int64)
        starts, first = np.concatenate(self._starts), np.concatenate(self._first)
        run = np.maximum(np.searchsorted(starts, positions, side="right") - 1, 0)
        ids = first[run] + (positions - starts[run])
        return np.where((positions >= 0) & (positions < self.n), ids, -1)


def exact_ground_truth(
    paths: Sequence[Path],
    queries: np.ndarray,
    k: int = K,
    exclude: np.ndarray | None = None,
    deleted: np.ndarray | None = None,
    max_face_id: int | None = None,
    batch_size: int = 65536,
    collect: bool = False,
    each_batch: BatchFn | None = None,
) -> GroundTruth:
    """Exact top-k by inner product, streamed over shard batches (memory: one batch + the heaps).

    exclude: one face id per query left out of its answers (the query's own face). deleted: sorted ids
    to skip. max_face_id: only faces up to this id (those the index covers). collect: also build an
    in-memory IndexFlatIP over the vectors (the exact-search baseline; the caller checks it fits).
    each_batch: called with every (ids, vectors) batch searched, so that a caller can fill another
    index in the same pass over the shards.
    """
    t0 = time.perf_counter()
    q = np.ascontiguousarray(queries, dtype=np.float32)
    kk = k + (1 if exclude is not None else 0)
    flat = faiss.IndexFlatIP(q.shape[1]) if collect else None
    flat_ids: list[np.ndarray] = []
    stream = _StreamIds()

    def blocks() -> Iterator[np.ndarray]:
        for ids, x in iter_shard_batches(paths, batch_size):
            keep = np.ones(ids.shape[0], dtype=bool)
            if max_face_id is not None:
                keep &= ids <= max_face_id
            if deleted is not None:
                keep &= ~is_deleted(ids, deleted)
            if not keep.all():
                ids, x = ids[keep], x[keep]
            if ids.size == 0:
                continue
            x = np.ascontiguousarray(x, dtype=np.float32)
            stream.add(ids)
            if flat is not None:
                flat.add(x)
                flat_ids.append(ids.copy())
            if each_batch is not None:
                each_batch(ids, x)
            yield x

    scores, positions = knn_ground_truth(q, blocks(), kk, metric_type=faiss.METRIC_INNER_PRODUCT)
    # a block smaller than kk pads with (-FLT_MAX, -1), which knn_ground_truth shifts like real
    # positions: only a real score makes a real neighbour
    found = scores > _NO_RESULT
    gt_ids = np.where(found, stream.lookup(positions), -1)
    scores = np.where(found, scores, -np.inf).astype(np.float32)
    scores, gt_ids = drop_excluded(scores, gt_ids, exclude, k)
    return GroundTruth(
        scores=np.ascontiguousarray(scores),
        ids=np.ascontiguousarray(gt_ids),
        n_vectors=stream.n,
        seconds=time.perf_counter() - t0,
        flat=flat,
        flat_ids=np.concatenate(flat_ids) if flat_ids else np.empty(0, np.int64),
    )


def recall_metrics(
    ids: np.ndarray, gt_ids: np.ndarray, gt_scores: np.ndarray, threshold: float | None, k: int = K
) -> dict[str, Any]:
    """recall@1, recall@k (top-k overlap / k) and mate recall against the exact (gt_ids, gt_scores).

    Not faiss.contrib.evaluation.knn_intersection_measure: that one counts -1 padding as a match and
    divides by nq*k, where a gallery smaller than k must divide by the neighbours that exist."""
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
    warmup: int = 10,
) -> dict[str, Any]:
    """Recall metrics and latency of one search function; excluded ids are dropped (search k+1)."""
    kk = k + (1 if exclude is not None else 0)
    timing, (scores, ids) = measure_latency(search, queries, kk, n_single, warmup)
    scores, ids = drop_excluded(scores, ids, exclude, k)
    point = recall_metrics(ids, gt.ids, gt.scores, threshold, k)
    point.update(timing)
    return point
