"""The indexer: automatic choice, build/reload, update, removal, deletes, manifest, atomic save, GPU errors."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

import indexer
import indexer.build as build_mod
from gallery.cli.index import index_app
from gallery.device import resolve_index_device as resolve_device
from gallery.store import Gallery
from gallery.store.schema import IndexBuild
from indexer import (
    EmptyGalleryError,
    GpuUnavailableError,
    IndexOutgrownWarning,
    NoIndexError,
    build_index,
    choose_index,
    index_info,
    load_index,
    remove_ids,
    update_index,
)
from indexer.choose import DEFAULT_RERANK_CANDIDATES, HNSW_QUANTIZER_EF_SEARCH
from tests.helpers.galleries import add_shards, make_gallery, mark_deleted, unit_vectors

IVF_N = 32_000  # just above FLAT_MAX_VECTORS: IVF-PQ, quick to train
IVF_DIM = 64
HAS_GPU = getattr(faiss, "get_num_gpus", lambda: 0)() > 0


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture()
def flat_gallery(tmp_path: Path):
    vectors = unit_vectors(300, 32, seed=1)
    gallery = make_gallery(tmp_path / "flat", vectors, shard_size=150)
    yield gallery, vectors
    gallery.close()


@pytest.fixture(scope="module")
def ivf_template(tmp_path_factory) -> tuple[Path, np.ndarray, dict]:
    """A 32k x 64-d gallery with a built IVF-PQ index, copied by each test that changes it."""
    root = tmp_path_factory.mktemp("ivf") / "gallery"
    vectors = unit_vectors(IVF_N, IVF_DIM, seed=2, clusters=200)
    gallery = make_gallery(root, vectors, shard_size=8_000)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # OpenMP spin-waits badly on a shared, loaded CI machine
    try:
        manifest = build_index(gallery, device="cpu")
    finally:
        faiss.omp_set_num_threads(threads)
    gallery.close()
    return root, vectors, manifest


@pytest.fixture()
def ivf_gallery(ivf_template, tmp_path: Path):
    root, vectors, manifest = ivf_template
    copy = tmp_path / "gallery"
    shutil.copytree(root, copy)
    gallery = Gallery.open(copy)
    yield gallery, vectors, manifest
    gallery.close()


# --- choice ------------------------------------------------------------------------------------


def test_choose_index_by_size_dim_and_budget():
    small = choose_index(300, 512)
    assert small.kind == "flat" and small.factory == "IDMap2,Flat" and not small.rerank
    assert "flat" in small.reason
    assert choose_index(indexer.FLAT_MAX_VECTORS - 1, 512).kind == "flat"

    for n in (40_000, 200_000, 1_000_000, 100_000_000):
        c = choose_index(n, 512)
        assert c.kind == "ivfpq"
        assert 4 * math.sqrt(n) <= c.nlist <= 16 * math.sqrt(n)
        assert 30 * c.nlist <= c.train_size <= 256 * c.nlist or c.train_size == n
        assert c.train_size <= n
        assert c.rerank and c.nprobe and c.nprobe <= c.nlist
        assert c.bytes_per_vector == 72  # 64-byte codes + 8-byte id
    big = choose_index(1_000_000, 512)
    assert big.factory == "IVF4096,PQ128x4fs"
    assert "4096" in big.reason and "re-rank" in big.reason
    assert choose_index(1_000_000, 128).factory == "IVF4096,PQ128x4fs"  # 64 B at 128-d (D/2: one 4-bit code/dim)
    assert choose_index(1_000_000, 128).coarse_training == "kmeans"
    # from 2M faces: HNSW coarse quantizer, two-level k-means (a flat k-means over 16k lists takes too long)
    ten = choose_index(10_000_000, 128)
    assert ten.factory == "IVF16384_HNSW32,PQ128x4fs" and ten.coarse_training == "two-level"
    assert ten.bytes_per_vector == 72 and ten.nlist == 16384 and "two-level" in ten.reason
    assert choose_index(10_000_000, 128, device="cuda").factory == "IVF16384,PQ64np"  # GPU: flat quantizer

    # default search settings, as measured (recall_latency.py): up to 128-d more lists, and more candidates as a
    # query scans more codes; above 128-d 1.5% of the lists and 100 candidates
    settings = {(n, d): (choose_index(n, d).nprobe, choose_index(n, d).rerank_candidates)
                for n, d in ((1_000_000, 128), (10_000_000, 128), (1_000_000, 512), (10_000_000, 512))}
    assert settings == {(1_000_000, 128): (256, 100), (10_000_000, 128): (512, 400),
                        (1_000_000, 512): (64, 100), (10_000_000, 512): (256, 100)}
    assert "nprobe 512" in ten.reason and "top 400 candidates" in ten.reason
    for n in (40_000, 300_000, 3_000_000, 30_000_000, 300_000_000):  # bounded, and never more lists than exist
        c = choose_index(n, 128)
        assert c.nprobe <= c.nlist and 100 <= c.rerank_candidates <= 1000

    # GPU: no fast-scan, 8-bit PQ64 without polysemous training
    assert choose_index(1_000_000, 512, device="cuda").factory == "IVF4096,PQ64np"

    # a memory budget shrinks the codes; too small a budget is refused
    tight = choose_index(1_000_000, 512, memory_budget=40)
    assert tight.bytes_per_vector <= 40 and tight.fast_scan
    with pytest.raises(ValueError):
        choose_index(1_000_000, 512, memory_budget=8)
    # small gallery whose flat index does not fit the budget: exhaustive PQ, re-ranked
    pq = choose_index(1000, 512, memory_budget=100)
    assert pq.kind == "pq" and pq.bytes_per_vector <= 100 and pq.rerank

    custom = choose_index(50_000, 64, factory="IVF256,Flat")
    assert custom.kind == "custom" and custom.nlist == 256 and not custom.rerank
    assert choose_index(50_000, 64, factory="IVF256,PQ8").rerank
    assert not choose_index(1_000_000, 512, rerank=False).rerank
    # a custom index without inverted lists: the codes a query scans are unknown, so the plain depth
    assert choose_index(10_000_000, 128, factory="HNSW32,PQ32").rerank_candidates == DEFAULT_RERANK_CANDIDATES
    # the GPU's nprobe limit holds for a custom factory as for the automatic choice
    wide = choose_index(10_000_000, 128, device="cuda", factory="IVF65536,PQ64np", nprobe=4096)
    assert wide.nprobe == 2048 and any("capped" in note for note in wide.notes)
    assert choose_index(10_000_000, 128, device="cpu", factory="IVF65536,PQ64np", nprobe=4096).nprobe == 4096


# --- flat --------------------------------------------------------------------------------------


def test_flat_build_reload_identical_and_exact(flat_gallery):
    gallery, vectors = flat_gallery
    manifest = build_index(gallery)
    for key in ("factory", "metric", "dim", "ntotal", "model", "max_face_id", "nprobe", "reason", "memory"):
        assert key in manifest
    assert manifest["factory"] == "IDMap2,Flat"
    assert manifest["ntotal"] == 300 and manifest["dim"] == 32 and manifest["metric"] == "inner_product"
    assert manifest["max_face_id"] == 300 and manifest["last_shard_id"] == 2 and manifest["shards"] == [1, 2]
    assert manifest["model"] == gallery.model_stamp
    assert manifest["memory"]["peak_rss_bytes"] > 0

    queries = unit_vectors(20, 32, seed=9)
    a = load_index(gallery, mmap=True)
    b = load_index(gallery.root, mmap=False)
    sa, ia = a.search(queries, 5)
    sb, ib = b.search(queries, 5)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)
    exact = queries @ vectors.T
    np.testing.assert_array_equal(ia[:, 0], exact.argmax(axis=1) + 1)  # ids start at 1
    # fewer faces than k: padded with -1 / -inf
    s, i = a.search(queries[:1], 400)
    assert (i[0, :300] > 0).all() and (i[0, 300:] == -1).all() and np.isinf(s[0, 300:]).all()
    a.close()
    b.close()

    with gallery.session() as s:
        kinds = s.scalars(select(IndexBuild.kind)).all()
    assert kinds == ["build"]


def test_deleted_in_sqlite_filtered_before_rebuild(flat_gallery):
    gallery, vectors = flat_gallery
    build_index(gallery)
    index = load_index(gallery)
    _, ids = index.search(vectors[4:5], 3)
    assert ids[0, 0] == 5
    mark_deleted(gallery, [5])
    _, ids = index.search(vectors[4:5], 3)  # the same open index sees the deletion
    assert 5 not in ids and (ids > 0).all()

    # delete most faces: k live results still come back (over-fetch and retry), none deleted
    doomed = np.arange(1, 261)
    mark_deleted(gallery, doomed)
    _, ids = index.search(vectors[:10], 30)
    assert (ids > 0).all() and not np.isin(ids, doomed).any()
    _, ids = index.search(vectors[:1], 100)  # only 40 live faces
    assert (ids[0, :40] > 260).all() and (ids[0, 40:] == -1).all()
    index.close()
    assert index_info(gallery)["deleted_filtered"] == 260

    # a rebuild skips deleted faces; remove_ids(None) on the old index would have pruned them
    manifest = build_index(gallery)
    assert manifest["ntotal"] == 40 and manifest["deleted_skipped"] == 260


def test_failed_build_leaves_previous_index_usable(flat_gallery, monkeypatch):
    gallery, vectors = flat_gallery
    first = build_index(gallery)
    before = sorted(p.name for p in gallery.index_dir.iterdir())
    calls = {"n": 0}

    def boom(index, ids, x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        index.add_with_ids(x, ids)

    monkeypatch.setattr(build_mod, "_add_batch", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_index(gallery, factory="IDMap2,Flat", rerank=True)
    assert sorted(p.name for p in gallery.index_dir.iterdir()) == before  # no leftovers
    assert json.loads((gallery.index_dir / "manifest.json").read_text())["index_file"] == first["index_file"]
    index = load_index(gallery)
    assert index.ntotal == 300
    assert index.search(vectors[7:8], 1)[1][0, 0] == 8


def test_update_flat_and_outgrown_warning(flat_gallery, monkeypatch):
    gallery, _ = flat_gallery
    build_index(gallery)
    more = unit_vectors(200, 32, seed=5)
    new_ids = add_shards(gallery, more, shard_size=100)
    assert index_info(gallery)["stale_faces"] == 200
    monkeypatch.setattr(build_mod, "FLAT_MAX_VECTORS", 400)
    with pytest.warns(IndexOutgrownWarning, match="gallery index build --gallery"):
        manifest = update_index(gallery)
    assert manifest["ntotal"] == 500 and manifest["added"] == 200 and manifest["max_face_id"] == 500
    assert manifest["warnings"]
    info = index_info(gallery)
    assert info["stale_faces"] == 0 and info["ntotal"] == 500
    index = load_index(gallery)
    assert index.search(more[:3], 1)[1][:, 0].tolist() == new_ids[:3].tolist()
    # nothing new: a no-op
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert update_index(gallery)["added"] == 0


def test_outgrown_coarse_quantizer_warning():
    manifest = {"kind_of_index": "ivfpq", "ntotal": 160_000, "nlist": 1024, "training": {"trained_for_n": 40_000}}
    (msg,) = build_mod._outgrown_warnings(manifest, Path("/g"))
    assert "4.0x" in msg and "gallery index build --gallery /g" in msg
    manifest["ntotal"] = 159_999
    assert build_mod._outgrown_warnings(manifest, Path("/g")) == []


# --- IVF-PQ ------------------------------------------------------------------------------------


def test_ivfpq_manifest_reload_and_recall(ivf_gallery):
    gallery, vectors, manifest = ivf_gallery
    assert manifest["kind_of_index"] == "ivfpq"
    assert manifest["factory"].startswith("IVF") and "PQ" in manifest["factory"]
    assert manifest["ntotal"] == IVF_N and manifest["dim"] == IVF_DIM
    nlist = manifest["nlist"]
    assert 4 * math.sqrt(IVF_N) <= nlist <= 16 * math.sqrt(IVF_N)
    training = manifest["training"]
    assert 30 * nlist <= training["sample_size"] <= min(IVF_N, 256 * nlist)
    assert manifest["rerank"]["enabled"] and (gallery.index_dir / manifest["rerank"]["file"]).is_file()
    assert manifest["max_face_id"] == IVF_N and manifest["last_shard_id"] == 4
    for key in ("train", "add", "total"):
        assert manifest["timing_s"][key] >= 0
    assert manifest["reason"]

    queries = vectors[:200]
    a = load_index(gallery)
    b = load_index(gallery, mmap=False)
    sa, ia = a.search(queries, 10)
    sb, ib = b.search(queries, 10)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(sa, sb)
    # re-ranked scores are exact inner products: self-match first with score ~1
    assert (ia[:, 0] == np.arange(1, 201)).mean() >= 0.95
    np.testing.assert_allclose(sa[:, 0][ia[:, 0] == np.arange(1, 201)], 1.0, atol=1e-5)
    # without re-ranking, PQ scores are approximate
    _, raw = a.search(queries, 10, rerank=False)
    assert raw.shape == (200, 10)
    # more probes never hurt re-ranked recall much; nprobe beyond nlist is clamped
    assert a.search(queries[:5], 5, nprobe=10 * nlist)[1].shape == (5, 5)

    info = index_info(gallery)
    for key in ("factory", "ntotal", "dim", "metric", "nprobe", "stale_faces"):
        assert key in info
    assert info["stale_faces"] == 0


def test_ivfpq_update_after_second_batch(ivf_gallery):
    gallery, _, manifest = ivf_gallery
    more = unit_vectors(3000, IVF_DIM, seed=7, clusters=50)
    new_ids = add_shards(gallery, more, shard_size=1000)
    assert index_info(gallery)["stale_faces"] == 3000
    updated = update_index(gallery)
    assert updated["ntotal"] == IVF_N + 3000 and updated["added"] == 3000
    assert updated["max_face_id"] == int(new_ids[-1]) and updated["last_shard_id"] == 7
    assert updated["training"] == manifest["training"]  # no retraining
    assert not (gallery.index_dir / manifest["index_file"]).exists()  # old file cleaned up
    index = load_index(gallery)
    _, ids = index.search(more[:100], 1)
    assert (ids[:, 0] == new_ids[:100]).mean() >= 0.95
    with gallery.session() as s:
        assert s.scalars(select(IndexBuild.kind).order_by(IndexBuild.build_id)).all() == ["build", "update"]


def test_ivfpq_remove_ids(ivf_gallery):
    gallery, vectors, _ = ivf_gallery
    result = remove_ids(gallery, [1, 2, 3, 999_999])
    assert result["removed_now"] == 3 and result["ntotal"] == IVF_N - 3
    index = load_index(gallery)
    assert index.ntotal == IVF_N - 3
    _, ids = index.search(vectors[:3], 5)
    assert not np.isin(ids, [1, 2, 3]).any()
    # ids=None: every face deleted in SQLite
    mark_deleted(gallery, [10, 11])
    assert remove_ids(gallery)["removed_now"] == 2
    assert index_info(gallery)["ntotal"] == IVF_N - 5
    with gallery.session() as s:
        assert s.scalars(select(IndexBuild.kind).order_by(IndexBuild.build_id)).all() == [
            "build",
            "remove",
            "remove",
        ]


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present")
def test_cuda_without_gpu_is_a_clear_error(flat_gallery):
    gallery, _ = flat_gallery
    assert resolve_device("auto") == "cpu"
    with pytest.raises(GpuUnavailableError, match="--device cpu"):
        build_index(gallery, device="cuda")
    assert not (gallery.index_dir / "manifest.json").exists()
    assert build_index(gallery, device="auto")["device"] == "cpu"


def test_empty_gallery_and_missing_index(tmp_path: Path):
    gallery = Gallery.open_or_create(tmp_path / "empty")
    with pytest.raises(EmptyGalleryError, match="gallery ingest"):
        build_index(gallery)
    with pytest.raises(NoIndexError, match="gallery index build --gallery"):
        load_index(gallery)
    with pytest.raises(NoIndexError):
        index_info(gallery)
    with pytest.raises(NoIndexError):
        update_index(gallery)
    gallery.close()


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_build_info_update(flat_gallery, tmp_path: Path):
    gallery, _ = flat_gallery
    runner = CliRunner()
    root = str(gallery.root)
    result = runner.invoke(index_app, ["info", "--gallery", root])
    assert result.exit_code == 2 and "gallery index build --gallery" in result.output
    assert "Traceback" not in result.output

    result = runner.invoke(index_app, ["build", "--gallery", root, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ntotal"] == 300

    result = runner.invoke(index_app, ["info", "--gallery", root, "--json"])
    info = json.loads(result.stdout)
    for key in ("factory", "ntotal", "dim", "metric", "nprobe", "stale_faces"):
        assert key in info
    result = runner.invoke(index_app, ["info", "--gallery", root])
    assert result.exit_code == 0 and "IDMap2,Flat" in result.output

    result = runner.invoke(index_app, ["update", "--gallery", root])
    assert result.exit_code == 0 and "up to date" in result.output

    result = runner.invoke(index_app, ["build", "--gallery", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "No gallery" in result.output
    result = runner.invoke(index_app, ["build", "--gallery", root, "--device", "cuda"])
    if not HAS_GPU:
        assert result.exit_code == 2 and "cuda" in result.output
    empty = Gallery.open_or_create(tmp_path / "empty")
    empty.close()
    result = runner.invoke(index_app, ["build", "--gallery", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "gallery ingest" in result.output


# --- GPU orchestration, with faiss' GPU entry points faked on the CPU ---------------------------


class _FakeRes:
    def setTempMemory(self, n):  # noqa: N802 (faiss' name)
        self.temp = n


class _FakeClonerOptions:
    pass


def _fake_gpu(monkeypatch):
    """Stand-ins for faiss' GPU API that run on the CPU: they check the orchestration in indexer/gpu.py
    (k-means through a 'GPU' flat index, chunked adds into a clone, flush/merge back, CPU copy), not
    CUDA itself."""
    clones = []

    def to_gpu(res, device, index, co=None):
        assert isinstance(co, _FakeClonerOptions) and co.indicesOptions == 0
        clone = faiss.clone_index(index)
        clones.append((clone, co))
        return clone

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(faiss, "StandardGpuResources", _FakeRes, raising=False)
    monkeypatch.setattr(faiss, "GpuClonerOptions", _FakeClonerOptions, raising=False)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", _FakeClonerOptions, raising=False)
    monkeypatch.setattr(faiss, "INDICES_64_BIT", 0, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatIP", lambda res, d: faiss.IndexFlatIP(d), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", faiss.clone_index, raising=False)
    monkeypatch.setattr(faiss, "GpuParameterSpace", faiss.ParameterSpace, raising=False)
    return clones


def test_gpu_build_and_search_paths_with_fake_gpu(tmp_path: Path, monkeypatch):
    import indexer.gpu as gpu_mod

    vectors = unit_vectors(12_000, 32, seed=4, clusters=50)
    gallery = make_gallery(tmp_path / "g", vectors, shard_size=4_000)
    clones = _fake_gpu(monkeypatch)
    monkeypatch.setattr(gpu_mod, "ADD_CHUNK", 1500)
    monkeypatch.setattr(gpu_mod, "DEFAULT_MAX_GPU_VECTORS", 5_000)  # forces flushes to the CPU index
    assert resolve_device("auto") == "cuda"
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        manifest = build_index(gallery, device="cuda", factory="IVF64,PQ16np")
    finally:
        faiss.omp_set_num_threads(threads)
    assert manifest["device"] == "cuda" and manifest["ntotal"] == 12_000
    assert manifest["rerank"]["enabled"]
    assert clones and clones[0][1].reserveVecs == 5_000 and clones[0][1].useFloat16 is False
    index = load_index(gallery)
    cpu_scores, cpu_ids = index.search(vectors[:50], 5)
    assert (cpu_ids[:, 0] == np.arange(1, 51)).mean() >= 0.95
    index.to_gpu()
    gpu_scores, gpu_ids = index.search(vectors[:50], 5)
    np.testing.assert_array_equal(gpu_ids, cpu_ids)
    gallery.close()


def test_gpu_float16_lookup_rule():
    from indexer.gpu import needs_float16_lookup

    big = faiss.index_factory(512, "IVF16,PQ64np", faiss.METRIC_INNER_PRODUCT)  # 64 x 256 x 4 B = 64 KiB
    small = faiss.index_factory(128, "IVF16,PQ32np", faiss.METRIC_INNER_PRODUCT)  # 32 KiB
    assert needs_float16_lookup(big) and not needs_float16_lookup(small)
    assert not needs_float16_lookup(faiss.index_factory(64, "IVF16,Flat"))


def test_hnsw_quantizer_breadth_kept_across_an_add() -> None:
    """An update adds with faiss' cheap efSearch and must then restore the search setting: at least
    HNSW_QUANTIZER_EF_SEARCH, and a larger hand-tuned value is not lowered."""
    from indexer.choose import HNSW_QUANTIZER_ADD_EF_SEARCH
    from indexer.loaded import tune_hnsw_quantizer

    index = faiss.index_factory(16, "IVF16_HNSW32,Flat", faiss.METRIC_INNER_PRODUCT)
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    quantizer.hnsw.efSearch = 300  # tuned by hand
    searched_with = tune_hnsw_quantizer(index, for_adding=True)
    assert searched_with == 300 and quantizer.hnsw.efSearch == HNSW_QUANTIZER_ADD_EF_SEARCH
    tune_hnsw_quantizer(index, searched_with=searched_with)
    assert quantizer.hnsw.efSearch == 300
    quantizer.hnsw.efSearch = 16  # faiss' default, as saved before the setting existed
    tune_hnsw_quantizer(index)
    assert quantizer.hnsw.efSearch == HNSW_QUANTIZER_EF_SEARCH
    assert tune_hnsw_quantizer(faiss.index_factory(16, "IVF16,Flat")) is None


def test_two_level_training_with_hnsw_quantizer(tmp_path: Path, monkeypatch) -> None:
    """The large-gallery path (HNSW coarse quantizer, two-level k-means) on a small gallery."""
    import indexer.build as build_mod
    from indexer import choose as choose_mod

    vectors = unit_vectors(3000, 32, seed=4, clusters=60)
    gallery = make_gallery(tmp_path / "g", vectors, shard_size=1000)
    monkeypatch.setattr(choose_mod, "LARGE_IVF_VECTORS", 1000)
    monkeypatch.setattr(build_mod, "choose_index", lambda *a, **kw: choose_mod.choose_index(*a, **kw, flat_max=1000))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # OpenMP spin-waits badly on a shared, loaded CI machine
    try:
        manifest = build_index(gallery, device="cpu")
        assert manifest["factory"].startswith("IVF") and "_HNSW32," in manifest["factory"]
        assert manifest["training"]["coarse_training"] == "two-level"
        with load_index(gallery) as index:
            scores, ids = index.search(vectors[:100], 5)
            ivf = faiss.extract_index_ivf(index.index)
            quantizer = faiss.downcast_index(ivf.quantizer)
            # faiss' default efSearch (16) made the graph miss lists at 10M: the build raises it
            assert quantizer.hnsw.efSearch >= HNSW_QUANTIZER_EF_SEARCH
            # ... so the graph probes the same lists as an exact scan of the centroids
            centroids = quantizer.reconstruct_n(0, ivf.nlist)
            nprobe = 8
            _, graph_lists = quantizer.search(vectors[:300], nprobe)
            _, exact_lists = faiss.knn(vectors[:300], centroids, nprobe, metric=faiss.METRIC_INNER_PRODUCT)
            overlap = np.mean([len(set(a) & set(b)) / nprobe for a, b in zip(graph_lists, exact_lists)])
            assert overlap >= 0.99
        assert (ids[:, 0] == np.arange(1, 101)).mean() >= 0.95  # each vector finds itself (re-ranked)

        # an index saved with faiss' default efSearch (built before the setting) is raised at load
        path = gallery.index_dir / manifest["index_file"]
        old = faiss.read_index(str(path))
        faiss.downcast_index(faiss.extract_index_ivf(old).quantizer).hnsw.efSearch = 16
        faiss.write_index(old, str(path))
        written = json.loads((gallery.index_dir / "manifest.json").read_text())
        written.pop("index_sha256")  # as an index from before checksums
        (gallery.index_dir / "manifest.json").write_text(json.dumps(written))
        with load_index(gallery) as index:
            quantizer = faiss.downcast_index(faiss.extract_index_ivf(index.index).quantizer)
            assert quantizer.hnsw.efSearch >= HNSW_QUANTIZER_EF_SEARCH

        # an update adds with faiss' cheap efSearch, then saves the one it found (here set by hand)
        tuned = faiss.read_index(str(path))
        faiss.downcast_index(faiss.extract_index_ivf(tuned).quantizer).hnsw.efSearch = 300
        faiss.write_index(tuned, str(path))
        added = unit_vectors(200, 32, seed=9, clusters=60)
        new_ids = add_shards(gallery, added, shard_size=100)
        assert update_index(gallery)["added"] == 200
        with load_index(gallery) as index:
            quantizer = faiss.downcast_index(faiss.extract_index_ivf(index.index).quantizer)
            assert quantizer.hnsw.efSearch == 300
            assert index.search(added[:5], 1)[1][:, 0].tolist() == new_ids[:5].tolist()
    finally:
        faiss.omp_set_num_threads(threads)
        gallery.close()
