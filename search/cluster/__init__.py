"""Who is in this archive: cluster faces into candidate people, review them and name them.

The names load on first use (PEP 562), so that importing this package pulls in neither numpy-heavy
modules nor faiss until a clustering function is called.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClusterReport": "search.cluster.run",
    "ClusterSettings": "search.cluster.settings",
    "cluster_gallery": "search.cluster.run",
    "list_clusters": "search.cluster.review",
    "count_clusters": "search.cluster.review",
    "show_cluster": "search.cluster.review",
    "name_cluster": "search.cluster.review",
    "split_cluster": "search.cluster.review",
    "reject_faces": "search.cluster.review",
    "contact_sheet": "search.cluster.review",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'search.cluster' has no attribute {name!r}")
