"""The k-nearest-neighbour graph every clustering method starts from.

Exact (flat) search below `EXACT_MAX_FACES`; above, an IVF-Flat index built for the occasion: flat
vectors (no PQ) so the similarities on the graph's edges are exact, and nprobe high enough that a
face's close neighbours (the only ones clustering acts on) are almost never missed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXACT_MAX_FACES = 60_000
IVF_NPROBE = 16
TRAIN_PER_CENTROID = 30
REFINE_FACTOR = 8  # PQ candidates re-scored exactly per neighbour wanted (4-bit PQ ranks coarsely)
QUERY_BATCH = 16_384
EDGE_BLOCK = 65_536


@dataclass
class KnnGraph:
    """Row i: the k nearest other faces of face i (positions into the vectors), most similar first;
    -1 / -inf where fewer exist."""

    neighbours: np.ndarray  # (n, k) int32 (int64 past 2**31 faces)
    similarities: np.ndarray  # (n, k) float32 (cosine)

    @property
    def n(self) -> int:
        return int(self.neighbours.shape[0])

    def edges(self, min_similarity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Undirected edges (i < j) with similarity >= min_similarity, built a block of rows at a time:
        only kept edges are materialised, as int32 where ids fit. A pair in each other's lists comes
        twice (every caller dedupes or does not care: a sort of all edges is the largest allocation)."""
        id_type = np.int32 if self.n < 2**31 else np.int64
        parts_lo, parts_hi, parts_s = [], [], []
        for start in range(0, self.n, EDGE_BLOCK):
            nb = self.neighbours[start:start + EDGE_BLOCK]
            sm = self.similarities[start:start + EDGE_BLOCK]
            rows, slots = np.nonzero((sm >= min_similarity) & (nb >= 0))
            cols = nb[rows, slots].astype(id_type)
            rows = (rows + start).astype(id_type)
            distinct = rows != cols
            parts_lo.append(np.minimum(rows, cols)[distinct])
            parts_hi.append(np.maximum(rows, cols)[distinct])
            parts_s.append(sm[rows[distinct] - start, slots[distinct]])
        return tuple(np.concatenate(p) if p else np.zeros(0, t)  # type: ignore[return-value]
                     for p, t in ((parts_lo, id_type), (parts_hi, id_type), (parts_s, np.float32)))


def _ivf_index(x: np.ndarray, seed: int = 0):  # -> faiss.Index
    """IVF with 4-bit fast-scan PQ codes, re-ranked with the exact vectors (RFlat): the PQ scan finds
    candidates fast, the refine step makes every similarity on the graph exact."""
    import faiss

    n, d = x.shape
    nlist = 1 << max(4, math.ceil(math.log2(4 * math.sqrt(n))))
    while nlist > 16 and nlist * TRAIN_PER_CENTROID > n:  # small inputs: fewer lists, each trainable
        nlist //= 2
    m = max(8, d // 4)
    index = faiss.index_factory(d, f"IVF{nlist},PQ{m}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.min_points_per_centroid = TRAIN_PER_CENTROID  # enough for neighbour search, half the k-means time
    index.train(x[rng.choice(n, min(n, nlist * TRAIN_PER_CENTROID), replace=False)])
    for start in range(0, n, 262_144):
        index.add(x[start:start + 262_144])
    ivf.nprobe = min(IVF_NPROBE, nlist)
    index.k_factor = REFINE_FACTOR
    return index


def knn_graph(vectors: np.ndarray, k: int, query: np.ndarray | None = None) -> KnnGraph:
    """The k nearest neighbours among `vectors` of each row of `query` (default: of each vector, itself
    left out). Inner product on unit vectors = cosine."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    q = x if query is None else np.ascontiguousarray(query, dtype=np.float32)
    self_query = query is None
    n = x.shape[0]
    kk = min(k + (1 if self_query else 0), n)
    if n == 0 or q.shape[0] == 0 or kk == 0:
        return KnnGraph(np.full((q.shape[0], k), -1, np.int64), np.full((q.shape[0], k), -np.inf, np.float32))
    if n <= EXACT_MAX_FACES:
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
    else:
        index = _ivf_index(x)
    m = kk - 1 if self_query else kk
    id_type = np.int32 if n < 2**31 else np.int64  # half the memory of faiss's int64 ids
    sims = np.empty((q.shape[0], m), np.float32)
    nbrs = np.empty((q.shape[0], m), id_type)
    for start in range(0, q.shape[0], QUERY_BATCH):
        s, i = index.search(q[start:start + QUERY_BATCH], kk)
        if self_query:  # drop each face itself (usually the first hit; not always among exact duplicates)
            own = i == np.arange(start, start + i.shape[0])[:, None]
            own[~own.any(axis=1), -1] = True  # itself not found: drop the last, least similar hit instead
            i, s = i[~own].reshape(i.shape[0], m), s[~own].reshape(i.shape[0], m)
        s[i < 0] = -np.inf
        sims[start:start + QUERY_BATCH], nbrs[start:start + QUERY_BATCH] = s, i
    del index
    if nbrs.shape[1] < k:  # fewer faces than k
        pad = k - nbrs.shape[1]
        nbrs = np.pad(nbrs, ((0, 0), (0, pad)), constant_values=-1)
        sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
    return KnnGraph(nbrs, sims)
