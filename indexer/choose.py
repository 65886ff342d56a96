"""Which FAISS index for a gallery: a pure function of size, dimension, memory budget and device.

The rules (faiss wiki "Guidelines to choose an index" and the benchmark in benchmarks/index_build.py):

- below ``FLAT_MAX_VECTORS`` faces an exact flat index (``IDMap2,Flat``): IVF needs 30+ training points
  per centroid with nlist >= 4*sqrt(N), i.e. N >= 14,400 just to be trainable, and an exact scan of a few
  tens of thousands of vectors takes about a millisecond anyway;
- otherwise IVF-PQ: nlist the smallest power of two >= 4*sqrt(N) (inside [4, 16]*sqrt(N), and the low end
  keeps k-means training and the add-time assignment cheap; when a power of two would need more training
  points than the gallery has, 4*sqrt(N) rounded up to a multiple of 16), PQ codes of ~D/8 bytes
  (64 B at 512-d, never under 32 B nor over D/2 B) above 128-d and of D/2 bytes up to 128-d (64 B at
  128-d: real 128-d face vectors pack a query's neighbours too tightly for 32-byte codes), capped by
  the memory budget;
- on CPU the 4-bit fast-scan PQ (``PQ{2B}x4fs``, same bytes per vector): on the synthetic face benchmark it
  searches 2x faster than 8-bit PQ of the same size, trains much faster and has a higher raw recall@1;
  the GPU has no fast-scan, so device="cuda" gets 8-bit PQ (``PQ{B}np``: no polysemous training, which
  is very slow and useless here);
- from ``LARGE_IVF_VECTORS`` faces (2M) on CPU, the coarse quantizer is an HNSW graph over the centroids
  (``IVF{nlist}_HNSW32``, the faiss wiki's choice for 10M-100M vectors) trained by two-level k-means
  (``faiss.contrib.clustering.two_level_clustering``): at 10M x 128 a flat k-means over 16,384 lists and
  the flat assignment of every vector cost tens of minutes on a 2-core x86 VM, the two-level training about a
  minute, and the graph finds a query's lists without scanning all 16,384 centroids;
- exact re-ranking of the PQ candidates with the float vectors (a memory-mapped file on disk) is on by
  default for every compressed index: PQ alone caps recall@1 well below 1;
- the default search setting (nprobe, re-rank depth) is wider up to 128-d (``default_nprobe``,
  ``default_rerank_candidates``): at 10M x 128 on vectors fitted to dlib-resnet, nprobe 512 + 400
  candidates give recall@1 1.000 and mate recall 0.997 at 4.6 ms p50 on one core;
- 32-byte codes at 128-d would meet "1/10 of flat's memory" but not the recall: at 1M x 128 the best
  8-bit ``PQ32`` setting reached mate recall 0.987 at 5.8 ms and 4-bit ``PQ64x4fs`` 0.91, against 0.998 at
  1.6 ms for ``PQ128x4fs`` (64 B, 1/6.5 of flat): recall wins.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

FLAT_MAX_VECTORS = 30_000
ID_BYTES = 8  # faiss stores one int64 id per vector in the inverted lists / IDMap
MIN_TRAIN_PER_CENTROID = 30
MAX_TRAIN_PER_CENTROID = 256
DEFAULT_TRAIN_PER_CENTROID = 40
# GpuIndexIVFPQ supports only these code sizes (bytes per vector)
GPU_PQ_BYTES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
DEFAULT_RERANK_CANDIDATES = 100  # candidates re-scored exactly per query (at least 10*k)
CROWDED_MAX_DIM = 128  # up to here, more lists and candidates by default: see default_nprobe
CODES_PER_CANDIDATE = 800  # up to 128-d: see default_rerank_candidates
LARGE_IVF_VECTORS = 2_000_000  # from here (CPU): HNSW coarse quantizer + two-level k-means training
HNSW_QUANTIZER_M = 32
# The HNSW coarse quantizer's search breadth. faiss' default efSearch 16 missed the list holding a
# query's true nearest neighbour for 4-5% of queries at 10M x 128 (16,384 lists), whatever the nprobe
# (up to 1024), which capped recall@1 at 0.96 and mate recall at 0.87; 64 found it for all 100 probed
# queries, 128 leaves a margin (benchmarks/recall_latency.py). efConstruction: a better graph
# over the centroids costs well under a second at 16k centroids.
HNSW_QUANTIZER_EF_SEARCH = 128
HNSW_QUANTIZER_ADD_EF_SEARCH = 16  # faiss' default, kept while adding: see indexer.loaded.tune_hnsw_quantizer
HNSW_QUANTIZER_EF_CONSTRUCTION = 80
GPU_MAX_NPROBE = 2048  # FAISS GPU indexes search at most this many lists


@dataclass
class IndexChoice:
    kind: str  # flat | pq | ivfpq | custom
    factory: str  # faiss index_factory string (metric: inner product)
    dim: int
    n: int
    nlist: int | None = None
    pq_m: int | None = None
    pq_nbits: int | None = None
    fast_scan: bool = False
    bytes_per_vector: float | None = None  # in-RAM estimate: codes + id (re-rank data is on disk)
    train_size: int = 0
    nprobe: int | None = None
    rerank: bool = False
    rerank_candidates: int = DEFAULT_RERANK_CANDIDATES
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    coarse_training: str = "kmeans"  # kmeans (faiss' own IVF training) | two-level (large galleries)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_nlist(n: int) -> int:
    """Smallest power of two >= 4*sqrt(n) if the gallery can train it with 30 points per centroid."""
    low = 4.0 * math.sqrt(n)
    p2 = 1 << math.ceil(math.log2(max(low, 1.0)))
    if MIN_TRAIN_PER_CENTROID * p2 <= n:
        return p2
    return max(16, int(math.ceil(low / 16.0)) * 16)


def default_nprobe(nlist: int, dim: int = 512) -> int:
    """Lists a search visits by default.

    Above 128-d: about 1.5% of the lists (64 at nlist 4096), at least 16; mate recall 0.997 at 1M x 512
    (benchmarks/index_build.py, recall_latency.py). Up to 128-d (dlib-resnet and the like, whose unit
    vectors share one mean direction and pack a query's neighbours tightly): 4*sqrt(nlist) rounded up
    to a power of two, 256 at nlist 4096 and 512 at 16,384. On the generator fitted to dlib-resnet the
    old 1.5% gave mate recall 0.95 at 1M and 0.89 at 10M; mate recall >= 0.99 needed 256 lists at 1M
    and 512 (with re-rank 400) at 10M (benchmarks/recall_latency.py)."""
    if dim <= CROWDED_MAX_DIM:
        return int(min(nlist, 1 << math.ceil(math.log2(4.0 * math.sqrt(nlist)))))
    return int(min(nlist, max(16, nlist // 64)))


def default_rerank_candidates(dim: int, n: int = 0, nlist: int | None = None, nprobe: int | None = None) -> int:
    """Candidates re-scored exactly by default: 100 above 128-d. Up to 128-d, one per
    CODES_PER_CANDIDATE codes a query scans (n * nprobe / nlist), rounded up to a multiple of 100,
    between 100 and 1000: PQ's ranking error grows with the codes scanned. On the generator fitted to
    dlib-resnet, 1M faces at nprobe 256/4096 (62,500 codes) reach mate recall 0.997 with 100; 10M at
    nprobe 512/16,384 (312,500 codes) needed 400 (0.977 with 100, 0.997 with 400)."""
    if dim > CROWDED_MAX_DIM:
        return DEFAULT_RERANK_CANDIDATES
    scanned = n * (nprobe / nlist) if nlist and nprobe else n
    per = math.ceil(scanned / CODES_PER_CANDIDATE / 100.0) * 100
    return int(min(1000, max(DEFAULT_RERANK_CANDIDATES, per)))


def train_size_for(nlist: int, n: int, per_centroid: int = DEFAULT_TRAIN_PER_CENTROID) -> int:
    per_centroid = min(max(per_centroid, MIN_TRAIN_PER_CENTROID), MAX_TRAIN_PER_CENTROID)
    return int(min(n, per_centroid * nlist))


def _target_code_bytes(dim: int) -> int:
    """D/8 bytes (at least 32) above 128-d; D/2 bytes (one 4-bit code per dimension) up to 128-d: on
    128-d vectors fitted to dlib-resnet's real similarities, 32-byte codes left mate recall at 0.72-0.91
    at 1M faces whatever the nprobe/re-rank depth, 64-byte codes reach 0.996 (benchmarks/recall_latency.py).
    """
    if dim <= 128:
        return max(dim // 2, 1)
    return int(min(max(dim // 8, 32), max(dim // 2, 1)))


def _pq_layout(dim: int, max_bytes: float, device: str) -> tuple[int, int, bool, int]:
    """(m, nbits, fast_scan, code_bytes) for the largest code <= max_bytes, near D/8 bytes."""
    target = min(_target_code_bytes(dim), int(max_bytes))
    for code_bytes in range(target, 0, -1):
        if device == "cuda":
            if code_bytes in GPU_PQ_BYTES and dim % code_bytes == 0:
                return code_bytes, 8, False, code_bytes
        else:
            m = 2 * code_bytes  # 4-bit codes: two sub-quantizers per byte
            if dim % m == 0:
                return m, 4, True, code_bytes
            if dim % code_bytes == 0:
                return code_bytes, 8, False, code_bytes
    raise ValueError(f"no PQ layout fits {max_bytes:g} bytes per vector at dimension {dim}")


def _pq_factory(m: int, nbits: int, fast_scan: bool) -> str:
    return f"PQ{m}x4fs" if fast_scan else f"PQ{m}np"


def rerank_default_for_factory(factory: str) -> bool:
    """Compressed storage (PQ, SQ, RQ, LSH...) loses precision: re-rank, unless a refine stage is there."""
    f = factory.upper()
    if "RFLAT" in f or "REFINE" in f:
        return False
    return bool(re.search(r"PQ|SQ|RQ|LSH|ITQ", f))


def _search_setting(n: int, dim: int, nlist: int, nprobe: int | None, device: str,
                    notes: list[str]) -> tuple[int, int]:
    """Default nprobe (the user's, else default_nprobe; at most nlist, and at most the GPU's limit on
    cuda) and the re-rank depth that goes with it."""
    probe = int(min(nprobe, nlist)) if nprobe else default_nprobe(nlist, dim)
    if device == "cuda" and probe > GPU_MAX_NPROBE:
        probe = GPU_MAX_NPROBE
        notes.append(f"nprobe capped at {GPU_MAX_NPROBE} (FAISS GPU limit)")
    return probe, default_rerank_candidates(dim, n, nlist, probe)


def choose_index(
    n: int,
    dim: int,
    memory_budget: float | None = None,
    rerank: bool | None = None,
    device: str = "cpu",
    factory: str | None = None,
    nprobe: int | None = None,
    flat_max: int = FLAT_MAX_VECTORS,
    train_per_centroid: int = DEFAULT_TRAIN_PER_CENTROID,
) -> IndexChoice:
    """Pick the index for `n` vectors of dimension `dim` (inner product), and say why.

    memory_budget: bytes per vector the in-RAM index may use (codes + 8-byte id); None = no limit.
    device: "cpu" or "cuda" (resolved already: GPU indexes have no fast-scan PQ).
    """
    if n <= 0:
        raise ValueError("cannot choose an index for an empty gallery")
    if dim <= 0:
        raise ValueError(f"bad dimension {dim}")
    if memory_budget is not None and memory_budget <= ID_BYTES:
        raise ValueError(
            f"--memory-budget {memory_budget:g} bytes per vector is too small: the id alone takes {ID_BYTES}"
        )
    notes: list[str] = []

    if factory:
        nlist = None
        m = re.match(r"(?:IDMap2?,)?(?:\w+,)*?IVF(\d+)", factory)
        if m:
            nlist = int(m.group(1))
        rr = rerank_default_for_factory(factory) if rerank is None else rerank
        # without inverted lists the codes a query scans are unknown: the plain default depth
        probe: int | None = None
        depth = DEFAULT_RERANK_CANDIDATES
        if nlist:
            probe, depth = _search_setting(n, dim, nlist, nprobe, device, notes)
        return IndexChoice(
            kind="custom",
            factory=factory,
            dim=dim,
            n=n,
            nlist=nlist,
            train_size=train_size_for(nlist, n, train_per_centroid) if nlist else min(n, 100_000),
            nprobe=probe,
            rerank=rr,
            rerank_candidates=depth,
            reason=f"--factory {factory} given by the user (automatic choice skipped)",
            notes=notes,
        )

    flat_bytes = 4 * dim + ID_BYTES
    fits_flat = memory_budget is None or flat_bytes <= memory_budget
    if n < flat_max and fits_flat:
        if rerank:
            notes.append("re-ranking ignored: a flat index is already exact")
        return IndexChoice(
            kind="flat",
            factory="IDMap2,Flat",
            dim=dim,
            n=n,
            bytes_per_vector=float(flat_bytes),
            rerank=False,
            reason=(
                f"{n:,} faces < {flat_max:,}: an exact flat index is exact, needs no training and scans "
                f"{n:,} x {dim}-d vectors in about a millisecond; IVF would need >= "
                f"{MIN_TRAIN_PER_CENTROID} training points for each of >= 4*sqrt(N) lists"
            ),
            notes=notes,
        )

    max_code = (memory_budget - ID_BYTES) if memory_budget is not None else float(dim * 4)
    pq_m, nbits, fast_scan, code_bytes = _pq_layout(dim, max_code, device)
    rr = True if rerank is None else bool(rerank)
    pq_desc = (
        f"PQ {pq_m}x{nbits}-bit{' fast-scan' if fast_scan else ''} = {code_bytes} B/vector"
        f" ({dim // pq_m} dims per sub-quantizer)"
    )
    budget_desc = f", budget {memory_budget:g} B/vector" if memory_budget is not None else ""
    if code_bytes < _target_code_bytes(dim):
        notes.append(f"codes shrunk to {code_bytes} B by the memory budget: expect lower raw recall")

    if n < flat_max:
        # small gallery but a budget below the flat size: exhaustive PQ, no coarse quantizer to train
        return IndexChoice(
            kind="pq",
            factory=f"IDMap2,{_pq_factory(pq_m, nbits, fast_scan)}",
            dim=dim,
            n=n,
            pq_m=pq_m,
            pq_nbits=nbits,
            fast_scan=fast_scan,
            bytes_per_vector=float(code_bytes + ID_BYTES),
            train_size=min(n, 65_536),
            rerank=rr,
            rerank_candidates=default_rerank_candidates(dim, n),
            reason=(
                f"{n:,} faces < {flat_max:,} but flat needs {flat_bytes} B/vector{budget_desc}: exhaustive "
                f"{pq_desc}, re-ranked exactly" + ("" if rr else " (re-ranking off)")
            ),
            notes=notes,
        )

    nlist = choose_nlist(n)
    probe, depth = _search_setting(n, dim, nlist, nprobe, device, notes)
    large = n >= LARGE_IVF_VECTORS and device != "cuda"
    quantizer = f"_HNSW{HNSW_QUANTIZER_M}" if large else ""
    factory = f"IVF{nlist}{quantizer},{_pq_factory(pq_m, nbits, fast_scan)}"
    coarse_desc = (
        f"; coarse quantizer: HNSW{HNSW_QUANTIZER_M} over the centroids, trained by two-level k-means "
        f"({int(math.isqrt(nlist))} x ~{nlist // max(1, int(math.isqrt(nlist)))} lists: a flat k-means and "
        "flat assignment would take tens of minutes on a few cores)"
        if large
        else ""
    )
    why_pq = (
        "4-bit fast-scan (faster than 8-bit PQ of the same size on CPU)"
        if fast_scan
        else ("8-bit PQ (GPU has no fast-scan)" if device == "cuda" else "8-bit PQ (dimension rules out 4-bit)")
    )
    return IndexChoice(
        kind="ivfpq",
        factory=factory,
        dim=dim,
        n=n,
        nlist=nlist,
        pq_m=pq_m,
        pq_nbits=nbits,
        fast_scan=fast_scan,
        bytes_per_vector=float(code_bytes + ID_BYTES),
        train_size=train_size_for(nlist, n, train_per_centroid),
        nprobe=probe,
        rerank=rr,
        rerank_candidates=depth,
        reason=(
            f"{n:,} faces >= {flat_max:,}: IVF-PQ with nlist {nlist} (4*sqrt(N) = {4 * math.sqrt(n):.0f}, "
            f"range 4..16*sqrt(N)), {pq_desc}, {why_pq}{budget_desc}{coarse_desc}; "
            + (
                f"nprobe {probe}; exact re-ranking of the top {depth} candidates from the "
                "on-disk vectors "
                "(PQ alone caps recall@1 well below 1)"
                if rr
                else "re-ranking off (raw PQ scores)"
            )
        ),
        notes=notes,
        coarse_training="two-level" if large else "kmeans",
    )
