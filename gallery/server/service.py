"""One worker's search machinery: a `Searcher` loaded once, reloaded when the index changes, and the
one mapping from the product's errors to HTTP answers (a reason, never a 500).

Searches share one lock: the detector, the embedder and the searcher's tail are not made for
concurrent use, and on a few cores parallel model runs only compete. Writers (ingest jobs, edits,
erasure) do not take it: SQLite's WAL lets searches read while they write, the searcher sees new
faces and deletions at its next query, and a new index manifest (build, update, erasure) is picked
up by the next search.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gallery.errors import (
    DamagedData,
    GalleryBusy,
    GalleryError,
    GalleryNotFound,
    IndexBusyError,
    LabelConflict,
    NoIndexError,
    NotInGallery,
    PhotoRefused,
)

if TYPE_CHECKING:
    from search.searcher import Searcher

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than 2xx: HTTP status, a short reason code and a sentence for a person."""

    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.extra = status, error, detail, extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, **self.extra}


def api_error_of(exc: BaseException) -> ApiError | None:
    """The HTTP answer for a known problem of the product, or None for a bug."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PhotoRefused):  # the ingest's reason code: not_a_regular_file, too_large, ...
        return ApiError(422, exc.reason, str(exc))
    table: list[tuple[type[BaseException], int, str]] = [
        (NotInGallery, 404, "not_found"),
        (GalleryNotFound, 404, "no_gallery"),
        (LabelConflict, 409, "conflict"),
        (GalleryBusy, 409, "busy"),
        (IndexBusyError, 409, "busy"),
        (NoIndexError, 409, "no_index"),
        (DamagedData, 500, "damaged_data"),
        (GalleryError, 400, "bad_request"),
        (FileNotFoundError, 400, "not_found"),
    ]
    for kind, status, error in table:
        if isinstance(exc, kind):
            return ApiError(status, error, str(exc))
    return None


class SearchService:
    """The worker's Searcher, opened on first use and reopened when the index manifest changes."""

    def __init__(self, gallery: Path, device: str = "auto") -> None:
        self.gallery = Path(gallery)
        self.device = device
        self.lock = threading.Lock()
        self._searcher: Searcher | None = None
        self._manifest_key: tuple[int, int] | None = None
        self._watch: Any = None

    def _manifest_state(self) -> tuple[int, int] | None:
        from gallery.store.gallery import INDEX_DIR
        from indexer.manifest import MANIFEST

        try:
            st = (self.gallery / INDEX_DIR / MANIFEST).stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _current(self) -> Searcher:
        """The searcher for the gallery as it is now (called with the lock held)."""
        if self._searcher is None:
            self._check_searchable()
        from search.searcher import Searcher

        state = self._manifest_state()
        if self._searcher is None or state != self._manifest_key:
            fresh = Searcher(self.gallery, device=self.device)
            if self._searcher is not None:
                fresh._pipeline = self._searcher._pipeline  # the loaded models stay: only the index changed
                self._searcher.close()
            if self._watch is not None:
                self._watch.close()
            self._searcher, self._manifest_key = fresh, state
            self._watch = fresh.gallery.watch_changes()
            self._watch.poll()
        elif self._watch.poll():
            # labels changed or a calibration was stored: the rule and thresholds in force may differ now
            try:
                self._searcher.refresh_decision()
            except GalleryError as exc:
                log.warning("kept the previous decision rule: %s", exc)
        return self._searcher

    def _check_searchable(self) -> None:
        """A gallery without faces has nothing to search: say so without loading torch and the models."""
        from gallery.store import Gallery

        with Gallery.open(self.gallery) as g:
            if g.model_stamp is None:
                raise ApiError(409, "empty_gallery", f"Gallery '{self.gallery}' has no faces yet: enrol people "
                                                     "(POST /v1/identities) or ingest photos (POST /v1/ingest, or "
                                                     f"gallery ingest PHOTOS --gallery {self.gallery}).")

    @contextmanager
    def searcher(self, threshold: float | None = None) -> Iterator[Searcher]:
        """The searcher, for this request alone with an explicit threshold when one is given."""
        with self.lock:
            s = self._current()
            saved = s.threshold, s.threshold_source, s.one_to_one, s.one_to_one_source
            if threshold is not None:  # the threshold of the question asked: statistic (1:K) or cosine (1:1)
                s.threshold, s.threshold_source = float(threshold), "threshold parameter"
                s.one_to_one, s.one_to_one_source = float(threshold), "threshold parameter (1:1)"
            try:
                yield s
            finally:
                s.threshold, s.threshold_source, s.one_to_one, s.one_to_one_source = saved

    def warm_up(self) -> None:
        """Load the index and the models now; a gallery that cannot be searched yet (no index) is fine."""
        try:
            with self.searcher() as s:
                s.pipeline  # noqa: B018 - loads the detector and the embedder
        except (GalleryError, ApiError) as exc:
            log.info("not searchable yet: %s", exc)

    def close(self) -> None:
        with self.lock:
            if self._searcher is not None:
                self._searcher.close()
                self._searcher = None
            if self._watch is not None:
                self._watch.close()
                self._watch = None
