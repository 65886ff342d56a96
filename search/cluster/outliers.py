"""Which faces of a cluster a person should look at first: those far from the rest of it.

Each face gets its mean cosine to the cluster's other faces (from the cluster's vector sum: one
matrix-vector product), and a mark when re-clustering the cluster's faces one step stricter (what
`clusters split` does) would leave it outside the cluster's main part. Review lists, the contact sheet
and the web page show the lowest similarity first; naming reports the marked faces (and can leave them
unnamed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from search.cluster.graph import knn_graph
from search.cluster.run import cluster_labels
from search.cluster.settings import ClusterSettings


@dataclass
class Outlyingness:
    """Per face of one cluster (rows as given)."""

    similarity: np.ndarray  # (n,) mean cosine to the other faces of the cluster (1.0 alone)
    doubtful: np.ndarray  # (n,) bool: a stricter split separates it from the main part

    def order(self) -> np.ndarray:
        """Rows, doubtful faces first, then by similarity to the rest, lowest first (stable)."""
        return np.lexsort((self.similarity, ~self.doubtful))


def similarity_to_rest(vectors: np.ndarray) -> np.ndarray:
    """Mean cosine of each unit vector to the others: (x · sum - x · x) / (n - 1)."""
    x = np.asarray(vectors, np.float64)
    n = x.shape[0]
    if n < 2:
        return np.ones(n)
    return (x @ x.sum(axis=0) - np.einsum("ij,ij->i", x, x)) / (n - 1)


def stricter_parts(vectors: np.ndarray, settings: ClusterSettings) -> np.ndarray:
    """Labels of the cluster's faces re-clustered with `settings` (already the stricter ones)."""
    n = vectors.shape[0]
    if n < 2:
        return np.zeros(n, np.int64)
    return cluster_labels(vectors, knn_graph(vectors, min(settings.k, n - 1)), settings)


def outlyingness(vectors: np.ndarray, stricter: ClusterSettings) -> Outlyingness:
    """Similarity to the rest, and which faces the stricter setting takes out of the main part (the
    largest part; on a tie, the one whose faces are most similar to the whole cluster)."""
    similarity = similarity_to_rest(vectors)
    labels = stricter_parts(vectors, stricter)
    parts, sizes = np.unique(labels, return_counts=True)
    if parts.size <= 1:
        return Outlyingness(similarity, np.zeros(labels.size, bool))
    mean_similarity = np.array([similarity[labels == p].mean() for p in parts])
    main = parts[np.lexsort((-mean_similarity, -sizes))[0]]
    return Outlyingness(similarity, labels != main)
