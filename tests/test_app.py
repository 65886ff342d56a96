"""The application layer (gallery.app): one threshold rule, per-query thresholds that leave the shared
searcher untouched (many threads at once), and one post-ingest sequence for every door."""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gallery.app.answers import InvalidThreshold, SearchResult, check_threshold
from gallery.app.indexing import after_new_faces
from gallery.faces.models import get_model_spec, registered
from gallery.store import Gallery, append_embedded_faces
from tests.helpers.galleries import stamp, unit_vectors

DIM = 16


def test_one_threshold_rule() -> None:
    assert check_threshold(None) is None and check_threshold(-1) == -1.0 and check_threshold(0.42) == 0.42
    for bad in (1.0001, -2, math.nan, math.inf):
        with pytest.raises(InvalidThreshold, match="from -1 to 1"):
            check_threshold(bad)


@pytest.fixture
def synthetic(tmp_path: Path):
    spec = replace(get_model_spec("dlib-resnet"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test")
    x = unit_vectors(30, DIM, seed=3, clusters=10)
    with registered(spec):
        with Gallery.open_or_create(tmp_path / "g") as g:
            append_embedded_faces(g, stamp(DIM), x, identities=[f"p{i % 10}" for i in range(30)])
        yield tmp_path / "g", x


def test_an_ingest_without_an_index_advises_the_build_and_an_enrolment_builds_it(synthetic) -> None:
    gallery, _ = synthetic
    after = after_new_faces(gallery)  # what ingest and sync do (CLI and server alike)
    assert after.index.action == "none" and "gallery index build" in (after.next or "")
    after = after_new_faces(gallery, build_when_missing=True)  # what an enrolment does
    assert after.index.action == "build" and after.index.ntotal == 30 and after.next is None


def test_per_query_thresholds_leave_the_searcher_as_it_is(synthetic) -> None:
    from search.searcher import Searcher

    gallery, x = synthetic
    after_new_faces(gallery, build_when_missing=True)
    with Searcher(gallery) as s:
        before = (s.threshold, s.threshold_source, s.one_to_one, s.one_to_one_source)
        results: dict[tuple[int, float | None], list] = {}

        def ask(i: int, threshold: float | None) -> None:
            for _ in range(20):
                answers = s.search_embeddings(x[i:i + 1], k=3, threshold=threshold)
                results[(i, threshold)] = [SearchResult.of(a, []) for a in answers]

        threads = [threading.Thread(target=ask, args=(i, t)) for i in range(4) for t in (None, 0.99, -1.0)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (s.threshold, s.threshold_source, s.one_to_one, s.one_to_one_source) == before
    for (_, threshold), [answer] in results.items():
        if threshold is None:
            assert answer.threshold == before[0] and answer.threshold_source == before[1]
        else:
            assert answer.threshold == threshold and answer.threshold_source == "threshold parameter"
            assert answer.unknown is (threshold == 0.99)  # nothing reaches 0.99 on the statistic; everything -1
    with Searcher(gallery) as s:
        [s_answer] = s.search_embeddings(x[:1], k=3, faces_mode=True, threshold=0.5)
        faces = s.decision_threshold(None, faces_mode=True)
    assert s_answer.threshold == 0.5 and s_answer.threshold_source == "threshold parameter (1:1)"
    assert faces[1].startswith("model default 1:1") or faces[1].startswith("calibrated 1:1")
    assert np.isfinite(faces[0])
