"""The query path: embed the query, k-NN in the index, map ids to identities, decide, calibrate.

`from search import Searcher` works as usual; the names load on first use, so that importing a light
submodule (search.threshold, search.identify) does not import torch and faiss.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Candidate": "search.identify",
    "FaceAnswer": "search.identify",
    "NoIndexError": "gallery.errors",
    "Searcher": "search.searcher",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
