"""Everything GPU-specific, in one place. UNTESTED on a GPU: written from the faiss wiki ("Faiss on the
GPU") and faiss/benchs/bench_gpu_1bn.py; this project's machines have faiss-cpu only.

FAISS GPU limits respected here:
- GpuIndexIVFPQ has no 4-bit fast-scan; codes are 8-bit with sizes in choose.GPU_PQ_BYTES;
- the PQ lookup table (M sub-quantizers x 256 x 4 bytes) must fit 48 KiB of shared memory, otherwise
  float16 lookup tables are needed (d=512 PQ64: 64 KiB in float32 -> useFloat16 = True);
- k and nprobe are at most 2048;
- temporary memory is reserved up front by StandardGpuResources (setTempMemory), and vectors are added
  in chunks; a very large build is flushed from the GPU into the CPU index every `max_gpu_vectors`.

Building: the coarse quantizer is trained with faiss.Clustering on a GPU flat index (the expensive
k-means), the PQ codebooks on the CPU (cheap), then the trained index is cloned to the GPU, vectors are
added in chunks, and a CPU copy (index_gpu_to_cpu) is what gets saved.
"""

from __future__ import annotations

import faiss
import numpy as np

from gallery.device import faiss_gpus
from gallery.errors import GpuUnavailableError, IndexerError
from indexer.choose import GPU_MAX_NPROBE  # one definition: choose caps the stored default too

GPU_MAX_K = 2048
SHARED_MEMORY_BYTES = 48 * 1024
ADD_CHUNK = 1 << 18
DEFAULT_MAX_GPU_VECTORS = 50_000_000


def has_gpu_support() -> bool:
    return faiss_gpus() > 0


def make_resources(temp_memory_bytes: int | None = None):
    """One StandardGpuResources per GPU user; temp memory reserved up front (None: faiss' default)."""
    res = faiss.StandardGpuResources()
    if temp_memory_bytes is not None:
        res.setTempMemory(int(temp_memory_bytes))
    return res


def _ivfpq(index):
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    ivf = faiss.downcast_index(ivf)
    return ivf if isinstance(ivf, faiss.IndexIVFPQ) else None


def needs_float16_lookup(index) -> bool:
    """True when the IVF-PQ lookup table (M x 2^nbits float32) would exceed 48 KiB of shared memory."""
    ivfpq = _ivfpq(index)
    if ivfpq is None:
        return False
    return ivfpq.pq.M * (1 << ivfpq.pq.nbits) * 4 > SHARED_MEMORY_BYTES


def cloner_options(index, multiple: bool = False, shard: bool = True, reserve_vecs: int = 0):
    co = faiss.GpuMultipleClonerOptions() if multiple else faiss.GpuClonerOptions()
    # for GpuIndexIVFPQ, useFloat16 = float16 lookup tables (GpuIndexIVFPQConfig.useFloat16LookupTables)
    co.useFloat16 = needs_float16_lookup(index)
    co.useFloat16CoarseQuantizer = False
    co.usePrecomputed = False
    co.indicesOptions = faiss.INDICES_64_BIT
    if reserve_vecs:
        co.reserveVecs = int(reserve_vecs)
    if multiple:
        co.shard = shard
    return co


def _unsupported(index, err: Exception) -> IndexerError:
    name = type(faiss.downcast_index(index)).__name__
    return IndexerError(
        f"this index ({name}) has no GPU implementation ({err}). Rebuild it for the GPU with: "
        "gallery index build --gallery DIR --device cuda (that picks 8-bit IVF-PQ)."
    )


def train_on_gpu(index, train_x: np.ndarray, seed: int = 0, temp_memory_bytes: int | None = None) -> None:
    """Train `index` (a CPU index, left on the CPU): coarse k-means on the GPU, the rest on the CPU."""
    res = make_resources(temp_memory_bytes)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is not None and (not ivf.quantizer.is_trained or ivf.quantizer.ntotal == 0):
        d = ivf.d
        cp = faiss.ClusteringParameters()
        cp.niter = ivf.cp.niter
        cp.seed = seed
        cp.max_points_per_centroid = max(int(ivf.cp.max_points_per_centroid), 256)
        clus = faiss.Clustering(d, ivf.nlist, cp)
        if ivf.metric_type == faiss.METRIC_INNER_PRODUCT:
            gpu_flat = faiss.GpuIndexFlatIP(res, d)
        else:
            gpu_flat = faiss.GpuIndexFlatL2(res, d)
        clus.train(np.ascontiguousarray(train_x, dtype=np.float32), gpu_flat)
        centroids = faiss.vector_float_to_array(clus.centroids).reshape(ivf.nlist, d)
        ivf.quantizer.reset()
        ivf.quantizer.add(centroids)
        del gpu_flat
    # IndexIVF.train skips a quantizer that already holds nlist centroids: this trains the codes only
    index.train(np.ascontiguousarray(train_x, dtype=np.float32))


class GpuAdder:
    """Adds (ids, vectors) batches through a GPU clone of a trained CPU index; `finish()` returns the CPU
    index holding everything. Index types without a GPU version are added on the CPU."""

    def __init__(
        self,
        cpu_index,
        expected_n: int = 0,
        temp_memory_bytes: int | None = None,
        max_gpu_vectors: int | None = None,
    ) -> None:
        self.cpu_index = cpu_index
        self.max_gpu_vectors = int(max_gpu_vectors or DEFAULT_MAX_GPU_VECTORS)
        self.res = make_resources(temp_memory_bytes)
        reserve = min(expected_n, self.max_gpu_vectors)
        try:
            self.gpu_index = faiss.index_cpu_to_gpu(
                self.res, 0, cpu_index, cloner_options(cpu_index, reserve_vecs=reserve)
            )
            self.on_gpu = True
        except Exception:  # no GPU version (e.g. fast-scan PQ): add on the CPU
            self.gpu_index = None
            self.on_gpu = False

    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        if not self.on_gpu:
            self.cpu_index.add_with_ids(x, ids)
            return
        for s in range(0, len(ids), ADD_CHUNK):
            self.gpu_index.add_with_ids(x[s : s + ADD_CHUNK], ids[s : s + ADD_CHUNK])
        if self.gpu_index.ntotal >= self.max_gpu_vectors:
            self._flush()

    def _flush(self) -> None:
        part = faiss.index_gpu_to_cpu(self.gpu_index)
        # same trained quantizer and codebooks: move the GPU's inverted lists into the CPU index
        faiss.extract_index_ivf(self.cpu_index).merge_from(faiss.extract_index_ivf(part), 0)
        self.cpu_index.ntotal = faiss.extract_index_ivf(self.cpu_index).ntotal
        self.gpu_index.reset()

    def finish(self):
        if self.on_gpu and self.gpu_index.ntotal > 0:
            self._flush()
        self.gpu_index = None
        return self.cpu_index


class GpuSearcher:
    """A CPU index placed on one GPU or sharded over all of them (GpuMultipleClonerOptions.shard=True)."""

    def __init__(self, cpu_index, all_gpus: bool = False, temp_memory_bytes: int | None = None) -> None:
        if not has_gpu_support():
            raise GpuUnavailableError("no GPU available to faiss: search on the CPU (device='cpu')")
        self.resources = []
        try:
            if all_gpus and faiss_gpus() > 1:
                co = cloner_options(cpu_index, multiple=True, shard=True)
                self.index = faiss.index_cpu_to_all_gpus(cpu_index, co=co)
            else:
                res = make_resources(temp_memory_bytes)
                self.resources.append(res)
                self.index = faiss.index_cpu_to_gpu(res, 0, cpu_index, cloner_options(cpu_index))
        except GpuUnavailableError:
            raise
        except Exception as err:
            raise _unsupported(cpu_index, err) from err
        self.params = faiss.GpuParameterSpace()
        self.params.initialize(self.index)
        self._nprobe: int | None = None

    def search(self, queries: np.ndarray, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        k = min(int(k), GPU_MAX_K)
        if nprobe is not None:
            nprobe = min(int(nprobe), GPU_MAX_NPROBE)
            if nprobe != self._nprobe:
                self.params.set_index_parameter(self.index, "nprobe", nprobe)
                self._nprobe = nprobe
        return self.index.search(queries, k)
