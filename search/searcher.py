"""`Searcher`: open a gallery once, then answer "who is this?" for photos or embeddings many times.

The query is detected, aligned and embedded with the gallery's own model; the FAISS index returns
the nearest faces (deleted ones never), merged with an exact search over the faces ingested since
the index was built (search.tail); SQLite maps their vector ids to identities and photos.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gallery.errors import GalleryError
from gallery.faces.models import check_weights, model_for_gallery
from gallery.faces.pipeline import FacePipeline, PhotoFaces
from gallery.store import Gallery
from indexer import LoadedIndex, load_index
from indexer.manifest import manifest_version
from search.decision import DecisionRule
from search.identify import FaceAnswer, Neighbour, decide, parse_aggregation, too_poor_answer
from search.tail import TAIL_WARN_FACES, UnindexedTail, merge_topk
from search.templates import TemplateSearch
from search.threshold import resolve_decision, resolve_one_to_one

MAX_NEIGHBOURS = 2048  # FAISS GPU caps k at 2048; the CPU path keeps the same bound
LOOK_ALIKES = 8  # templates searched per query for a look-alike the nearest faces do not show


class Searcher:
    """Answers queries against one gallery; one searcher answers many threads at once (a server's
    requests), each query with its own threshold when it gives one (`threshold=`): nothing a query
    asks changes the searcher. Open one per process."""

    def __init__(
        self,
        gallery_dir: Path | str,
        k: int = 5,
        nprobe: int | None = None,
        threshold: float | None = None,
        aggregation: str = "max",
        device: str = "auto",
        weights: Path | None = None,
        weight: float | None = None,
        rule: DecisionRule | None = None,
        quality_gate: bool = True,
        low_quality_evidence: bool = True,
    ) -> None:
        """`threshold` and `weight` override the gallery's calibrated (or default) threshold on the decision
        statistic and runner-up weight; `rule` replaces the whole rule (benchmarks comparing rules);
        `quality_gate=False` answers query faces below the quality gate anyway."""
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
            self._overrides = (threshold, weight, rule)
            self.refresh_decision()
            self.quality_gate = quality_gate
            self.low_quality_evidence = low_quality_evidence  # False: gallery faces below the gate name no one
            self._index_version = manifest_version(self.gallery.index_dir)  # before loading: a change after it shows
            self.index: LoadedIndex = load_index(self.gallery)
            self.templates = TemplateSearch(self.gallery)
            self.tail = UnindexedTail(self.gallery, int(self.index.manifest["last_shard_id"]), self.spec.dim)
            self._problems = self.gallery.quick_problems()
        except BaseException:
            self.gallery.close()
            raise
        self._device = device
        self._weights = weights
        self._pipeline: FacePipeline | None = None
        self._pipeline_lock = threading.Lock()  # the models are loaded once
        self._models_lock = threading.Lock()  # one photo through the detector and embedder at a time
        # one k-NN at a time: FAISS and numpy already use the cores for one query, and several at once only
        # compete (benchmarks/serve_load.py on a 2-core x86 VM, 4 clients of embedding searches: p99 61 ms one
        # at a time, 158 ms all at once)
        self._knn_lock = threading.Lock()

    def refresh_decision(self) -> None:
        """(Re)read the decision rule, the 1:K threshold and the 1:1 threshold in force (after a calibration
        or a label change, a long-lived searcher calls this); the constructor's overrides stay."""
        threshold, weight, rule = self._overrides
        decision = resolve_decision(self.gallery, threshold, weight)
        if decision.threshold is None:
            raise GalleryError(f"No match threshold for gallery '{self.gallery.root}': {decision.source}.")
        self.rule = rule if rule is not None else decision.rule
        self.threshold = float(decision.threshold)
        self.threshold_source = decision.source
        one, self.one_to_one_source = resolve_one_to_one(self.gallery, threshold)
        self.one_to_one = float(one) if one is not None else self.threshold

    def decision_threshold(self, threshold: float | None = None, faces_mode: bool = False) -> tuple[float, str]:
        """(threshold, source) a query is decided with: the one it gives, else the gallery's in force, on
        the decision statistic (1:K, identities) or on the cosine of two faces (1:1, faces mode and
        verification)."""
        if threshold is not None:
            return float(threshold), "threshold parameter (1:1)" if faces_mode else "threshold parameter"
        return (self.one_to_one, self.one_to_one_source) if faces_mode else (self.threshold, self.threshold_source)

    @property
    def pipeline(self) -> FacePipeline:
        """The detector and embedder, loaded on first photo query (embedding queries need neither)."""
        if self._pipeline is None:
            with self._pipeline_lock:
                if self._pipeline is None:
                    self._pipeline = FacePipeline(self.spec, self._device, self._weights)
        return self._pipeline

    def use_pipeline_of(self, other: Searcher) -> None:
        """Share the models `other` has loaded already (the same gallery reopened after an index change:
        the index changed, not the model)."""
        if other.spec == self.spec and other._pipeline is not None:
            self._pipeline = other._pipeline

    def faces_of(self, photo: Path | str, largest_only: bool = False) -> PhotoFaces:
        """The faces of a photo, detected, aligned and embedded with the gallery's model (one photo at a
        time through the models: on a few cores parallel model runs only compete)."""
        pipeline = self.pipeline
        with self._models_lock:
            return pipeline.faces_of(photo, largest_only=largest_only)

    def index_is_current(self) -> bool:
        """False once the index was rebuilt, updated or patched since this searcher loaded it: a long-lived
        reader (a server) opens a new searcher then."""
        return manifest_version(self.gallery.index_dir) == self._index_version

    def close(self) -> None:
        self.templates.close()
        self.tail.close()
        self.index.close()
        self.gallery.close()

    @property
    def warnings(self) -> list[str]:
        """What the user should know about every answer of this searcher right now."""
        self.tail.refresh()
        out = [f"{p}: answers may miss faces; run gallery check --gallery {self.gallery.root}" for p in self._problems]
        out += self.index.warnings  # damage found in the index files (the answers did not use it)
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
        self, photo: Path | str, largest_only: bool = False, faces_mode: bool = False, k: int | None = None,
        threshold: float | None = None,
    ) -> tuple[PhotoFaces, list[FaceAnswer]]:
        """All faces of a photo (or its main face), each answered; a face below the quality gate is
        answered "too poor to identify" with its reason. An unusable photo has `.error` set.
        `threshold`: this query's own (see `decision_threshold`)."""
        found = self.faces_of(photo, largest_only=largest_only)
        if not found.ok:
            return found, []
        return found, self.answer_faces(found, k=k, faces_mode=faces_mode, query=str(photo), threshold=threshold)

    def answer_faces(self, found: PhotoFaces, k: int | None = None, faces_mode: bool = False,
                     query: str | None = None, threshold: float | None = None) -> list[FaceAnswer]:
        """Answers for the embedded faces of one photo, in detection order (quality gate included)."""
        quality = [q.as_dict() for q in found.quality(self.spec)]
        faces = [{"index": f.index, "box": f.box, "det_score": f.det_score, "is_main": f.is_main}
                 for f in found.faces]
        return self._answer_gated(found.embeddings, quality, faces, [query] * len(faces), k, faces_mode,
                                  threshold=threshold)

    def search_stored(self, face_ids: Sequence[int], k: int | None = None, faces_mode: bool = False,
                      exclude_self: bool = True, threshold: float | None = None) -> list[FaceAnswer]:
        """Answer gallery faces as queries (their stored embeddings and quality verdicts), each one
        excluded from its own answer: "who else is this face?" and the held-out benchmarks."""
        ids = [int(f) for f in face_ids]
        x = self.gallery.read_embeddings(ids)
        rows = self.gallery.face_quality_rows(ids, live_only=False)
        quality = [{"ok": rows[f]["quality_issue"] is None, "issue": rows[f]["quality_issue"]} for f in ids]
        faces = [{"face_id": f} for f in ids]
        return self._answer_gated(x, quality, faces, [None] * len(ids), k, faces_mode,
                                  [{f} for f in ids] if exclude_self else None, threshold=threshold)

    def _answer_gated(self, x: np.ndarray, quality: list[dict], faces: list[dict], queries: list[str | None],
                      k: int | None, faces_mode: bool, exclude: list[set[int]] | None = None,
                      threshold: float | None = None) -> list[FaceAnswer]:
        """Search the faces that pass the quality gate; the others are answered "too poor to identify"."""
        value, source = self.decision_threshold(threshold, faces_mode)
        usable = [i for i, q in enumerate(quality) if q["ok"] or not self.quality_gate]
        answers: list[FaceAnswer | None] = [None] * len(faces)
        if usable:
            found = self.search_embeddings(np.stack([x[i] for i in usable]), k=k, faces_mode=faces_mode,
                                           faces=[faces[i] for i in usable],
                                           exclude_face_ids=[exclude[i] for i in usable] if exclude else None,
                                           threshold=threshold)
            for i, a in zip(usable, found):
                a.query, a.quality = queries[i], quality[i]
                answers[i] = a
        for i, a in enumerate(answers):
            if a is None:
                answers[i] = too_poor_answer(queries[i], faces[i], value, quality[i], faces_mode)
                answers[i].threshold_source = source
        return [a for a in answers if a is not None]

    def search_embeddings(
        self,
        embeddings: np.ndarray,
        k: int | None = None,
        faces_mode: bool = False,
        query: str | None = None,
        faces: Sequence[dict] | None = None,
        exclude_face_ids: Sequence[set[int]] | None = None,
        threshold: float | None = None,
    ) -> list[FaceAnswer]:
        """Answer each row of an (n, D) array of unit embeddings (`threshold`: this query's own, see
        `decision_threshold`)."""
        with self._knn_lock:
            return self._search_embeddings(embeddings, k, faces_mode, query, faces, exclude_face_ids, threshold)

    def _search_embeddings(self, embeddings: np.ndarray, k: int | None, faces_mode: bool, query: str | None,
                           faces: Sequence[dict] | None, exclude_face_ids: Sequence[set[int]] | None,
                           threshold: float | None) -> list[FaceAnswer]:
        k = k or self.k
        value, source = self.decision_threshold(threshold, faces_mode)
        x = np.ascontiguousarray(np.atleast_2d(embeddings), dtype=np.float32)
        if x.shape[1] != self.spec.dim:
            raise ValueError(f"Embeddings have dimension {x.shape[1]}; this gallery's model has {self.spec.dim}.")
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        if faces_mode:
            neighbours = self.neighbours(x, k, True, exclude_face_ids)
            answers = [decide(query, faces[i] if faces else None, neighbours[i], k, value, faces_mode=True)
                       for i in range(len(x))]
            for answer in answers:
                answer.threshold_source = source
            return answers
        # at least 3 identities, as the calibration searches (search.evaluation): the same candidates
        neighbours = self.neighbours(x, max(k, 3), False, exclude_face_ids)
        cosines = self.template_cosines(x, neighbours)
        look = self.look_alikes(x, neighbours)
        look_names = self.gallery.identity_names({a[0] for a in look if a is not None})
        answers = []
        for i in range(len(x)):
            names = {n.identity_id: n.identity for n in neighbours[i] if n.identity_id is not None}
            answer = decide(query, faces[i] if faces else None, neighbours[i], k, value, self.aggregation,
                            rule=self.rule, template_scores={names[j]: c for j, c in cosines[i].items() if j in names},
                            look_alike=(look_names[look[i][0]], look[i][1]) if look[i] is not None
                            and look[i][0] in look_names else None)
            answer.threshold_source = source
            answers.append(answer)
        return answers

    def look_alikes(self, x: np.ndarray, neighbours: Sequence[Sequence[Neighbour]],
                    exclude_identity: Sequence[int | None] | None = None) -> list[tuple[int, float] | None]:
        """For each query, (identity id, template cosine) of the closest template whose identity has no face
        among the neighbours (and is not `exclude_identity[q]`), or None: the exact template search
        (search.templates; galleries up to its size limit)."""
        scores, ids = self.templates.search(x, LOOK_ALIKES)
        out: list[tuple[int, float] | None] = []
        for q, ns in enumerate(neighbours):
            found = {n.identity_id for n in ns if n.identity_id is not None}
            skip = exclude_identity[q] if exclude_identity is not None else None
            pick = None
            for score, identity_id in zip(scores[q], ids[q]):
                if identity_id >= 0 and int(identity_id) not in found and int(identity_id) != skip:
                    pick = (int(identity_id), float(score))
                    break
            out.append(pick)
        return out

    def template_cosines(
        self, x: np.ndarray, neighbours: Sequence[Sequence[Neighbour]],
        leave_out: Sequence[tuple[int, np.ndarray] | None] | None = None,
    ) -> list[dict[int, float]]:
        """For each query, identity id -> cosine with the template of each identity among its neighbours.
        `leave_out[q]` = (identity id, embedding): that face is taken out of that identity's template first
        (leave-one-out calibration: a probe never matches a template holding itself). An identity with no
        template (no good-quality face) is absent."""
        wanted = {n.identity_id for ns in neighbours for n in ns if n.identity_id is not None}
        rows = self.gallery.identity_templates(wanted)
        out: list[dict[int, float]] = []
        for q, ns in enumerate(neighbours):
            scores: dict[int, float] = {}
            drop = leave_out[q] if leave_out is not None else None
            for identity_id in {n.identity_id for n in ns if n.identity_id is not None}:
                row = rows.get(identity_id)
                if row is None:
                    continue
                count, total = row
                if drop is not None and drop[0] == identity_id:
                    count, total = count - 1, total - np.asarray(drop[1], np.float64)
                norm = float(np.linalg.norm(total))
                if count <= 0 or norm < 1e-9:
                    continue
                scores[identity_id] = float(np.dot(x[q], total) / norm)
            out.append(scores)
        return out

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
                    Neighbour(int(i), float(s), r.identity, r.photo, r.box, r.image_id, r.identity_id, r.clip)
                    for s, i in zip(scores[row], ids[row])
                    if i >= 0 and (r := records.get(int(i))) is not None and int(i) not in excluded
                    and (self.low_quality_evidence or faces_mode or r.quality_issue is None)
                ]
                distinct = len({n.identity for n in found if n.identity is not None})
                enough = len(found) >= k if faces_mode else distinct >= k
                if not enough and fetch < min(MAX_NEIGHBOURS, ntotal):
                    retry.append(q)
                results[q] = found
            todo = retry
            fetch = min(MAX_NEIGHBOURS, ntotal, fetch * 4)
        return [r or [] for r in results]
