"""Pure logic of the query path: identity ranking, the open-set decision, FPIR/FNIR arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from search.evaluation import RuleScores, fpir_fnir, threshold_at_fpir
from search.identify import Neighbour, decide, parse_aggregation, rank_identities


def n(face_id: int, score: float, identity: str | None) -> Neighbour:
    return Neighbour(face_id, score, identity, f"{face_id}.jpg", [0, 0, 1, 1], face_id)


def test_rank_identities_max_and_mean() -> None:
    neighbours = [n(1, 0.9, "a"), n(2, 0.85, "b"), n(3, 0.84, "b"), n(4, 0.2, "a"), n(5, 0.95, None)]
    assert [(name, s) for name, s, _ in rank_identities(neighbours, 5)] == [("a", 0.9), ("b", 0.85)]
    ranked = rank_identities(neighbours, 5, "mean:2")
    assert ranked[0][0] == "b" and ranked[0][1] == pytest.approx(0.845)
    assert ranked[1][1] == pytest.approx(0.55)
    # one lucky face does not beat a consistently close identity: missing faces count as the weakest
    assert rank_identities([n(1, 0.9, "x")], 1, "mean:3")[0][1] == pytest.approx(0.9)
    with pytest.raises(ValueError):
        parse_aggregation("median")


def test_decide_open_set() -> None:
    neighbours = [n(1, 0.9, "a"), n(2, 0.5, "b")]
    answer = decide("q.jpg", None, neighbours, k=2, threshold=0.8)
    assert answer.identity == "a" and not answer.unknown and [c.above_threshold for c in answer.candidates] == [
        True, False]
    unknown = decide("q.jpg", None, neighbours, k=2, threshold=0.95)
    assert unknown.identity is None and unknown.unknown and unknown.candidates[0].identity == "a"
    faces = decide("q.jpg", None, [n(7, 0.9, None), n(8, 0.99, None)], k=1, threshold=0.95, faces_mode=True)
    assert faces.mode == "faces" and faces.candidates[0].face_id == 8 and not faces.unknown
    empty = decide("q.jpg", None, [], k=3, threshold=0.5)
    assert empty.unknown and empty.score is None and empty.candidates == []


def test_threshold_at_fpir_and_rates() -> None:
    impostor = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    t = threshold_at_fpir(impostor, 0.1)  # one impostor of ten may pass: just above the second best
    assert 0.9 < t <= 0.900001
    t0 = threshold_at_fpir(impostor, 0.0)
    assert t0 > 0.95
    scores = RuleScores(genuine=np.array([0.99, 0.97, 0.5, 0.92]), impostor=impostor,
                        top_if_correct=np.array([0.99, 0.97, -math.inf, 0.92]), rank_hits={1: 3},
                        runner_up_combined=np.full(10, np.nan))
    fpir, fnir = fpir_fnir(scores, t)
    assert fpir == pytest.approx(0.1) and fnir == pytest.approx(0.25) and scores.rank(1) == 0.75
