"""Build, update and prune a gallery's FAISS index, streaming the Parquet shards.

Memory during a build: the training sample (train_size x D float32), one shard batch, the growing index
(codes + ids, ~72 B per face with the default 512-d choice) and faiss' working buffers. The float
vectors for re-ranking go to a file on disk as they stream by; nothing holds all vectors at once.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from gallery.device import resolve_index_device
from gallery.errors import EmptyGalleryError, IndexerError, IndexMismatchError, IndexOutgrownWarning
from gallery.fsutil import atomic_write
from gallery.progress import ProgressFn, report
from gallery.store import Gallery, ShardRow
from gallery.store.shards import file_sha256
from indexer import gpu
from indexer.choose import (
    DEFAULT_TRAIN_PER_CENTROID,
    FLAT_MAX_VECTORS,
    IndexChoice,
    choose_index,
)
from indexer.loaded import as_gallery, tune_hnsw_quantizer
from indexer.manifest import (
    MANIFEST_VERSION,
    Manifest,
    check_model,
    cleanup_unreferenced,
    index_lock,
    new_tag,
    read_manifest,
    write_manifest,
)
from indexer.memory import PeakMemory
from indexer.vectors import VectorFileWriter, is_deleted, sample_vectors

READ_BATCH_ROWS = 65536  # shard rows streamed per batch while building
OUTGROWN_FACTOR = 4


def _add_batch(index: Any, ids: np.ndarray, x: np.ndarray) -> None:
    """Add one streamed batch (module-level so that tests can make a build fail midway)."""
    index.add_with_ids(x, ids)


def _make_index(choice: IndexChoice, seed: int) -> Any:
    try:
        index = faiss.index_factory(choice.dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        raise IndexerError(f"faiss cannot build factory '{choice.factory}': {first}") from None
    ivf = _ivf_of(index)
    if ivf is None and not isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        # add_with_ids needs an id map on top of anything that is not IVF
        wrapped = faiss.IndexIDMap2(index)
        wrapped.own_fields = True
        index.this.disown()
        index = wrapped
    if ivf is not None:
        ivf.cp.seed = seed
        if choice.nprobe:
            ivf.nprobe = int(choice.nprobe)
        tune_hnsw_quantizer(index, for_adding=True)
    inner = faiss.downcast_index(ivf if ivf is not None else _base_of(index))
    pq = getattr(inner, "pq", None)
    if pq is not None:
        pq.cp.seed = seed
    return index


def _train_two_level(index: Any, x_train: np.ndarray, seed: int) -> None:
    """Coarse centroids by two-level k-means (sqrt(nlist) clusters, then each split in proportion to
    its size: faiss.contrib.clustering), normalised (inner product on unit vectors), put into the
    quantizer; then faiss trains the rest (PQ on the residuals) with the quantizer already full."""
    from faiss.contrib.clustering import two_level_clustering

    ivf = _ivf_of(index)
    nc1 = max(1, int(np.sqrt(ivf.nlist)))
    centroids, _ = two_level_clustering(x_train, nc1, int(ivf.nlist), rebalance=True, clustering_niter=10,
                                        seed=seed, spherical=True)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    faiss.normalize_L2(centroids)
    ivf.quantizer.reset()
    ivf.quantizer.add(centroids)
    ivf.quantizer.is_trained = True
    index.train(x_train)  # IndexIVF skips the coarse training: quantizer trained with nlist centroids


def _base_of(index: Any) -> Any:
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return index.index
    return index


def _ivf_of(index: Any) -> Any | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _save_index(index: Any, path: Path) -> tuple[int, str]:
    """Write the index file atomically; returns its size and sha256 (recorded in the manifest, checked
    when the file is loaded: a garbled index is never searched)."""
    size = atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))
    return size, file_sha256(path)


def _outgrown_warnings(manifest: dict, gallery_root: Path) -> list[str]:
    kind = manifest.get("kind_of_index")
    ntotal = int(manifest["ntotal"])
    trained_n = int((manifest.get("training") or {}).get("trained_for_n") or 0)
    cmd = f"gallery index build --gallery {gallery_root}"
    out = []
    if kind in ("flat", "pq") and ntotal >= FLAT_MAX_VECTORS:
        out.append(
            f"The index is an exhaustive {kind} index over {ntotal:,} faces (>= {FLAT_MAX_VECTORS:,}): "
            f"searches now scan everything; rebuild to get IVF-PQ: {cmd}"
        )
    elif manifest.get("nlist") and trained_n and ntotal >= OUTGROWN_FACTOR * trained_n:
        out.append(
            f"The gallery outgrew the index: its coarse quantizer ({manifest['nlist']} lists) was trained "
            f"for {trained_n:,} faces and the index now holds {ntotal:,} ({ntotal / trained_n:.1f}x); lists "
            f"get long and searches slow down or lose recall. Rebuild (retrains): {cmd}"
        )
    return out


def _stream_add(
    g: Gallery,
    target: Any,
    shards: list[ShardRow],
    dim: int,
    deleted: np.ndarray,
    writer: VectorFileWriter | None,
    read_batch_rows: int,
    on_progress: ProgressFn | None,
    total: int | None,
    above_id: int = 0,
) -> tuple[int, int]:
    """Add every live face of `shards` with an id above `above_id` to `target` (an index or a GpuAdder)
    and to the re-rank file; returns (faces added, highest id seen). The re-rank file is closed
    (fsynced on success, left for clean-up on failure)."""
    added = 0
    max_id = above_id
    try:
        for ids, x in g.iter_embeddings(shards, read_batch_rows):
            if x.shape[1] != dim:
                raise IndexMismatchError(f"a shard holds {x.shape[1]}-d embeddings but the gallery model is {dim}-d")
            if ids.size:
                max_id = max(max_id, int(ids.max()))
            keep = ids > above_id
            if deleted.size:
                keep &= ~is_deleted(ids, deleted)
            ids, x = ids[keep], x[keep]
            if ids.size == 0:
                continue
            if isinstance(target, gpu.GpuAdder):
                target.add(ids, x)
            else:
                _add_batch(target, ids, x)
            if writer is not None:
                writer.write(ids, x)
            added += int(ids.size)
            report(on_progress, "add", added, total)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.close(fsync=False)
        raise
    return added, max_id


def _commit(g: Gallery, manifest: Manifest, new_files: list[str | None], kind: str) -> None:
    """Switch to `manifest` (the commit point), then delete unreferenced files and record the build.
    If the switch fails, the new files are removed and the previous index stays current."""
    try:
        manifest["warnings"] = _outgrown_warnings(manifest, g.root)
        write_manifest(g.index_dir, manifest)
    except BaseException:
        for name in new_files:
            if name:
                (g.index_dir / name).unlink(missing_ok=True)
        raise
    cleanup_unreferenced(g.index_dir, manifest)
    g.record_index_build(kind, dict(manifest), g.index_dir / manifest["index_file"])


# --- build -------------------------------------------------------------------------------------


def build_index(
    gallery: Gallery | str | Path,
    *,
    factory: str | None = None,
    memory_budget: float | None = None,
    rerank: bool | None = None,
    device: str = "auto",
    nprobe: int | None = None,
    seed: int = 0,
    read_batch_rows: int = READ_BATCH_ROWS,
    train_per_centroid: int = DEFAULT_TRAIN_PER_CENTROID,
    on_progress: ProgressFn | None = None,
) -> Manifest:
    """Choose, train and fill an index over every live face of the gallery; returns the manifest.

    factory: any faiss index_factory string (inner product) instead of the automatic choice.
    memory_budget: bytes per vector for the in-RAM index (codes + id). rerank: None = on where it pays
    (compressed indexes). device: auto | cpu | cuda. nprobe: default nprobe stored in the manifest.
    The previous index stays in place and usable until the new one is complete (atomic switch).
    """
    g, owned = as_gallery(gallery)
    try:
        with index_lock(g.index_dir):
            g.check_database()
            choice_args = dict(factory=factory, memory_budget=memory_budget, rerank=rerank, nprobe=nprobe,
                               train_per_centroid=train_per_centroid)
            return build_locked(g, choice_args, device, seed, read_batch_rows, on_progress)
    finally:
        if owned:
            g.close()


class _ErasedMeanwhile(Exception):
    """Faces were erased while the index was built, and its type cannot remove them: build again."""


def _exclude_erased_meanwhile(g: Gallery, index: Any, vectors: Path | None, dim: int, max_id: int,
                              excluded: np.ndarray) -> int:
    """The commit-time re-check: faces erased after the build read its list of faces (their erasure is
    pending: it cannot reach the index while the build holds the index lock) are taken out of the new
    index and their rows of the new re-rank file zeroed, so no build commits an erased face. Returns
    how many were in the index."""
    # ids already hidden when the build read its list (`excluded`) were never added: only later ones count
    late = np.setdiff1d(g.pending_erasure_face_ids(max_id), excluded)
    if late.size == 0:
        return 0
    try:
        removed = int(index.remove_ids(faiss.IDSelectorBatch(late)))
    except RuntimeError:
        raise _ErasedMeanwhile from None
    if vectors is not None:
        zero_rows(vectors, dim, late)
    return removed


def zero_rows(path: Path, dim: int, ids: np.ndarray) -> int:
    """Overwrite the rows of `ids` in a re-rank file with zeros (in place, fsynced); returns how many
    rows the file had for them."""
    with VectorFileWriter(path, dim, create=False) as writer:
        inside = ids[(ids >= 0) & (ids <= writer.max_id)]
        writer.write(inside, np.zeros((inside.size, dim), np.float32))
    return int(inside.size)


def build_locked(
    g: Gallery, choice_args: dict[str, Any], device: str = "auto", seed: int = 0,
    read_batch_rows: int = READ_BATCH_ROWS, on_progress: ProgressFn | None = None,
) -> Manifest:
    """`build_index` for a caller that holds the index lock. A build whose index type cannot remove
    the faces erased while it ran is started again (they are excluded from the start then)."""
    for _ in range(3):
        try:
            return _build(g, choice_args, device, seed, read_batch_rows, on_progress)
        except _ErasedMeanwhile:
            continue
    raise IndexerError("Faces were erased during each of three index builds: run the build again when no "
                       "erasure is running.")


def default_choice_args() -> dict[str, Any]:
    return dict(factory=None, memory_budget=None, rerank=None, nprobe=None,
                train_per_centroid=DEFAULT_TRAIN_PER_CENTROID)


def last_manifest(g: Gallery) -> dict[str, Any] | None:
    """The manifest of the last index build SQLite recorded (what a lost or unreadable manifest said)."""
    import json

    from sqlalchemy import select

    from gallery.store.schema import IndexBuild

    with g.session() as s:
        text = s.scalar(select(IndexBuild.manifest).order_by(IndexBuild.build_id.desc()).limit(1))
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def own_choice_args(g: Gallery, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The gallery's own index settings for a rebuild (erase, compact, repair): the factory, re-rank,
    nprobe and re-rank depth of `manifest`, else of the current manifest, else of the last build SQLite
    recorded; the automatic choice only for a gallery that never had an index."""
    if manifest is None:
        try:
            manifest = read_manifest(g.index_dir, g.root)  # type: ignore[assignment]
        except IndexerError:
            manifest = last_manifest(g)
    if not manifest or not manifest.get("factory"):
        return default_choice_args()
    rerank = manifest.get("rerank") or {}
    return {**default_choice_args(), "factory": manifest["factory"], "rerank": bool(rerank.get("enabled")),
            "nprobe": manifest.get("nprobe"), "candidates": rerank.get("candidates") if rerank.get("enabled") else None,
            "tuned": manifest.get("tuned")}


def rebuild_index(g: Gallery, manifest: dict[str, Any] | None = None) -> Manifest:
    """Build the index again with the gallery's own settings (own_choice_args), taking the index lock."""
    with index_lock(g.index_dir):
        return build_locked(g, own_choice_args(g, manifest))


def _build(
    g: Gallery, choice_args: dict[str, Any], device: str, seed: int, read_batch_rows: int,
    on_progress: ProgressFn | None,
) -> Manifest:
    t_start = time.time()
    stamp = g.model_stamp
    shards = g.shard_rows()
    if stamp is None or not shards:
        raise EmptyGalleryError(
            f"Gallery '{g.root}' has no faces to index yet. Ingest photos first: gallery ingest PHOTOS "
            f"--gallery {g.root}"
        )
    dim = int(stamp["dim"])
    deleted = g.deleted_ids()
    total_rows = sum(r.n_faces for r in shards)
    n_live = min(total_rows, g.live_face_count())  # hidden ids may no longer be in any shard: counted in SQLite
    if n_live <= 0:
        raise EmptyGalleryError(f"Every face of gallery '{g.root}' is deleted: nothing to index.")
    dev = resolve_index_device(device)
    choice = choose_index(
        n_live, dim, choice_args["memory_budget"], choice_args["rerank"], dev, choice_args["factory"],
        choice_args["nprobe"], train_per_centroid=choice_args["train_per_centroid"],
    )
    if choice_args.get("candidates"):
        choice.rerank_candidates = int(choice_args["candidates"])  # the search setting the gallery had
    index = _make_index(choice, seed)
    g.index_dir.mkdir(parents=True, exist_ok=True)
    tag = new_tag()
    index_name = f"index-{tag}.faiss"
    vec_name = f"vectors-{tag}.f32" if choice.rerank else None
    try:
        with PeakMemory() as mem:
            t0 = time.time()
            n_train = 0
            if not index.is_trained:
                report(on_progress, "sample", 0, choice.train_size)
                x_train = sample_vectors(g.iter_embeddings(shards, read_batch_rows), total_rows,
                                         max(choice.train_size, 1), dim, seed)
                n_train = int(x_train.shape[0])
                report(on_progress, "train", 0, n_train)
                if dev == "cuda":
                    gpu.train_on_gpu(index, x_train, seed)
                elif choice.coarse_training == "two-level":
                    _train_two_level(index, x_train, seed)
                else:
                    index.train(x_train)
                del x_train
            t_train = time.time() - t0

            t1 = time.time()
            # GPU add for IVF indexes only (an exact flat "add" is a memcpy: CPU is as good)
            adder = gpu.GpuAdder(index, expected_n=n_live) if dev == "cuda" and _ivf_of(index) else None
            writer = VectorFileWriter(g.index_dir / vec_name, dim, create=True) if vec_name else None
            _, max_id = _stream_add(g, adder if adder is not None else index, shards, dim, deleted, writer,
                                    read_batch_rows, on_progress, n_live)
            if adder is not None:
                index = adder.finish()
            _exclude_erased_meanwhile(g, index, g.index_dir / vec_name if vec_name else None, dim, max_id, deleted)
            tune_hnsw_quantizer(index)  # saved with the search setting
            t_add = time.time() - t1
            t2 = time.time()
            index_bytes, index_sha = _save_index(index, g.index_dir / index_name)
            t_save = time.time() - t2

        covered_max = max(max_id, max(r.max_face_id for r in shards))
        ivf = _ivf_of(index)
        manifest: Manifest = {
            "version": MANIFEST_VERSION,
            "kind": "build",
            "created_at": time.time(),
            "built_at": time.time(),
            "faiss_version": faiss.__version__,
            "factory": choice.factory,
            "kind_of_index": choice.kind,
            "index_type": type(faiss.downcast_index(_base_of(index))).__name__,
            "metric": "inner_product",
            "dim": dim,
            "ntotal": int(index.ntotal),
            "nlist": int(ivf.nlist) if ivf is not None else None,
            "pq": {"m": choice.pq_m, "nbits": choice.pq_nbits, "fast_scan": choice.fast_scan} if choice.pq_m else None,
            "nprobe": int(ivf.nprobe) if ivf is not None else None,
            "model": stamp,
            "shards": [r.shard_id for r in shards],
            "shard_files": len(shards),
            "last_shard_id": shards[-1].shard_id,
            "max_face_id": int(covered_max),
            "deleted_skipped": int(deleted.size),
            "removed": 0,
            "training": {
                "sample_size": n_train,
                "points_per_centroid": (n_train / ivf.nlist) if ivf is not None and n_train else None,
                "seed": seed,
                "trained_for_n": n_live,
                "coarse_kmeans_iterations": int(ivf.cp.niter) if ivf is not None else None,
                "coarse_training": choice.coarse_training if ivf is not None else None,
            },
            "timing_s": {
                "train": round(t_train, 3),
                "add": round(t_add, 3),
                "save": round(t_save, 3),
                "total": round(time.time() - t_start, 3),
            },
            "build_seconds": round(time.time() - t_start, 3),
            "memory": mem.report(),
            "memory_budget": choice_args["memory_budget"],
            "device": dev,
            "reason": choice.reason,
            "notes": choice.notes,
            "index_file": index_name,
            "index_bytes": index_bytes,
            "index_sha256": index_sha,
            "index_bytes_per_vector": round(index_bytes / max(1, index.ntotal), 2),
            "rerank": {
                "enabled": True,
                "file": vec_name,
                "dtype": "float32",
                "dim": dim,
                "candidates": choice.rerank_candidates,
                "bytes": (covered_max + 1) * dim * 4,
            }
            if vec_name
            else {"enabled": False},
            "updates": [],
        }  # type: ignore[typeddict-unknown-key]
        if choice_args.get("tuned"):
            manifest["tuned"] = choice_args["tuned"]
    except BaseException:
        for name in (index_name, vec_name):
            if name:
                (g.index_dir / name).unlink(missing_ok=True)
        raise
    _commit(g, manifest, [index_name, vec_name], "build")
    return manifest


# --- update ------------------------------------------------------------------------------------


def update_index(
    gallery: Gallery | str | Path, *, read_batch_rows: int = READ_BATCH_ROWS, on_progress: ProgressFn | None = None
) -> Manifest:
    """Add the faces ingested since the last build/update, without retraining; returns the manifest.

    Adds face_id > manifest max_face_id from shards after the last covered one. Warns
    (IndexOutgrownWarning, and manifest["warnings"]) when the gallery outgrew the trained index.
    """
    g, owned = as_gallery(gallery)
    try:
        with index_lock(g.index_dir):
            g.check_database()
            return _update(g, read_batch_rows, on_progress)
    finally:
        if owned:
            g.close()


def _update(g: Gallery, read_batch_rows: int, on_progress: ProgressFn | None) -> Manifest:
    t_start = time.time()
    manifest = read_manifest(g.index_dir, g.root)
    check_model(manifest, g.model_stamp, g.root)
    new_shards = g.shard_rows(after_shard_id=int(manifest["last_shard_id"]))
    old_max = int(manifest["max_face_id"])
    if not new_shards:
        manifest = Manifest(**{**manifest, "added": 0})  # type: ignore[typeddict-item]
        for w in manifest.get("warnings") or []:
            warnings.warn(w, IndexOutgrownWarning, stacklevel=3)
        return manifest
    dim = int(manifest["dim"])
    index = faiss.read_index(str(g.index_dir / manifest["index_file"]))  # not mmap: we modify it
    searched_with = tune_hnsw_quantizer(index, for_adding=True)  # a hand-tuned efSearch is restored below
    rerank = manifest.get("rerank") or {}
    writer = VectorFileWriter(g.index_dir / rerank["file"], dim, create=False) if rerank.get("enabled") else None
    index_name = f"index-{new_tag()}.faiss"
    try:
        with PeakMemory() as mem:
            hidden = g.deleted_ids()
            added, max_id = _stream_add(g, index, new_shards, dim, hidden, writer, read_batch_rows,
                                        on_progress, None, above_id=old_max)
            try:
                _exclude_erased_meanwhile(g, index, g.index_dir / rerank["file"] if rerank.get("enabled") else None,
                                          dim, max(max_id, old_max), np.union1d(hidden, np.arange(old_max + 1)))
            except _ErasedMeanwhile:
                raise IndexerError(
                    "An erasure started during the update, and this index type cannot remove ids: nothing was "
                    f"changed. Rebuild the index: gallery index build --gallery {g.root}") from None
            tune_hnsw_quantizer(index, searched_with=searched_with)  # saved with the search setting
            index_bytes, index_sha = _save_index(index, g.index_dir / index_name)
    except BaseException:
        (g.index_dir / index_name).unlink(missing_ok=True)
        raise
    max_id = max(max_id, max(r.max_face_id for r in new_shards))
    seconds = round(time.time() - t_start, 3)
    new: Manifest = dict(manifest)  # type: ignore[assignment]
    new.update(
        kind="update",
        created_at=time.time(),
        ntotal=int(index.ntotal),
        shards=list(manifest.get("shards", [])) + [r.shard_id for r in new_shards],
        shard_files=int(manifest.get("shard_files", 0)) + len(new_shards),
        last_shard_id=new_shards[-1].shard_id,
        max_face_id=int(max_id),
        index_file=index_name,
        index_bytes=index_bytes,
        index_sha256=index_sha,
        index_bytes_per_vector=round(index_bytes / max(1, index.ntotal), 2),
        added=added,
        updates=list(manifest.get("updates", []))
        + [{"at": time.time(), "added": added, "seconds": seconds, "memory": mem.report()}],
    )
    if rerank.get("enabled"):
        new["rerank"] = dict(rerank, bytes=(max_id + 1) * dim * 4)  # type: ignore[typeddict-item]
    _commit(g, new, [index_name], "update")
    for w in new["warnings"]:
        warnings.warn(w, IndexOutgrownWarning, stacklevel=3)
    return new


# --- remove ------------------------------------------------------------------------------------


def _zero_rerank_rows(g: Gallery, manifest: Manifest, ids: np.ndarray) -> int:
    """Overwrite the re-rank file's rows of removed ids with zeros (in place, fsynced): a removed
    face's float vector must not stay on disk. Returns how many rows the file had for them."""
    rerank = manifest.get("rerank") or {}
    if not rerank.get("enabled") or not rerank.get("file") or ids.size == 0:
        return 0
    path = g.index_dir / rerank["file"]
    if not path.is_file():
        return 0
    return zero_rows(path, int(manifest["dim"]), ids)


def remove_ids_locked(g: Gallery, ids: np.ndarray, zero_rerank: bool = True) -> tuple[Manifest, int]:
    """Remove vector ids from the current index (a new index file and manifest; the caller holds the
    index lock); returns (the manifest now current, how many ids were in the index). Raises
    IndexerError for an index type that cannot remove ids."""
    manifest = read_manifest(g.index_dir, g.root)
    arr = np.unique(np.asarray(ids, dtype=np.int64))
    if zero_rerank:
        _zero_rerank_rows(g, manifest, arr)
    arr = arr[arr <= int(manifest["max_face_id"])]
    if arr.size == 0:
        return manifest, 0
    index = faiss.read_index(str(g.index_dir / manifest["index_file"]))
    try:
        n_removed = int(index.remove_ids(faiss.IDSelectorBatch(arr)))
    except RuntimeError as err:
        raise IndexerError(f"this index type cannot remove ids: {str(err).splitlines()[0]}") from None
    if n_removed == 0:
        return manifest, 0
    index_name = f"index-{new_tag()}.faiss"
    try:
        index_bytes, index_sha = _save_index(index, g.index_dir / index_name)
    except BaseException:
        (g.index_dir / index_name).unlink(missing_ok=True)
        raise
    new: Manifest = dict(manifest)  # type: ignore[assignment]
    new.update(
        kind="remove",
        created_at=time.time(),
        ntotal=int(index.ntotal),
        index_file=index_name,
        index_bytes=index_bytes,
        index_sha256=index_sha,
        index_bytes_per_vector=round(index_bytes / max(1, index.ntotal), 2),
        removed=int(manifest.get("removed", 0)) + n_removed,
    )
    new.pop("added", None)  # type: ignore[misc]
    _commit(g, new, [index_name], "remove")
    return new, n_removed


def remove_ids(gallery: Gallery | str | Path, ids: Any = None) -> Manifest:
    """Remove vector ids from the index file (CPU indexes) and zero their re-rank rows; ids=None
    removes every face deleted in SQLite.

    Searches already filter deleted faces; this reclaims their space and scan time, and is how an
    erasure reaches the index. Returns the manifest with "removed_now" (how many were in the index).
    An index type that cannot remove ids raises IndexerError.
    """
    g, owned = as_gallery(gallery)
    try:
        with index_lock(g.index_dir):
            if ids is None:
                manifest = read_manifest(g.index_dir, g.root)
                arr = g.deleted_ids(int(manifest["max_face_id"]))
            else:
                arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
            manifest, n_removed = remove_ids_locked(g, arr)
            return Manifest(**{**manifest, "removed_now": n_removed})  # type: ignore[typeddict-item]
    finally:
        if owned:
            g.close()
