"""Every identity's template in memory, searched exactly: look-alikes the nearest faces do not show.

The candidates of a query are the identities among its nearest gallery faces (the face index finds them,
at any size). An identity can be close on its template without one of its faces among those neighbours; as
the runner-up it still tells that the query looks like someone else too. For galleries of up to
`EXACT_TEMPLATES` identities the searcher scans all templates exactly; such a template-only look-alike
raises the runner-up's score when it beats the second candidate (search.decision), and it is never named
(its best face is not known). Past that size the face index alone finds the candidates: on LFW A–J (2,951
identities) 366 of 3,000 leave-one-out searches had a template-only look-alike and none of them was closer
than the runner-up the neighbours gave, so the face index already finds the identities that decide.

The matrix is reloaded when the gallery's templates change (a counter in the database moves with every
change; `PRAGMA data_version` says when to look).
"""

from __future__ import annotations

import threading

import numpy as np

from gallery.store import Gallery
from search.topk import exact_top_k

# Identities up to which all templates are scanned exactly per query, measured with
# `python benchmarks/open_set.py template-scan` (2-core x86 VM, 128-d, one query): p50 0.12 ms at 1,000,
# 0.33 ms at 10,000, 1.4 ms at 30,000, 2.2 ms at 50,000 identities: past 10,000 the scan would cost more than
# the face search it adds to.
EXACT_TEMPLATES = 10_000


class TemplateSearch:
    """All templates of a gallery in memory (up to `limit` identities), refreshed on change."""

    def __init__(self, gallery: Gallery, limit: int = EXACT_TEMPLATES) -> None:
        self.gallery = gallery
        self.limit = limit
        self._watch = gallery.watch_changes()
        self._seq: int | None = None
        self._lock = threading.Lock()
        # (ids, vectors, enabled), swapped whole: many threads may search at once
        self._data: tuple[np.ndarray, np.ndarray, bool] = (np.zeros(0, np.int64), np.zeros((0, 0), np.float32), True)

    @property
    def ids(self) -> np.ndarray:
        return self._data[0]

    @property
    def vectors(self) -> np.ndarray:
        return self._data[1]

    @property
    def enabled(self) -> bool:
        return self._data[2]

    def refresh(self) -> None:
        with self._lock:
            if not self._watch.poll():
                return
            seq, count = self.gallery.templates_version()
            if seq == self._seq:
                return
            self._seq = seq
            if count <= self.limit:
                ids, vectors = self.gallery.all_templates()
                self._data = (ids, vectors, True)
            else:
                self._data = (np.zeros(0, np.int64), np.zeros((0, 0), np.float32), False)

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (cosines, identity ids) per query, padded with (-inf, -1); empty past the limit."""
        self.refresh()
        held_ids, held, _ = self._data  # past the limit nothing is held: all padding
        return exact_top_k(x, held, held_ids, k)

    def close(self) -> None:
        self._watch.close()
