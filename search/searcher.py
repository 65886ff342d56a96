"""`Searcher`: open a gallery once, then answer "who is this?" for photos or embeddings many times.

The query is detected, aligned and embedded with the gallery's own model; the FAISS index returns
the nearest faces (deleted ones never), merged with an exact search over the faces ingested since
the index was built (search.tail); SQLite maps their vector ids to identities and photos.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gallery.errors import GalleryError
from gallery.faces.models import check_weights, model_for_gallery
from gallery.faces.pipeline import FacePipeline, PhotoFaces
from gallery.store import Gallery
from indexer import LoadedIndex, load_index
from search.identify import FaceAnswer, Neighbour, decide, parse_aggregation
from search.tail import TAIL_WARN_FACES, UnindexedTail, merge_topk
from search.threshold import resolve_threshold

MAX_NEIGHBOURS = 2048  # FAISS GPU caps k at 2048; the CPU path keeps the same bound


class Searcher:
    """Answers queries against one gallery. Thread-compatible for reads; open one per process."""

    def __init__(
        self,
        gallery_dir: Path | str,
        k: int = 5,
        nprobe: int | None = None,
        threshold: float | None = None,
        aggregation: str = "max",
        device: str = "auto",
        weights: Path | None = None,
    ) -> None:
        self.gallery = Gallery.open(gallery_dir)
        try:
            stamp = self.gallery.model_stamp
            if stamp is None:
                raise GalleryError(
                    f"Gallery '{gallery_dir}' has no faces yet: run `gallery ingest PHOTOS --gallery {gallery_dir}`."
                )
            self.spec = model_for_gallery(stamp)
            check_weights(self.spec, weights)
            self.k = k
            self.nprobe = nprobe
            try:
                parse_aggregation(aggregation)
            except ValueError as exc:
                raise GalleryError(str(exc)) from None
            self.aggregation = aggregation
            resolved, self.threshold_source = resolve_threshold(self.gallery, threshold)
            if resolved is None:
                raise GalleryError(f"No match threshold for gallery '{gallery_dir}': {self.threshold_source}.")
            self.threshold = float(resolved)
            self.index: LoadedIndex = load_index(self.gallery)
            self.tail = UnindexedTail(self.gallery, int(self.index.manifest["last_shard_id"]), self.spec.dim)
            self._problems = self.gallery.quick_problems()
        except BaseException:
            self.gallery.close()
            raise
        self._device = device
        self._weights = weights
        self._pipeline: FacePipeline | None = None

    @property
    def pipeline(self) -> FacePipeline:
        """The detector and embedder, loaded on first photo query (embedding queries need neither)."""
        if self._pipeline is None:
            self._pipeline = FacePipeline(self.spec, self._device, self._weights)
        return self._pipeline

    def close(self) -> None:
        self.tail.close()
        self.index.close()
        self.gallery.close()

    @property
    def warnings(self) -> list[str]:
        """What the user should know about every answer of this searcher right now."""
        self.tail.refresh()
        out = [f"{p}: answers may miss faces; run gallery check --gallery {self.gallery.root}" for p in self._problems]
        if self.tail.size > TAIL_WARN_FACES:
            out.append(
                f"{self.tail.size:,} faces are not in the index yet and are searched exactly, which slows every "
                f"query; fold them in with: gallery index update --gallery {self.gallery.root}"
            )
        return out

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- queries -----------------------------------------------------------------------------

    def search(
        self, photo: Path | str, largest_only: bool = False, faces_mode: bool = False, k: int | None = None
    ) -> tuple[PhotoFaces, list[FaceAnswer]]:
        """All faces of a photo (or its main face), each answered. An unusable photo has `.error` set."""
        found = self.pipeline.faces_of(photo, largest_only=largest_only)
        if not found.ok:
            return found, []
        embeddings = np.stack([f.embedding for f in found.faces])
        faces = [{"index": f.index, "box": f.box, "det_score": f.det_score, "is_main": f.is_main} for f in found.faces]
        answers = self.search_embeddings(embeddings, k=k, faces_mode=faces_mode, query=str(photo), faces=faces)
        return found, answers

    def search_embeddings(
        self,
        embeddings: np.ndarray,
        k: int | None = None,
        faces_mode: bool = False,
        query: str | None = None,
        faces: Sequence[dict] | None = None,
        exclude_face_ids: Sequence[set[int]] | None = None,
    ) -> list[FaceAnswer]:
        """Answer each row of an (n, D) array of unit embeddings."""
        k = k or self.k
        x = np.ascontiguousarray(np.atleast_2d(embeddings), dtype=np.float32)
        if x.shape[1] != self.spec.dim:
            raise ValueError(f"Embeddings have dimension {x.shape[1]}; this gallery's model has {self.spec.dim}.")
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        neighbours = self.neighbours(x, k, faces_mode, exclude_face_ids)
        answers = [
            decide(query, faces[i] if faces else None, neighbours[i], k, self.threshold, self.aggregation, faces_mode)
            for i in range(len(x))
        ]
        for answer in answers:
            answer.threshold_source = self.threshold_source
        return answers

    def neighbours(
        self,
        x: np.ndarray,
        k: int,
        faces_mode: bool = False,
        exclude_face_ids: Sequence[set[int]] | None = None,
    ) -> list[list[Neighbour]]:
        """Nearest live gallery faces for each query, enough of them to rank k distinct identities.

        Starts at max(100, 10k) faces and widens (×4, up to 2048) for queries whose neighbours still
        hold fewer than k identities: one person with hundreds of photos must not crowd out the rest.
        """
        self.tail.refresh()
        ntotal = max(1, int(self.index.ntotal) + self.tail.size)
        fetch = min(MAX_NEIGHBOURS, ntotal, k + 16 if faces_mode else max(100, 10 * k))
        results: list[list[Neighbour] | None] = [None] * len(x)
        todo = list(range(len(x)))
        while todo:
            # Re-rank 2x the faces we keep (not the indexer's 10x default): identities are ranked from
            # many neighbours, so the far end of the list needs no exhaustive exact re-scoring.
            candidates = max(int(getattr(self.index, "rerank_candidates", 0) or 0), 2 * fetch)
            found_index = self.index.search(x[todo], fetch, nprobe=self.nprobe, candidates=candidates)
            scores, ids = merge_topk(found_index, self.tail.search(x[todo], fetch), fetch)
            records = self.gallery.face_records({int(i) for i in ids.ravel() if i >= 0})
            retry = []
            for row, q in enumerate(todo):
                excluded = exclude_face_ids[q] if exclude_face_ids else set()
                found = [
                    Neighbour(int(i), float(s), r.identity, r.photo, r.box, r.image_id)
                    for s, i in zip(scores[row], ids[row])
                    if i >= 0 and (r := records.get(int(i))) is not None and int(i) not in excluded
                ]
                distinct = len({n.identity for n in found if n.identity is not None})
                enough = len(found) >= k if faces_mode else distinct >= k
                if not enough and fetch < min(MAX_NEIGHBOURS, ntotal):
                    retry.append(q)
                results[q] = found
            todo = retry
            fetch = min(MAX_NEIGHBOURS, ntotal, fetch * 4)
        return [r or [] for r in results]
