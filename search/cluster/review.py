"""Looking at clusters and acting on them: list, show, contact sheet, name, split, reject."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gallery.errors import GalleryError
from gallery.store import Gallery
from gallery.store.clusters import ClusterRow, NewCluster
from search.cluster.graph import knn_graph
from search.cluster.outliers import Outlyingness, outlyingness
from search.cluster.settings import MODEL_DEFAULTS, ClusterSettings, defaults_key, resolve_settings

SHEET_TILE = 128
DOUBTFUL_COLOUR = (230, 60, 60)
SHEET_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}


@dataclass
class ClusterSummary:
    cluster: int
    size: int
    name: str | None
    representative_face: int | None
    representative_photo: str | None
    box: list[float] | None
    suggestion: dict[str, Any] | None = None  # {"identity", "score"}: labeled people nearby

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClusterDetail(ClusterSummary):
    # face_id, photo, box, identity, similarity (mean cosine to the cluster's other faces) and doubtful
    # (a stricter split takes it out of the main part): doubtful faces first, then lowest similarity first
    faces: list[dict[str, Any]] = field(default_factory=list)
    doubtful: int = 0


@dataclass
class NameResult:
    cluster: int
    name: str
    faces_labeled: int
    merged: bool  # the name existed: the cluster's faces joined that person
    # faces a stricter split takes out of the cluster's main part ({"face_id", "similarity"}, lowest first)
    far_faces: list[dict[str, Any]] = field(default_factory=list)
    left_unnamed: int = 0  # of those, faces left without the name (strict naming)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SplitResult:
    cluster: int
    threshold: float
    floor: float
    into: list[dict[str, int]]  # [{"cluster", "size"}], largest first; empty: nothing to split
    unclustered: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RejectResult:
    cluster: int
    rejected: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summaries(g: Gallery, rows: list[ClusterRow]) -> list[ClusterSummary]:
    records = g.face_records({r.representative_face_id for r in rows if r.representative_face_id is not None})
    out = []
    for r in rows:
        rec = records.get(r.representative_face_id) if r.representative_face_id is not None else None
        if rec is None:  # its representative was deleted: show another face of the cluster
            first = g.cluster_face_ids(r.cluster_id)[:1]
            rec = g.face_records(first).get(first[0]) if first else None
        out.append(ClusterSummary(r.cluster_id, r.size, r.name, rec.face_id if rec else None,
                                  rec.photo if rec else None, rec.box if rec else None))
    return out


def _suggest(g: Gallery, summaries: list[ClusterSummary]) -> None:
    """For unnamed clusters: the labeled person nearest their representative face, when a search would
    name it (score above the gallery's match threshold)."""
    todo = [s for s in summaries if s.name is None and s.representative_face is not None]
    if not todo or g.labeled_counts().faces == 0:
        return
    from search.searcher import Searcher

    try:
        searcher = Searcher(g.root, k=1)
    except GalleryError:
        return  # no threshold for this model: no suggestion is better than a guess
    with searcher:
        vectors = g.read_embeddings([s.representative_face for s in todo])
        excluded = [set(g.cluster_face_ids(s.cluster)) for s in todo]
        for summary, answer in zip(todo, searcher.search_embeddings(vectors, k=1, exclude_face_ids=excluded)):
            if not answer.unknown and answer.identity is not None:
                summary.suggestion = {"identity": answer.identity, "score": round(float(answer.score or 0), 4)}


def list_clusters(gallery_dir: Path | str, *, min_size: int = 2, limit: int = 0,
                  suggest: bool = True) -> list[ClusterSummary]:
    """Clusters largest first, each with its representative face and, when unnamed, a suggestion."""
    with Gallery.open(gallery_dir) as g:
        rows = g.cluster_rows(min_size=max(1, min_size))
        rows = rows[:limit] if limit else rows
        summaries = _summaries(g, rows)
        if suggest:
            _suggest(g, summaries)
    return summaries


def _outliers(g: Gallery, face_ids: list[int]) -> tuple[np.ndarray, Outlyingness]:
    """The cluster's faces in review order (doubtful first, then farthest from the rest) and their
    outlyingness, with the stricter setting `clusters split` would use."""
    ids = np.asarray(face_ids, np.int64)
    found = outlyingness(g.read_embeddings(ids), _split_settings(g, None))
    order = found.order()
    return ids[order], Outlyingness(found.similarity[order], found.doubtful[order])


def count_clusters(gallery_dir: Path | str, *, min_size: int = 2) -> int:
    """How many clusters `list_clusters` would list without a limit."""
    with Gallery.open(gallery_dir) as g:
        return len(g.cluster_rows(min_size=max(1, min_size)))


def show_cluster(gallery_dir: Path | str, cluster_id: int, *, suggest: bool = True) -> ClusterDetail:
    """One cluster and its faces, the doubtful ones first (a person sees them before naming)."""
    with Gallery.open(gallery_dir) as g:
        face_ids = g.cluster_face_ids(cluster_id)
        rows = g.cluster_rows([cluster_id])
        summary = _summaries(g, rows)[0] if rows else ClusterSummary(cluster_id, 0, None, None, None, None)
        if suggest:
            _suggest(g, [summary])
        records = g.face_records(face_ids)
        ordered, found = _outliers(g, [f for f in face_ids if f in records])
    detail = ClusterDetail(**asdict(summary))
    detail.faces = [{"face_id": f, "photo": records[f].photo, "box": records[f].box, "identity": records[f].identity,
                     "similarity": round(float(sim), 4), "doubtful": bool(far),
                     **({"t_ms": records[f].t_ms, "clip": records[f].clip} if records[f].clip else {})}
                    for f, sim, far in zip(ordered.tolist(), found.similarity, found.doubtful)]
    detail.doubtful = int(found.doubtful.sum())
    return detail


def name_cluster(gallery_dir: Path | str, cluster_id: int, name: str, *, strict: bool = False) -> NameResult:
    """All the cluster's faces get the identity `name`; an existing name merges the cluster into it.

    The faces a stricter split would take out of the cluster's main part are reported (`far_faces`);
    `strict` leaves them without the name (they stay in the cluster, for a person to look at)."""
    with Gallery.open(gallery_dir) as g, g.writer_lock():
        ordered, found = _outliers(g, g.cluster_face_ids(cluster_id))
        far = [{"face_id": int(f), "similarity": round(float(sim), 4)}
               for f, sim, d in zip(ordered, found.similarity, found.doubtful) if d]
        skip = [f["face_id"] for f in far] if strict else []
        n, existed = g.name_cluster(cluster_id, name, except_faces=skip)
    return NameResult(cluster_id, name.strip(), n, existed, far, len(skip))


def reject_faces(gallery_dir: Path | str, cluster_id: int, face_ids: list[int]) -> RejectResult:
    """Faces that do not belong leave the cluster, unclustered, and never rejoin it."""
    if not face_ids:
        raise GalleryError("Name the faces to take out of the cluster (ids as `gallery clusters show` lists).")
    with Gallery.open(gallery_dir) as g, g.writer_lock():
        n = g.reject_from_cluster(cluster_id, face_ids)
    return RejectResult(cluster_id, n)


def _split_settings(g: Gallery, threshold: float | None) -> ClusterSettings:
    """The gallery's clustering setting (or the model's default) made stricter: by `threshold` when
    given, else one step; the floor moves by as much."""
    previous = g.clustering_settings()
    model = defaults_key(g.model_stamp)
    if previous is None and model not in MODEL_DEFAULTS:
        if threshold is None:
            raise GalleryError("Give the stricter setting with --threshold (this model has no measured default).")
        return ClusterSettings(threshold=threshold, floor=threshold)
    return resolve_settings(model, previous).stricter(threshold)


def split_cluster(gallery_dir: Path | str, cluster_id: int, *, threshold: float | None = None) -> SplitResult:
    """Cluster one cluster's faces again with a stricter setting (default: the gallery's, one step
    stricter); the parts become new clusters, faces left alone leave it."""
    from search.cluster.run import _groups, cluster_labels, representative

    with Gallery.open(gallery_dir) as g, g.writer_lock():
        settings = _split_settings(g, threshold)
        face_ids = np.asarray(g.cluster_face_ids(cluster_id), np.int64)
        if face_ids.size < 2:
            return SplitResult(cluster_id, settings.threshold, settings.floor, [], 0)
        x = g.read_embeddings(face_ids)
        labels = cluster_labels(x, knn_graph(x, min(settings.k, face_ids.size - 1)), settings)
        groups = sorted(_groups(labels), key=len, reverse=True)
        if len(groups) == 1:  # still one person at the stricter setting: nothing changes
            return SplitResult(cluster_id, settings.threshold, settings.floor, [], 0)
        parts = [NewCluster([int(f) for f in face_ids[m]], int(face_ids[m[representative(x[m])]]), cluster_id)
                 for m in groups if m.size >= 2]
        alone = [int(face_ids[m[0]]) for m in groups if m.size == 1]
        ids = g.replace_cluster(cluster_id, parts, alone)
    return SplitResult(cluster_id, settings.threshold, settings.floor,
                       [{"cluster": c, "size": len(p.face_ids)} for c, p in zip(ids, parts)], len(alone))


def contact_sheet(gallery_dir: Path | str, cluster_id: int, out_path: Path | str, *, max_faces: int = 64,
                  tile: int = SHEET_TILE) -> Path:
    """A grid of the cluster's face crops, cut from the original photos, each captioned with its face
    id (what `clusters reject` takes) and its similarity to the rest: a person judges the cluster at a
    glance. Faces in review order (doubtful first, framed in red, then farthest from the rest)."""
    from PIL import Image, ImageDraw

    from gallery.faces.crop import crop_face

    out = Path(out_path)
    fmt = SHEET_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise GalleryError(f"Write the sheet as {', '.join(SHEET_FORMATS)} (got '{out.name}').")
    detail = show_cluster(gallery_dir, cluster_id, suggest=False)
    faces = detail.faces[:max_faces]
    if not faces:
        raise GalleryError(f"Cluster {cluster_id} has no live faces.")
    cols = min(len(faces), max(1, math.ceil(math.sqrt(len(faces)))))
    rows = math.ceil(len(faces) / cols)
    caption = 16
    sheet = Image.new("RGB", (cols * tile, rows * (tile + caption)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for i, face in enumerate(faces):
        x, y = (i % cols) * tile, (i // cols) * (tile + caption)
        try:
            sheet.paste(crop_face(face["photo"], face["box"], margin=0.2, size=tile, t_ms=face.get("t_ms")), (x, y))
        except GalleryError:
            draw.text((x + 8, y + tile // 2), "photo missing", fill=DOUBTFUL_COLOUR)
        if face["doubtful"]:
            draw.rectangle((x, y, x + tile - 1, y + tile - 1), outline=DOUBTFUL_COLOUR, width=4)
        draw.text((x + 4, y + tile + 2), f"{face['face_id']}{' ?' if face['doubtful'] else ''}",
                  fill=DOUBTFUL_COLOUR if face["doubtful"] else (230, 230, 230))
        draw.text((x + tile - 40, y + tile + 2), f"{face['similarity']:.2f}", fill=(160, 160, 160))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out
