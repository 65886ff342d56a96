"""Nothing damaged is served: a garbled, zeroed or truncated re-rank file and a garbled index file give
correct answers with a warning (never a score outside [-1, 1]), `check` names them and `repair`
rebuilds them; every rebuild (erase, compact, repair) keeps the gallery's own factory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gallery.app.erasure import erase
from gallery.app.maintenance import check, compact, repair
from gallery.cli import app
from gallery.store import Gallery
from gallery.store.erase import ErasureSelection
from indexer import build_index, load_index
from tests.helpers.galleries import make_gallery, unit_vectors

DIM = 32
runner = CliRunner()


@pytest.fixture
def gallery(tmp_path: Path):
    x = unit_vectors(600, DIM, seed=3, clusters=12)
    g = make_gallery(tmp_path / "g", x, shard_size=300)
    yield g, x
    g.close()


def manifest(g: Gallery) -> dict:
    return json.loads((g.index_dir / "manifest.json").read_text())


def self_search(g: Gallery, x: np.ndarray) -> tuple[float, list[str], float]:
    """(share of faces found first by their own vector, warnings, largest |score|)."""
    ids = np.arange(1, len(x) + 1)
    with load_index(g) as index:
        scores, hits = index.search(x, 5)
        warnings = list(index.warnings)
    return float(np.mean(hits[:, 0] == ids)), warnings, float(np.abs(scores[np.isfinite(scores)]).max())


def problems(g: Gallery) -> list[str]:
    return [f.detail for f in check(g) if not f.ok]


def damage_rerank(g: Gallery, how: str) -> None:
    path = g.index_dir / manifest(g)["rerank"]["file"]
    data = bytearray(path.read_bytes())
    row = DIM * 4
    if how == "random":  # 40 KB of random bytes from row 100 on
        data[100 * row : 100 * row + 40_000] = np.random.default_rng(0).bytes(40_000)
    elif how == "zeros":
        data[50 * row : 100 * row] = bytes(50 * row)
    elif how == "truncated":
        data = data[: 400 * row]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["random", "zeros", "truncated"])
def test_a_damaged_rerank_file_is_never_a_score(gallery, how: str) -> None:
    g, x = gallery
    build_index(g, factory="IVF16,PQ16x4fs", rerank=True)
    assert self_search(g, x)[0] == 1.0 and problems(g) == []
    damage_rerank(g, how)
    found, warnings, top = self_search(g, x)
    assert found == 1.0 and top <= 1.0  # was: one person at 5e+37 for every query
    assert any("re-rank file" in w and "gallery repair" in w for w in warnings)
    assert any("re-rank file" in p for p in problems(g))
    result = repair(g)
    assert result["index"] == "rebuilt" and problems(g) == []
    assert manifest(g)["factory"] == "IVF16,PQ16x4fs" and manifest(g)["rerank"]["enabled"]
    found, warnings, _ = self_search(g, x)
    assert found == 1.0 and warnings == []


def test_a_garbled_index_file_is_answered_exactly_and_rebuilt(gallery) -> None:
    g, x = gallery
    build_index(g, factory="HNSW32")
    path = g.index_dir / manifest(g)["index_file"]
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 20_000] = np.random.default_rng(1).bytes(20_000)
    path.write_bytes(bytes(data))
    found, warnings, top = self_search(g, x)
    assert found == 1.0 and top <= 1.0 and any("checksum" in w for w in warnings)
    assert any("checksum" in p for p in problems(g))
    code = runner.invoke(app, ["check", "--gallery", str(g.root)]).exit_code
    assert code == 1
    assert repair(g)["index"] == "rebuilt" and problems(g) == []
    assert manifest(g)["factory"] == "HNSW32"
    assert self_search(g, x)[:2] == (1.0, [])


def test_scores_never_leave_minus_one_to_one(gallery) -> None:
    """Compressed codes overshoot a little: answers are bounded whatever the index."""
    g, x = gallery
    build_index(g, factory="IVF16,PQ4x4fs", rerank=False)
    with load_index(g) as index:
        scores, _ = index.search(x * 1.0, 10)
    finite = scores[np.isfinite(scores)]
    assert finite.max() <= 1.0 and finite.min() >= -1.0


@pytest.mark.parametrize("factory", ["HNSW32", "IVF16,PQ16x4fs"])
def test_every_rebuild_keeps_the_gallerys_own_factory(gallery, factory: str) -> None:
    g, x = gallery
    build_index(g, factory=factory, rerank=True)
    m = manifest(g)
    erase(g, ErasureSelection(face_ids=[1, 2, 3]), "faces erase")
    assert manifest(g)["factory"] == factory
    g.delete_faces(list(range(4, 400)))
    compact(g)
    assert manifest(g)["factory"] == factory and manifest(g)["rerank"]["enabled"] == m["rerank"]["enabled"]
    (g.index_dir / "manifest.json").write_text("{garbage")
    assert repair(g)["index"] == "rebuilt"
    assert manifest(g)["factory"] == factory and manifest(g)["rerank"]["enabled"]
