"""Open a gallery's index for search: memory-mapped where faiss supports it, deleted faces filtered.

`LoadedIndex.search(queries, k)` returns (scores, ids) like faiss, best first, padded with
(-inf, -1) when fewer than k faces exist. Ids deleted in SQLite never come back, even before the index
is rebuilt: the deleted set is re-read whenever SQLite reports a commit by another connection
(`PRAGMA data_version`, a few microseconds per search call), and the search over-fetches
(k + the number of deleted ids, retried wider for any query that still falls short).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from gallery.errors import DamagedData
from gallery.store import Gallery
from gallery.store.queries import DeletedIds
from gallery.store.shards import file_sha256
from indexer import gpu
from indexer.choose import (
    HNSW_QUANTIZER_ADD_EF_SEARCH,
    HNSW_QUANTIZER_EF_CONSTRUCTION,
    HNSW_QUANTIZER_EF_SEARCH,
)
from indexer.manifest import Manifest, check_model, read_manifest
from indexer.vectors import VectorFile, is_deleted

RERANK_QUERY_CHUNK = 256
ROW_NORM_TOLERANCE = 2e-3  # |squared norm - 1| of a stored unit vector (float32 rounding is ~1e-7)
DAMAGED_ROWS = "the index's re-rank file holds damaged rows"
EXACT_FALLBACK_MAX_BYTES = 2 << 30  # a damaged index is replaced by an exact scan up to this many vector bytes
ExactReader = Callable[[np.ndarray], dict[int, np.ndarray]]
_VERIFIED: dict[tuple[str, int, int], bool] = {}  # (index file, size, mtime) -> its checksum matched


def _bounded(scores: np.ndarray) -> np.ndarray:
    """Scores are cosines of unit vectors: never outside [-1, 1] (compressed codes can overshoot a
    little); the -inf of a missing result stays."""
    finite = np.isfinite(scores)
    scores[finite] = np.clip(scores[finite], -1.0, 1.0)
    return scores


class LoadedIndex:
    """A gallery index ready for k-NN search (CPU, memory-mapped; or on GPU(s) after `to_gpu`)."""

    def __init__(self, root: Path, manifest: Manifest, index: Any, vectors: VectorFile | None, mmap_mode: str,
                 deleted: DeletedIds) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.index = index
        self.vectors = vectors
        self.mmap_mode = mmap_mode
        self.dim = int(manifest["dim"])
        self.nprobe = manifest.get("nprobe")
        self.rerank = vectors is not None
        self.rerank_candidates = int((manifest.get("rerank") or {}).get("candidates") or 100)
        self._deleted = deleted
        try:
            self._ivf = faiss.extract_index_ivf(index)
        except RuntimeError:
            self._ivf = None
        self._ivf_top = self._ivf is not None and isinstance(faiss.downcast_index(index), faiss.IndexIVF)
        self._gpu: gpu.GpuSearcher | None = None
        self._ntotal = int(index.ntotal)  # immutable while loaded: cached (a SWIG call costs ~20 us)
        self._params: dict[int, Any] = {}
        self.warnings: list[str] = []  # damage found while loading or searching: said with every answer
        self._exact: ExactReader | None = None  # reads a face's vector from its shard (set by load_index)
        self._damaged_rows: set[int] = set()  # re-rank rows found damaged (each read from its shard instead)

    # --- properties -------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return self._ntotal

    @property
    def factory(self) -> str:
        return str(self.manifest["factory"])

    @property
    def max_face_id(self) -> int:
        return int(self.manifest["max_face_id"])

    def deleted_ids(self) -> np.ndarray:
        return self._deleted.get()

    def to_gpu(self, all_gpus: bool = False) -> LoadedIndex:
        """Search on one GPU, or sharded over all GPUs (all_gpus=True). Not run by the CPU-only tests."""
        self._gpu = gpu.GpuSearcher(self.index, all_gpus=all_gpus)
        return self

    def close(self) -> None:
        self._deleted.close()
        self._gpu = None

    def __enter__(self) -> LoadedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- search -----------------------------------------------------------------------------

    def _raw_search(self, q: np.ndarray, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        if self._gpu is not None:
            return self._gpu.search(q, k, nprobe)
        if self._ivf is None or nprobe is None:
            return self.index.search(q, k)
        nprobe = int(max(1, min(nprobe, self._ivf.nlist)))
        if self._ivf_top:
            params = self._params.get(nprobe)
            if params is None:
                params = self._params.setdefault(nprobe, faiss.SearchParametersIVF(nprobe=nprobe))
            return self.index.search(q, k, params=params)
        self._ivf.nprobe = nprobe  # wrapped IVF (e.g. pre-transform): set on the IVF itself
        return self.index.search(q, k)

    def _live_candidates(self, q: np.ndarray, want: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the first `want` live results per query, padded with (-inf, -1)."""
        deleted = self._deleted.get()
        cap = self.ntotal if self._gpu is None else min(self.ntotal, gpu.GPU_MAX_K)
        want = min(want, cap)
        fetch = min(cap, want + min(int(deleted.size), want))
        n = q.shape[0]
        out_d = np.full((n, want), -np.inf, dtype=np.float32)
        out_i = np.full((n, want), -1, dtype=np.int64)
        rows = np.arange(n)
        while rows.size:
            dist, lab = self._raw_search(q[rows], fetch, nprobe)
            live = lab >= 0
            if deleted.size:
                live &= ~is_deleted(lab, deleted)
            if fetch == want and live.all():  # the common case: nothing to filter or pad
                out_d[rows] = dist
                out_i[rows] = lab
                break
            order = np.argsort(~live, axis=1, kind="stable")[:, :want]
            Dc = np.take_along_axis(dist, order, axis=1)
            Ic = np.take_along_axis(lab, order, axis=1)
            Lc = np.take_along_axis(live, order, axis=1)
            Dc[~Lc] = -np.inf
            Ic[~Lc] = -1
            out_d[rows, : Dc.shape[1]] = Dc
            out_i[rows, : Ic.shape[1]] = Ic
            # a query is short when it has < want live results although its list was full (no -1 pad)
            short = (Lc.sum(axis=1) < want) & (lab[:, -1] >= 0)
            if fetch >= cap or not short.any():
                break
            rows = rows[short]
            fetch = min(cap, fetch * 2)
        return out_d, out_i

    def search(
        self,
        queries: np.ndarray,
        k: int,
        nprobe: int | None = None,
        rerank: bool | None = None,
        candidates: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores float32 (n, k), ids int64 (n, k)) by inner product, best first.

        nprobe: lists to visit (default: the manifest's). rerank: exact re-scoring of the top
        `candidates` PQ results with the stored float vectors (default: on when the index has them;
        candidates default max(manifest candidates, 10*k)). Deleted faces are never returned.
        """
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}) float32, got shape {q.shape}")
        k = int(k)
        if k <= 0:
            raise ValueError("k must be >= 1")
        n = q.shape[0]
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        ids = np.full((n, k), -1, dtype=np.int64)
        if n == 0 or self.ntotal == 0:
            return scores, ids
        nprobe = nprobe if nprobe is not None else self.nprobe
        use_rerank = self.rerank if rerank is None else (bool(rerank) and self.vectors is not None)
        if not use_rerank:
            dist, lab = self._live_candidates(q, k, nprobe)
            scores[:, : dist.shape[1]] = dist
            ids[:, : lab.shape[1]] = lab
            return _bounded(scores), ids
        want = max(k, candidates or max(self.rerank_candidates, 10 * k))
        dist, lab = self._live_candidates(q, want, nprobe)
        assert self.vectors is not None
        for s in range(0, n, RERANK_QUERY_CHUNK):
            Ib = lab[s : s + RERANK_QUERY_CHUNK]
            vecs = self.vectors.take(Ib)  # (b, want, dim)
            self._mend_rows(Ib, vecs)
            exact = np.einsum("bkd,bd->bk", vecs, q[s : s + RERANK_QUERY_CHUNK])
            exact[(Ib < 0) | ~np.isfinite(exact)] = -np.inf
            order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
            kk = order.shape[1]
            scores[s : s + RERANK_QUERY_CHUNK, :kk] = np.take_along_axis(exact, order, axis=1)
            ids[s : s + RERANK_QUERY_CHUNK, :kk] = np.take_along_axis(Ib, order, axis=1)
        ids[~np.isfinite(scores)] = -1
        return _bounded(scores), ids

    def _mend_rows(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Every re-rank row read is checked (finite, unit length: a few percent of the scoring's cost):
        a zero, garbled or truncated row is never a score. Its face is read exactly from its shard
        instead (a zero row where no face is left is a deleted face: no score), and the answer warns."""
        sq = np.einsum("bkd,bkd->bk", vecs, vecs)
        bad = (ids >= 0) & ~(np.abs(sq - 1.0) <= ROW_NORM_TOLERANCE)
        if not bad.any():
            return
        wanted = np.unique(ids[bad])
        found = self._exact(wanted) if self._exact is not None else {}
        for b, j in zip(*np.nonzero(bad)):
            vec = found.get(int(ids[b, j]))
            vecs[b, j] = vec if vec is not None else np.nan  # nan: scored -inf, never served
        new = set(int(i) for i in wanted) - self._damaged_rows
        if new:
            self._damaged_rows |= new
            self.warnings[:] = [w for w in self.warnings if not w.startswith(DAMAGED_ROWS)]
            self.warnings.append(f"{DAMAGED_ROWS} ({len(self._damaged_rows):,} faces so far): they were scored from "
                                 f"their shards instead. Run: gallery repair --gallery {self.root}")


def as_gallery(gallery: Gallery | str | Path) -> tuple[Gallery, bool]:
    """(Gallery, owned): a path is opened here (and must be closed by the caller when owned)."""
    if isinstance(gallery, Gallery):
        return gallery, False
    return Gallery.open(gallery), True


def hnsw_quantizer(index: Any) -> Any | None:
    """The HNSW coarse quantizer of an IVF index (the large-gallery choice), or None."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    quantizer = faiss.downcast_index(ivf.quantizer)
    return quantizer if isinstance(quantizer, faiss.IndexHNSW) else None


def tune_hnsw_quantizer(index: Any, for_adding: bool = False, searched_with: int | None = None) -> int | None:
    """Set the HNSW coarse quantizer's search breadth (no-op for other indexes); return the efSearch
    it replaced (None without an HNSW quantizer).

    Searching: efSearch at least HNSW_QUANTIZER_EF_SEARCH. An index saved with faiss' default of 16
    loses recall that no nprobe gets back; this runs at build, update and every load, so indexes built
    before the setting existed are searched correctly too. A larger value set by hand is kept; after an
    add, pass the value returned before it as searched_with so the add's setting does not replace it.
    Adding (for_adding=True): faiss' default 16, which already puts 98% of vectors in their exact
    nearest list (the rest land in a neighbouring one, which the search probes); 128 made the add of
    10M faces three times slower. An empty graph also gets efConstruction
    HNSW_QUANTIZER_EF_CONSTRUCTION (a better graph over the centroids costs well under a second)."""
    quantizer = hnsw_quantizer(index)
    if quantizer is None:
        return None
    previous = int(quantizer.hnsw.efSearch)
    if for_adding:
        quantizer.hnsw.efSearch = HNSW_QUANTIZER_ADD_EF_SEARCH
    else:
        quantizer.hnsw.efSearch = max(int(searched_with or previous), HNSW_QUANTIZER_EF_SEARCH)
    if quantizer.ntotal == 0:
        quantizer.hnsw.efConstruction = max(int(quantizer.hnsw.efConstruction), HNSW_QUANTIZER_EF_CONSTRUCTION)
    return previous


def _read_index(path: Path, mmap: bool) -> tuple[Any, str]:
    if mmap:
        attempts = []
        if hasattr(faiss, "IO_FLAG_MMAP_IFC"):
            attempts.append(("mmap_ifc", faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY))
        attempts.append(("mmap", faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY))
        for mode, flags in attempts:
            try:
                return faiss.read_index(str(path), flags), mode
            except RuntimeError:
                continue
    return faiss.read_index(str(path)), "read"


def index_file_intact(path: Path, sha256: str | None) -> bool:
    """True when the index file's sha256 is the one its manifest recorded (or none was recorded: an
    index written before checksums). Hashed once per file, size and mtime in a process."""
    if not sha256:
        return True
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = file_sha256(path) == sha256
    return _VERIFIED[key]


def _exact_scan(g: Gallery, manifest: Manifest) -> Any:
    """An exact inner-product index over the live faces of the shards the damaged index covered: the
    answers stay right until `gallery repair` rebuilds the index (refused past EXACT_FALLBACK_MAX_BYTES)."""
    dim = int(manifest["dim"])
    covered = set(manifest.get("shards") or [])
    rows = [r for r in g.shard_rows() if r.shard_id in covered]
    if sum(r.n_faces for r in rows) * dim * 4 > EXACT_FALLBACK_MAX_BYTES:
        raise DamagedData(f"The index of gallery '{g.root}' is damaged (its checksum does not match) and the "
                          f"gallery is too large to scan exactly instead. Run: gallery repair --gallery {g.root}")
    deleted = g.deleted_ids()
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    for ids, x in g.iter_embeddings(rows):
        keep = ~is_deleted(ids, deleted)
        index.add_with_ids(np.ascontiguousarray(x[keep]), ids[keep])
    return index


def _shard_reader(g: Gallery, owned: bool) -> ExactReader:
    """Reads faces' vectors from their shards (for damaged re-rank rows): {face id: vector} of the live
    faces whose shard is intact. A gallery the caller passed is used as is; a path is opened per call."""
    root = g.root

    def read(ids: np.ndarray) -> dict[int, np.ndarray]:
        gallery = Gallery.open(root) if owned else g
        try:
            live = sorted(set(int(i) for i in ids) - set(int(i) for i in gallery.deleted_ids()))
            try:
                return dict(zip(live, gallery.read_embeddings(live)))
            except (KeyError, DamagedData):
                pass
            out: dict[int, np.ndarray] = {}
            for i in live:  # one at a time: the faces whose shard is intact still get their score
                try:
                    out[i] = gallery.read_embeddings([i])[0]
                except (KeyError, DamagedData):
                    continue  # no face row, or its shard is damaged too: no score
            return out
        finally:
            if owned:
                gallery.close()

    return read


def load_index(gallery: Gallery | str | Path, mmap: bool = True) -> LoadedIndex:
    """Open the current index of a gallery for search (raises NoIndexError when there is none).

    mmap=True maps the index file (faiss IO_FLAG_MMAP_IFC / IO_FLAG_MMAP, read-only) so that opening a
    large index is fast and its pages are shared between processes; the loaded index must then not be
    modified (build/update/remove work on their own copy).
    """
    g, owned = as_gallery(gallery)
    try:
        for attempt in range(3):
            manifest = read_manifest(g.index_dir, g.root)
            check_model(manifest, g.model_stamp, g.root)
            path = g.index_dir / manifest["index_file"]
            try:
                # checked before faiss reads it: a garbled file is never searched (nor parsed)
                intact = index_file_intact(path, manifest.get("index_sha256"))
                if intact:
                    index, mode = _read_index(path, mmap)
                    tune_hnsw_quantizer(index)
                else:
                    index, mode = _exact_scan(g, manifest), "exact-scan"
                rerank = manifest.get("rerank") or {}
                vectors = (
                    VectorFile(g.index_dir / rerank["file"], int(manifest["dim"])) if rerank.get("enabled") else None
                )
            except (OSError, RuntimeError, ValueError) as exc:
                # a concurrent build switched the manifest and removed the old files: read it again
                if attempt == 2:
                    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                    raise DamagedData(
                        f"The index of gallery '{g.root}' cannot be read ({first}). Rebuild it: "
                        f"gallery index build --gallery {g.root}"
                    ) from None
                time.sleep(0.05)
                continue
            warnings: list[str] = []
            if not intact:
                vectors = None
                warnings.append(f"the index file {path.name} is damaged (its checksum does not match): answered by "
                                f"an exact scan of the shards instead. Run: gallery repair --gallery {g.root}")
            elif vectors is not None and vectors.rows * vectors.dim * 4 < int(rerank.get("bytes") or 0):
                warnings.append(f"the index's re-rank file {vectors.path.name} is shorter than recorded: the faces "
                                f"past its end are scored from their shards. Run: gallery repair --gallery {g.root}")
            loaded = LoadedIndex(g.root, manifest, index, vectors, mode, g.watch_deleted(int(manifest["max_face_id"])))
            loaded.warnings += warnings
            loaded._exact = _shard_reader(g, owned)
            return loaded
        raise AssertionError("unreachable")
    finally:
        if owned:
            g.close()
