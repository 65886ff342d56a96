"""Clustering methods on a k-NN graph: each returns one cluster label per face (0..c-1).

- `average_link`: agglomerative average linkage, exact for every pair of clusters the graph connects,
  with a size-aware threshold, a consistency check against each cluster's own cohesion and, in a
  second pass over each cluster of the first, a crowd check against the faces of other people around it.
  A cluster pair's average cosine is (sum_A · sum_B) / (|A| |B|) for unit vectors, so it is computed
  from per-cluster vector sums, never from pair lists. Merges happen in rounds of reciprocal best pairs
  (as in reciprocal agglomerative clustering, RAC): plain average linkage is reducible, so this gives
  the same tree as merging one best pair at a time (with the size-aware threshold and the check, pairs
  rank by how far they clear what they need). Candidates are the cluster pairs joined by a graph edge of
  similarity >= threshold (an average >= t needs at least one pair >= t).
- `single_link`: connected components of the edges >= threshold (chains: one look-alike pair joins two
  people, so it is measured, not the default).
- `core_points`: DBSCAN-style: faces with >= min_neighbours neighbours above the threshold are cores,
  connected cores form clusters, other faces join their most similar core's cluster if it is above the
  threshold, else stay alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from search.cluster.graph import EDGE_BLOCK, KnnGraph

METHODS = ("average", "single", "core")
MARGIN_BLOCK = 1 << 20  # cluster pairs whose margins are computed at once
log = logging.getLogger(__name__)


def _dense_labels(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def cluster_sums(vectors: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """(c, d) float32 sum of the vectors of each cluster (a sparse product: one pass, no Python loop).
    float32 is enough: a link is compared with a threshold to 1e-4, sums err by ~1e-7 * size."""
    from scipy.sparse import csr_matrix

    n = labels.shape[0]
    if n_clusters == n and np.array_equal(labels, np.arange(n)):
        return np.array(vectors, dtype=np.float32, copy=True)  # every face its own cluster
    member = csr_matrix((np.ones(n, np.float32), (labels, np.arange(n))), shape=(n_clusters, n))
    return np.asarray(member @ np.asarray(vectors, np.float32), dtype=np.float32)


def _pair_links(sums: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out = np.empty(lo.shape[0], np.float64)
    for start in range(0, lo.shape[0], 131_072):  # bounded temporaries: two (chunk, d) gathers
        sl = slice(start, start + 131_072)
        out[sl] = np.einsum("ij,ij->i", sums[lo[sl]], sums[hi[sl]])
    return out / (counts[lo].astype(np.float64) * counts[hi])


@dataclass(frozen=True)
class Consistency:
    """The consistency check of a merge: a cluster of `min_size` or more faces has a steady inner mean
    cosine (its cohesion); the link to a partner must come within a gap of it.

    Two such clusters: link >= the looser one's cohesion - `gap` (the merged cluster is about as
    consistent as its parts). A smaller group joining one: link >= its cohesion - `join_gap` (one face's
    mean is noisier than a cluster's). The evidence does not weaken with size: a large cluster's
    cohesion does not fall as it grows, so large clusters of two look-alike people stay apart."""

    gap: float
    join_gap: float
    min_size: int = 3


def cohesion(sums: np.ndarray, counts: np.ndarray, ids: np.ndarray | slice = slice(None),
             min_size: int = 2) -> np.ndarray:
    """Mean pairwise cosine inside each cluster, (|sum|^2 - n) / (n (n - 1)) for unit vectors (from the
    vector sum: no pair list); NaN below `min_size` faces."""
    n = counts[ids].astype(np.float64)
    picked = sums[ids] if not isinstance(ids, slice) else sums
    squared = np.empty(n.size, np.float64)
    for start in range(0, n.size, 131_072):  # bounded temporaries, as in _pair_links
        block = picked[start:start + 131_072].astype(np.float64)
        squared[start:start + 131_072] = np.einsum("ij,ij->i", block, block)
    with np.errstate(invalid="ignore", divide="ignore"):
        inner = (squared - n) / (n * (n - 1))
    return np.where(n >= max(2, min_size), inner, np.nan)


def _consistency_need(coh_lo: np.ndarray, coh_hi: np.ndarray, check: Consistency) -> np.ndarray:
    """The link each pair needs by the consistency check (-inf where neither side is large enough)."""
    both = ~np.isnan(coh_lo) & ~np.isnan(coh_hi)
    with np.errstate(invalid="ignore"):
        need = np.where(both, np.minimum(coh_lo, coh_hi) - check.gap, np.fmax(coh_lo, coh_hi) - check.join_gap)
    return np.where(np.isnan(need), -np.inf, need)


@dataclass(frozen=True)
class CrowdCheck:
    """The crowd check of a merge: how close other people come to a cluster's faces sets how close its
    faces must be to each other.

    A face's crowd level is its cosine to its `k`-th nearest face outside its cluster (of the first
    pass: the cluster it would join without this check), a cluster's the mean over its faces. In a
    region where the embedding puts many people close together (dlib-resnet places some groups of
    people as close to each other as one person's photos), two faces or clusters merge only if their
    link clears the mean crowd level of the two by `margin` for two single faces, tending to
    `margin_large` for large clusters (steady means, which may sit below the crowd's nearest faces), as
    the threshold tends to the floor: need = crowd + margin_large + (margin - margin_large) / sqrt(m n).
    A face with no face outside its cluster among its graph neighbours has no crowd (no constraint)."""

    k: int
    margin: float
    margin_large: float


def crowd_levels(graph: KnnGraph, face_labels: np.ndarray, k: int) -> np.ndarray:
    """Per face, the cosine to its k-th graph neighbour outside its own cluster (`face_labels`); the
    lowest such neighbour's when fewer are listed; NaN when none is (a row without neighbours too)."""
    n = graph.n
    out = np.full(n, np.nan)
    labels = np.asarray(face_labels, np.int64)
    for start in range(0, n, EDGE_BLOCK):  # bounded (rows, k) temporaries at any face count
        nb = graph.neighbours[start:start + EDGE_BLOCK]
        sm = graph.similarities[start:start + EDGE_BLOCK]
        own = labels[start:start + EDGE_BLOCK, None]
        outside = (nb >= 0) & np.isfinite(sm) & (labels[np.maximum(nb, 0)] != own)
        seen = np.cumsum(outside, axis=1)
        kth = outside & (seen == k)
        rows = np.arange(nb.shape[0])
        lowest = np.where(outside, sm, np.inf).min(axis=1)  # rows are sorted: the last one outside
        level = np.where(kth.any(axis=1), sm[rows, np.argmax(kth, axis=1)], lowest)
        out[start:start + EDGE_BLOCK] = np.where(outside.any(axis=1), level, np.nan)
    return out


def _crowd_need(crowd_sum: np.ndarray, crowd_count: np.ndarray, counts: np.ndarray, a: np.ndarray,
                b: np.ndarray, crowd: CrowdCheck) -> np.ndarray:
    """The link each pair needs by the crowd check (-inf where neither side has a crowd level)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = crowd_sum / crowd_count  # NaN where a cluster has no face with a level
    pair = np.where(np.isnan(mean[a]), mean[b], np.where(np.isnan(mean[b]), mean[a], (mean[a] + mean[b]) / 2))
    size = np.sqrt(counts[a].astype(np.float64) * counts[b])
    need = pair + crowd.margin_large + (crowd.margin - crowd.margin_large) / size
    return np.where(np.isnan(need), -np.inf, need)


def _margins(sums: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray, threshold: float,
             floor: float, check: Consistency | None = None, coh: np.ndarray | None = None,
             crowd: CrowdCheck | None = None, crowd_sum: np.ndarray | None = None,
             crowd_count: np.ndarray | None = None) -> np.ndarray:
    """How far each pair's average link is above what it needs: by size, a pair of single faces needs
    `threshold` and large clusters (steady means) approach `floor`; with a consistency check, also
    what the clusters' own cohesion asks (`coh`: per cluster, NaN below the check's size); with a crowd
    check, also what the crowd around them asks (`crowd_sum`/`crowd_count`: per cluster, the sum and
    number of its faces' crowd levels)."""
    out = np.empty(lo.shape[0], np.float32)
    for start in range(0, lo.shape[0], MARGIN_BLOCK):  # bounded float64 temporaries at any pair count
        a, b = lo[start:start + MARGIN_BLOCK], hi[start:start + MARGIN_BLOCK]
        link = _pair_links(sums, counts, a, b)
        margin = link - (floor + (threshold - floor) / np.sqrt(counts[a].astype(np.float64) * counts[b]))
        if check is not None and coh is not None:
            np.minimum(margin, link - _consistency_need(coh[a], coh[b], check), out=margin)
        if crowd is not None and crowd_sum is not None and crowd_count is not None:
            np.minimum(margin, link - _crowd_need(crowd_sum, crowd_count, counts, a, b, crowd), out=margin)
        out[start:start + MARGIN_BLOCK] = margin
    return out


def _unique_pairs(lo: np.ndarray, hi: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a < b) cluster pairs, as int32 while cluster ids fit (half the memory of int64)."""
    distinct = lo != hi  # a pair of a cluster with itself is no pair
    key = np.minimum(lo[distinct], hi[distinct]).astype(np.int64)
    key *= n_clusters
    key += np.maximum(lo[distinct], hi[distinct])
    del distinct
    key.sort()  # in place: np.unique would sort a copy
    key = key[np.concatenate(([True], key[1:] != key[:-1]))] if key.size else key
    out_type = np.int32 if n_clusters < 2**31 else np.int64
    return (key // n_clusters).astype(out_type), (key % n_clusters).astype(out_type)


def average_link(
    vectors: np.ndarray, graph: KnnGraph, threshold: float, labels: np.ndarray | None = None,
    frozen: np.ndarray | None = None, floor: float | None = None, check: Consistency | None = None,
    crowd: CrowdCheck | None = None,
) -> np.ndarray:
    """Average-linkage clusters: two clusters of m and n faces merge while their mean pairwise cosine
    is >= floor + (threshold - floor) / sqrt(m n) (floor None: plain average linkage at `threshold`)
    and, with a `check`, while it passes the consistency check (see `Consistency`).

    Why size-aware: the mean similarity of two large clusters of one person is a steady estimate, while
    a single pair is noisy. Why the check: that mean also sits high for two look-alike people whom the
    embedding separates poorly, and a floor alone lets their clusters merge; each cluster's own cohesion
    says how high a link between its faces and another person's can go (benchmarks/cluster_quality.py).

    With a `crowd` check, a second pass clusters the faces of each first-pass cluster again, from the
    same start, with the crowd check as well (see `CrowdCheck`): the crowd around a face is measured
    outside the cluster it belongs to at first, so a person's own other photos never count as a crowd
    (measured from the start, they would keep a person with many photos in pieces), while a cluster
    grown from several look-alike people falls apart into its people.

    `labels` starts from given clusters instead of singletons (incremental clustering); clusters
    marked in `frozen` (a boolean per starting label) never merge with each other, only absorb others.
    """
    n = graph.n
    start = np.arange(n, dtype=np.int64) if labels is None else _dense_labels(labels)
    floor = threshold if floor is None else floor
    first = _agglomerate(vectors, graph, start, frozen, threshold, floor, check)
    if crowd is None or n == 0:
        return first
    levels = crowd_levels(graph, first, crowd.k)
    return _agglomerate(vectors, graph, start, frozen, threshold, floor, check, crowd, levels, within=first)


def _agglomerate(
    vectors: np.ndarray, graph: KnnGraph, start: np.ndarray, frozen: np.ndarray | None, threshold: float,
    floor: float, check: Consistency | None, crowd: CrowdCheck | None = None, levels: np.ndarray | None = None,
    within: np.ndarray | None = None,
) -> np.ndarray:
    """One pass of `average_link` from the dense starting labels `start`; `within` (one label per
    face): only faces with the same label may end in one cluster (the crowd check's second pass)."""
    c = int(start.max()) + 1 if start.size else 0
    sums = cluster_sums(vectors, start, c)
    counts = np.bincount(start, minlength=c).astype(np.int64)
    locked = np.zeros(c, bool) if frozen is None else np.asarray(frozen, bool).copy()
    a, b, _ = graph.edges(min(floor, threshold))
    if within is not None:
        same = within[a] == within[b]
        a, b = a[same], b[same]
    if not np.array_equal(start, np.arange(start.size)):  # (faces their own clusters: edge ends are ids)
        a, b = start[a], start[b]
    lo, hi = _unique_pairs(a, b, c)
    del a, b
    coh = cohesion(sums, counts, min_size=check.min_size) if check is not None else None
    crowd_sum = crowd_count = None
    if crowd is not None and levels is not None:
        known = ~np.isnan(levels)
        crowd_sum = np.bincount(start[known], weights=levels[known], minlength=c)
        crowd_count = np.bincount(start[known], minlength=c).astype(np.float64)

    def margins(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return _margins(sums, counts, lo, hi, threshold, floor, check, coh, crowd, crowd_sum, crowd_count)

    margin = margins(lo, hi)
    parent = np.arange(c, dtype=np.int64)  # cluster id -> the cluster it was merged into
    changed = np.zeros(c, bool)
    rounds = 0
    while lo.size:
        rounds += 1
        ok = (margin >= 0) & ~(locked[lo] & locked[hi])
        lo, hi, margin = lo[ok], hi[ok], margin[ok]
        if not lo.size:
            break
        # each cluster's best partner by margin (ties: the lower id, so runs are deterministic);
        # ufunc.at scatters instead of a sort of 2 x pairs: less time and no large temporaries
        top = np.full(c, -np.inf)
        np.maximum.at(top, lo, margin)
        np.maximum.at(top, hi, margin)
        best_lo = np.full(c, c, np.int64)  # lowest partner reaching the top margin, seen from each side
        at_top = margin == top[lo]
        np.minimum.at(best_lo, lo[at_top], hi[at_top])
        at_top = margin == top[hi]
        np.minimum.at(best_lo, hi[at_top], lo[at_top])
        mutual = (best_lo[lo] == hi) & (best_lo[hi] == lo)
        del top, best_lo, at_top
        ma, mb = lo[mutual], hi[mutual]  # ma < mb: mb goes into ma
        sums[ma] += sums[mb]
        counts[ma] += counts[mb]
        counts[mb] = 0
        locked[ma] |= locked[mb]
        parent[mb] = ma
        if coh is not None:
            coh[ma] = cohesion(sums, counts, ma, min_size=check.min_size)  # type: ignore[union-attr]
        if crowd_sum is not None and crowd_count is not None:
            crowd_sum[ma] += crowd_sum[mb]
            crowd_count[ma] += crowd_count[mb]
        # pairs between clusters that did not change keep their margin; the others are recomputed
        changed[ma] = True
        lo, hi = parent[lo], parent[hi]  # merged ids never appear again: one step suffices
        dirty = changed[lo] | changed[hi]
        keep_lo, keep_hi, keep_margin = lo[~dirty], hi[~dirty], margin[~dirty]
        new_lo, new_hi = _unique_pairs(lo[dirty], hi[dirty], c)
        lo = np.concatenate([keep_lo, new_lo])
        hi = np.concatenate([keep_hi, new_hi])
        margin = np.concatenate([keep_margin, margins(new_lo, new_hi)])
        changed[ma] = False
        log.info("average linkage%s round %d: %d merges, %d candidate pairs left",
                 " (crowd check)" if crowd is not None else "", rounds, ma.size, lo.size)
    while True:  # pointer jumping: every cluster id to the root of its merges
        up = parent[parent]
        if np.array_equal(up, parent):
            break
        parent = up
    return _dense_labels(parent[start])


def single_link(graph: KnnGraph, threshold: float) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a, b, _ = graph.edges(threshold)
    adj = coo_matrix((np.ones(a.size), (a, b)), shape=(graph.n, graph.n))
    return connected_components(adj, directed=False)[1].astype(np.int64)


def core_points(graph: KnnGraph, threshold: float, min_neighbours: int = 3) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = graph.n
    close = graph.similarities >= threshold
    core = close.sum(axis=1) >= min_neighbours
    a, b, _ = graph.edges(threshold)
    both = core[a] & core[b]
    adj = coo_matrix((np.ones(int(both.sum())), (a[both], b[both])), shape=(n, n))
    comp = connected_components(adj, directed=False)[1].astype(np.int64)
    label = np.where(core, comp, -1)
    # a border face joins its most similar core neighbour above the threshold
    nb_core = np.where(graph.neighbours >= 0, core[np.maximum(graph.neighbours, 0)], False) & close
    has = nb_core.any(axis=1) & ~core
    first = np.argmax(nb_core, axis=1)  # rows are sorted most similar first
    label[has] = comp[graph.neighbours[has, first[has]]]
    alone = label < 0
    label[alone] = comp.max() + 1 + np.arange(int(alone.sum())) if n else label[alone]
    return _dense_labels(label)
