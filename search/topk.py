"""Exact top-k by inner product over vectors held in memory (the un-indexed tail of faces, the identity
templates): the k best per query, best first, padded with (-inf, -1) when fewer are held."""

from __future__ import annotations

import numpy as np


def exact_top_k(x: np.ndarray, held: np.ndarray, held_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores (n, k) float32, ids (n, k) int64) of the `k` rows of `held` with the largest inner product
    with each row of `x`; ties keep the order of `held` (a stable sort of the partitioned top)."""
    n = x.shape[0]
    scores = np.full((n, k), -np.inf, np.float32)
    ids = np.full((n, k), -1, np.int64)
    if held_ids.size == 0 or k <= 0:
        return scores, ids
    sims = x @ held.T
    kk = min(k, held_ids.size)
    part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    top = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    scores[:, :kk] = np.take_along_axis(top, order, axis=1)
    ids[:, :kk] = held_ids[np.take_along_axis(part, order, axis=1)]
    return scores, ids
