"""One worker's search machinery: a `Searcher` loaded once, reloaded when the index changes, and the
one mapping from the product's errors to HTTP answers (a reason, never a 500).

Requests share the searcher and run at once: each passes its own threshold with its query (nothing a
request asks changes the searcher), the searcher lets one photo at a time through the detector and
embedder (on a few cores parallel model runs only compete) while embedding searches, listings and
edits go on. Writers (ingest jobs, edits, erasure) take no lock of the searcher: SQLite's WAL lets
searches read while they write, the searcher sees new faces and deletions at its next query, and a new
index (build, update, erasure) is picked up by the next request, which opens a new searcher; the old
one is closed when its last request ends.
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
    VerifyError,
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
    if isinstance(exc, PhotoRefused | VerifyError) and exc.reason:  # the ingest's reason: not_an_image, no_face...
        return ApiError(422, exc.reason, str(exc), **({"file": exc.file} if exc.file is not None else {}))
    from gallery.app.answers import InvalidThreshold

    table: list[tuple[type[BaseException], int, str]] = [
        (InvalidThreshold, 422, "bad_request"),
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
    """The worker's Searcher, opened on first use and reopened when the index changes."""

    def __init__(self, gallery: Path, device: str = "auto") -> None:
        self.gallery = Path(gallery)
        self.device = device
        self._lock = threading.Lock()  # held to pick (or reopen) the searcher, never for a whole request
        self._searcher: Searcher | None = None
        self._users: dict[int, int] = {}  # id(searcher) -> requests using it now
        self._retired: dict[int, Searcher] = {}  # replaced searchers still in use: closed by their last user
        self._watch: Any = None

    def _current(self) -> Searcher:
        """The searcher for the gallery as it is now (called with the lock held)."""
        if self._searcher is None:
            self._check_searchable()
        from search.searcher import Searcher

        if self._searcher is None or not self._searcher.index_is_current():
            fresh = Searcher(self.gallery, device=self.device)
            old = self._searcher
            if old is not None:
                fresh.use_pipeline_of(old)  # the loaded models stay: only the index changed
                self._retire(old)
            if self._watch is not None:
                self._watch.close()
            self._searcher = fresh
            self._watch = fresh.gallery.watch_changes()
            self._watch.poll()
        elif self._watch.poll():
            # labels changed or a calibration was stored: the rule and thresholds in force may differ now
            try:
                self._searcher.refresh_decision()
            except GalleryError as exc:
                log.warning("kept the previous decision rule: %s", exc)
        return self._searcher

    def _retire(self, old: Searcher) -> None:
        if self._users.get(id(old)):
            self._retired[id(old)] = old
        else:
            old.close()

    def _check_searchable(self) -> None:
        """A gallery without faces has nothing to search: say so without loading torch and the models."""
        from gallery.store import Gallery

        with Gallery.open(self.gallery) as g:
            if g.model_stamp is None:
                raise ApiError(409, "empty_gallery", f"Gallery '{self.gallery}' has no faces yet: enrol people "
                                                     "(POST /v1/identities) or ingest photos (POST /v1/ingest, or "
                                                     f"gallery ingest PHOTOS --gallery {self.gallery}).")

    @contextmanager
    def searcher(self) -> Iterator[Searcher]:
        """The searcher for one request (shared with the requests running at the same time; a request
        passes its own threshold to the searcher's methods)."""
        with self._lock:
            s = self._current()
            self._users[id(s)] = self._users.get(id(s), 0) + 1
        try:
            yield s
        finally:
            with self._lock:
                left = self._users[id(s)] - 1
                if left:
                    self._users[id(s)] = left
                else:
                    del self._users[id(s)]
                    retired = self._retired.pop(id(s), None)
                    if retired is not None:
                        retired.close()

    def warm_up(self) -> None:
        """Load the index and the models now; a gallery that cannot be searched yet (no index) is fine."""
        try:
            with self.searcher() as s:
                s.pipeline  # noqa: B018 - loads the detector and the embedder
        except (GalleryError, ApiError) as exc:
            log.info("not searchable yet: %s", exc)

    def close(self) -> None:
        with self._lock:
            if self._searcher is not None:
                self._searcher.close()
                self._searcher = None
            for old in self._retired.values():
                old.close()
            self._retired.clear()
            if self._watch is not None:
                self._watch.close()
                self._watch = None
