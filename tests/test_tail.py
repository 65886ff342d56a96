"""New faces answer at once: search merges the index with an exact search over the un-indexed tail."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gallery.app.indexing import index_advice
from gallery.faces.models import get_model_spec, registered
from gallery.store import Gallery, append_embedded_faces
from indexer import build_index, update_index
from search import Searcher
from search.decision import BEST_FACE
from search.tail import merge_topk
from tests.helpers.galleries import stamp, unit_vectors

DIM = 16


@pytest.fixture
def test_model():
    spec = replace(get_model_spec("facenet-untrained"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test", default_threshold=0.9)
    with registered(spec):
        yield spec


def test_merge_topk_keeps_the_best_of_both() -> None:
    a = (np.array([[0.9, 0.5, -np.inf]], np.float32), np.array([[1, 2, -1]]))
    b = (np.array([[0.7, 0.6]], np.float32), np.array([[10, 11]]))
    scores, ids = merge_topk(a, b, 3)
    assert ids.tolist() == [[1, 10, 11]] and scores[0, 0] == pytest.approx(0.9)


def test_a_newcomer_is_found_before_the_index_knows_them(tmp_path: Path, test_model) -> None:
    x = unit_vectors(200, DIM, seed=0)
    with Gallery.open_or_create(tmp_path / "g") as g:
        append_embedded_faces(g, stamp(DIM), x, identities=[f"p{i % 20}" for i in range(200)])
        assert "gallery index build" in index_advice(g)
        build_index(g)
        assert index_advice(g) is None
    newcomer = unit_vectors(3, DIM, seed=99)
    with Searcher(tmp_path / "g", k=3, threshold=0.5, rule=BEST_FACE) as searcher:  # opened before the ingest
        before = searcher.search_embeddings(newcomer[:1])[0]
        assert before.candidates[0].identity != "newcomer"
        with Gallery.open(tmp_path / "g") as writer:
            new_ids = append_embedded_faces(writer, stamp(DIM), newcomer, identities=["newcomer"] * 3)
        after = searcher.search_embeddings(newcomer[:1])[0]
        assert after.identity == "newcomer" and after.score == pytest.approx(1.0, abs=1e-5)
        assert searcher.tail.size == 3 and searcher.warnings == []
        with Gallery.open(tmp_path / "g") as writer:
            writer.mark_deleted([int(new_ids[0])])
        again = searcher.search_embeddings(newcomer[:1], faces_mode=True, k=5)[0]
        assert int(new_ids[0]) not in {c.face_id for c in again.candidates}
    update_index(tmp_path / "g")
    with Searcher(tmp_path / "g", k=3, threshold=0.5, rule=BEST_FACE) as searcher:
        assert searcher.tail.size == 0
        assert searcher.search_embeddings(newcomer[1:2])[0].identity == "newcomer"
