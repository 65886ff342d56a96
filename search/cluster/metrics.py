"""Scores of a clustering against true labels: pairwise and BCubed precision/recall/F.

Pairwise counts pairs of faces (dominated by the largest people); BCubed averages over faces (each
face: how much of its cluster is its person, how much of its person is in its cluster).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClusterScores:
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    clusters: int  # clusters of two or more faces
    singleton_rate: float  # faces alone

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def score_clustering(predicted: np.ndarray, truth: np.ndarray) -> ClusterScores:
    """predicted/truth: one label per face (any hashable values)."""
    pred = np.unique(np.asarray(predicted), return_inverse=True)[1]
    true = np.unique(np.asarray(truth), return_inverse=True)[1]
    joint = Counter(zip(pred.tolist(), true.tolist()))
    per_pred = np.bincount(pred)
    per_true = np.bincount(true)

    def pairs(counts: Any) -> float:
        c = np.asarray(list(counts), np.float64)
        return float((c * (c - 1) / 2).sum())

    same_both, same_pred, same_true = pairs(joint.values()), pairs(per_pred), pairs(per_true)
    p = same_both / same_pred if same_pred else 1.0
    r = same_both / same_true if same_true else 1.0
    n = pred.size
    bp = float(sum(m * m / per_pred[a] for (a, _), m in joint.items()) / n)
    br = float(sum(m * m / per_true[b] for (_, b), m in joint.items()) / n)
    return ClusterScores(p, r, _f(p, r), bp, br, _f(bp, br), int((per_pred >= 2).sum()),
                         float((per_pred == 1).sum() / n))
