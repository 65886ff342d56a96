"""`gallery cluster`: group the live faces of a gallery into candidate people, full or incremental.

Full (the first run, or --rebuild): a k-NN graph over every face taken into account, then the chosen
method. Incremental (later runs): only the faces no clustering has seen yet are searched against the
gallery (its FAISS index plus the unindexed tail, exact where there is no index); they join existing
clusters, form new ones with each other or with earlier lone faces, or stay alone. Existing clusters
never merge with each other on an incremental run (that is a person's decision, or a --rebuild).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gallery.errors import GalleryError, NoIndexError
from gallery.progress import ProgressFn, report
from gallery.store import Gallery
from gallery.store.clusters import ALONE, NEW, NewCluster
from search.cluster.graph import REFINE_FACTOR, KnnGraph, knn_graph
from search.cluster.methods import average_link, core_points, single_link
from search.cluster.settings import ClusterSettings, changed_settings, defaults_key, resolve_settings

# faces to leave out: face ids, or (open gallery, sorted live face ids) -> boolean mask (True = out)
FaceFilter = Collection[int] | np.ndarray | Callable[[Gallery, np.ndarray], np.ndarray]

QUERY_BATCH = 1024
STREAM_ABOVE = 20_000  # faces to read: above this, stream every shard instead of looking each up


@dataclass
class ClusterReport:
    method: str
    threshold: float
    floor: float
    k: int
    cohesion_gap: float | None  # the consistency check's gaps (None: no check)
    join_gap: float | None
    crowd_k: int | None  # the crowd check (None or 0: none)
    crowd_margin: float | None
    crowd_margin_large: float | None
    faces: int  # faces taken into account
    excluded: int  # live faces the caller's `exclude` left out
    new_faces: int  # faces no clustering had seen before this run
    clusters: int  # clusters of two or more faces after the run
    clustered_faces: int  # faces in those clusters
    new_clusters: int
    joined: int  # new (or lone) faces that joined an existing cluster
    named_joined: int  # of those, faces that took the name of the named cluster they joined
    singletons: int  # faces in no cluster
    seconds: float
    rebuild: bool
    incremental: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cluster_labels(vectors: np.ndarray, graph: KnnGraph, settings: ClusterSettings, **kwargs: Any) -> np.ndarray:
    """One label per face with the settings' method (kwargs: starting labels/frozen, average only)."""
    if settings.method == "average":
        return average_link(vectors, graph, settings.threshold, floor=settings.floor, check=settings.consistency(),
                            crowd=settings.crowd(), **kwargs)
    if kwargs:
        raise GalleryError(f"Method '{settings.method}' cannot add faces to existing clusters; use --rebuild.")
    if settings.method == "single":
        return single_link(graph, settings.threshold)
    return core_points(graph, settings.threshold)


def excluded_mask(g: Gallery, face_ids: np.ndarray, exclude: FaceFilter | None) -> np.ndarray:
    """Boolean mask over the sorted live `face_ids`: True where `exclude` leaves the face out."""
    if exclude is None:
        return np.zeros(face_ids.size, bool)
    if callable(exclude):
        mask = np.asarray(exclude(g, face_ids))
        if mask.dtype != bool or mask.shape != face_ids.shape:
            raise GalleryError(f"An exclude function must return one boolean per face ({face_ids.size}), got "
                               f"{mask.dtype} of shape {mask.shape}.")
        return mask
    return np.isin(face_ids, np.fromiter((int(f) for f in exclude), np.int64))


def representative(vectors: np.ndarray) -> int:
    """Row of the face closest to the group's mean: the face a person sees first."""
    mean = vectors.astype(np.float64).sum(axis=0)
    return int(np.argmax(vectors @ mean))


def vectors_of(g: Gallery, face_ids: np.ndarray, dim: int) -> np.ndarray:
    """(n, D) embeddings of sorted face ids, streamed shard by shard (every shard verified)."""
    out = np.empty((face_ids.size, dim), np.float32)
    filled = 0
    for ids, x in g.iter_embeddings():
        pos = np.searchsorted(face_ids, ids)
        ok = pos < face_ids.size
        ok[ok] = face_ids[pos[ok]] == ids[ok]
        out[pos[ok]] = x[ok]
        filled += int(ok.sum())
    if filled != face_ids.size:
        raise GalleryError(f"{face_ids.size - filled} faces have no stored embedding: run gallery check "
                           f"--gallery {g.root}")
    return out


def _gallery_neighbours(g: Gallery, x: np.ndarray, k: int, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """k nearest live gallery faces (scores, face ids) through the gallery's index and its unindexed
    tail; None when the gallery has no index."""
    from indexer.loaded import load_index
    from search.tail import UnindexedTail, merge_topk

    try:
        index = load_index(g)
    except NoIndexError:
        return None
    tail = UnindexedTail(g, int(index.manifest["last_shard_id"]), dim)
    try:
        tail.refresh()
        scores = np.empty((x.shape[0], k), np.float32)
        ids = np.empty((x.shape[0], k), np.int64)
        for start in range(0, x.shape[0], QUERY_BATCH):
            q = x[start:start + QUERY_BATCH]
            # 8x candidates re-ranked exactly, as in the full graph (search.cluster.graph.REFINE_FACTOR)
            s, i = merge_topk(index.search(q, k, candidates=REFINE_FACTOR * k), tail.search(q, k), k)
            scores[start:start + QUERY_BATCH], ids[start:start + QUERY_BATCH] = s, i
        return scores, ids
    finally:
        tail.close()
        index.close()


def cluster_gallery(
    gallery_dir: Path | str,
    *,
    rebuild: bool = False,
    include_labeled: bool | None = None,
    include_low_quality: bool | None = None,
    threshold: float | None = None,
    floor: float | None = None,
    k: int | None = None,
    method: str | None = None,
    cohesion_gap: float | None = None,
    join_gap: float | None = None,
    crowd_k: int | None = None,
    crowd_margin: float | None = None,
    crowd_margin_large: float | None = None,
    exclude: FaceFilter | None = None,
    progress: ProgressFn | None = None,
) -> ClusterReport:
    """Cluster the gallery's faces (see the module docstring) and store the result.

    `exclude`: faces this run leaves out (a collection of face ids, or a function of the open gallery
    and the sorted live face ids that returns a boolean mask, True = leave out). A left-out face joins
    no cluster and is no neighbour of another face; a later run without it takes it in as a new face.
    """
    started = time.perf_counter()
    with Gallery.open(gallery_dir) as g, g.writer_lock():
        stamp = g.model_stamp
        if stamp is None:
            raise GalleryError(f"Gallery '{g.root}' has no faces yet: run gallery ingest PHOTOS --gallery {g.root}")
        previous = g.clustering_settings()
        incremental = previous is not None and not rebuild
        settings = resolve_settings(defaults_key(stamp), previous if incremental else None, threshold=threshold,
                                    floor=floor, k=k, method=method, include_labeled=include_labeled,
                                    include_low_quality=include_low_quality, cohesion_gap=cohesion_gap,
                                    join_gap=join_gap, crowd_k=crowd_k, crowd_margin=crowd_margin,
                                    crowd_margin_large=crowd_margin_large)
        if incremental and (changed := changed_settings(previous, settings)):
            raise GalleryError(
                f"This gallery was clustered with {', '.join(f'{c} {previous.get(c)}' for c in changed)}; new faces "
                f"are added the same way. To cluster everything again with the new setting: gallery cluster "
                f"--gallery {g.root} --rebuild ..."
            )
        faces = g.clustering_faces()
        eligible = (faces.cluster_ids >= 0) | (faces.identity_ids < 0)
        if settings.include_labeled:
            eligible[:] = True
        if not settings.include_low_quality and faces.low_quality is not None:
            eligible &= ~faces.low_quality  # below the quality gate: they would join people through blur
        left_out = excluded_mask(g, faces.face_ids, exclude)
        eligible &= ~left_out
        dim = int(stamp["dim"])
        record = {**settings.as_dict(), "model": stamp["name"], "at": time.time()}
        if incremental:
            result = _incremental(g, faces, eligible, settings, dim, progress)
        else:
            result = _full(g, faces, eligible, settings, dim, record, progress)
        final = result["final"]
        _, sizes = np.unique(final[(final >= 0) & eligible], return_counts=True)
        clusters, clustered = int((sizes >= 2).sum()), int(sizes[sizes >= 2].sum())
    return ClusterReport(
        method=settings.method, threshold=settings.threshold, floor=settings.floor, k=settings.k,
        cohesion_gap=settings.cohesion_gap, join_gap=settings.join_gap, crowd_k=settings.crowd_k,
        crowd_margin=settings.crowd_margin, crowd_margin_large=settings.crowd_margin_large, faces=int(eligible.sum()),
        excluded=int(left_out.sum()), new_faces=result["new_faces"], clusters=clusters, clustered_faces=clustered,
        new_clusters=result["new_clusters"], joined=result["joined"], named_joined=result["named_joined"],
        singletons=int(eligible.sum()) - clustered, seconds=round(time.perf_counter() - started, 3),
        rebuild=rebuild, incremental=incremental,
    )


def _groups(labels: np.ndarray) -> list[np.ndarray]:
    if labels.size == 0:
        return []
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return np.split(order, cuts)


def _full(g: Gallery, faces: Any, eligible: np.ndarray, settings: ClusterSettings, dim: int, record: dict,
          progress: ProgressFn | None) -> dict[str, int]:
    idx = np.flatnonzero(eligible)
    face_ids = faces.face_ids[idx]
    report(progress, "read", 0, int(idx.size), "faces")
    x = vectors_of(g, face_ids, dim)
    report(progress, "graph", 0, int(idx.size), "faces")
    graph = knn_graph(x, settings.k)
    report(progress, "cluster", 0, int(idx.size), "faces")
    labels = cluster_labels(x, graph, settings)
    # a face a person rejected from a cluster stays out of the cluster that inherits most of its faces
    old = faces.cluster_ids[idx]
    successor: dict[int, int] = {}
    for c in np.unique(old[old >= 0]):
        successor[int(c)] = Counter(labels[old == c].tolist()).most_common(1)[0][0]
    position = {int(f): i for i, f in enumerate(face_ids)}
    rejected: list[tuple[int, int]] = []  # (position, new label) pairs to keep apart
    unmapped: set[tuple[int, int]] = set()  # rejections this run cannot re-point: kept as they are
    for f, c in g.cluster_rejections():
        if f in position and c in successor:
            rejected.append((position[f], successor[c]))
        else:
            unmapped.add((f, c))  # old ids are below the high-water mark: never given out again
    next_label = int(labels.max()) + 1 if labels.size else 0
    for pos, lab in rejected:
        if labels[pos] == lab:
            labels[pos] = next_label
            next_label += 1
    new_clusters, alone = [], []
    label_cluster: dict[int, int] = {}
    for members in _groups(labels):
        if members.size < 2:
            alone.append(int(face_ids[members[0]]))
            continue
        label_cluster[int(labels[members[0]])] = len(new_clusters)
        rep = members[representative(x[members])]
        new_clusters.append(NewCluster([int(f) for f in face_ids[members]], int(face_ids[rep])))
    # largest first gets the lowest ids: the first people a person looks at have short numbers
    order = sorted(range(len(new_clusters)), key=lambda i: (-len(new_clusters[i].face_ids), i))
    new_clusters = [new_clusters[i] for i in order]
    rank = {i: r for r, i in enumerate(order)}
    label_cluster = {lab: rank[i] for lab, i in label_cluster.items()}

    def rejections(ids: list[int]) -> set[tuple[int, int]]:
        """The rejections in terms of the new cluster ids (written with the clustering: one transaction)."""
        return {(int(face_ids[p]), ids[label_cluster[lab]]) for p, lab in rejected if lab in label_cluster} | unmapped

    ids = g.save_clustering(new_clusters, {}, alone, settings=record, rebuild=True, rejections=rejections)
    final = faces.cluster_ids.copy()
    final[idx] = ALONE
    for cid, cluster in zip(ids, new_clusters):
        final[np.searchsorted(faces.face_ids, cluster.face_ids)] = cid
    return {"new_faces": int((faces.cluster_ids[idx] == NEW).sum()), "new_clusters": len(new_clusters),
            "joined": 0, "named_joined": 0, "final": final}


def _incremental(g: Gallery, faces: Any, eligible: np.ndarray, settings: ClusterSettings, dim: int,
                 progress: ProgressFn | None) -> dict[str, Any]:
    final = faces.cluster_ids.copy()
    new_pos = np.flatnonzero(eligible & (faces.cluster_ids == NEW))
    if not new_pos.size:
        return {"new_faces": 0, "new_clusters": 0, "joined": 0, "named_joined": 0, "final": final}
    new_ids = faces.face_ids[new_pos]
    report(progress, "read", 0, int(new_pos.size), "new faces")
    x_new = g.read_embeddings(new_ids)
    report(progress, "graph", 0, int(new_pos.size), "new faces")
    kk = settings.k + 1
    found = _gallery_neighbours(g, x_new, kk, dim)
    eligible_ids = faces.face_ids[eligible]
    if found is None:  # no index: exact (or ad hoc IVF) search over every face taken into account
        x_all = vectors_of(g, eligible_ids, dim)
        graph = knn_graph(x_all, kk, query=x_new)
        nbr_ids = np.where(graph.neighbours >= 0, eligible_ids[np.maximum(graph.neighbours, 0)], -1)
        sims = graph.similarities
    else:
        sims, nbr_ids = found
    # the neighbours that count: faces taken into account, other than the face itself
    keep = np.isin(nbr_ids, eligible_ids) & (nbr_ids != new_ids[:, None])
    nbr_ids = np.where(keep, nbr_ids, -1)
    sims = np.where(keep, sims, -np.inf).astype(np.float32)
    # local problem: the new faces, their neighbours, and every face of the clusters they touch
    nbr_pos = np.searchsorted(faces.face_ids, nbr_ids[nbr_ids >= 0])
    cluster_of = faces.cluster_ids
    touched = np.setdiff1d(np.unique(cluster_of[nbr_pos]), [ALONE, NEW])
    members = np.flatnonzero(np.isin(cluster_of, touched) & eligible)
    local_pos = np.unique(np.concatenate([new_pos, members, nbr_pos]))
    local_ids = faces.face_ids[local_pos]
    # many faces (large clusters touched): one streamed pass over the shards beats per-face lookups
    x_local = vectors_of(g, local_ids, dim) if local_ids.size > STREAM_ABOVE else g.read_embeddings(local_ids)
    n = local_ids.size
    neighbours = np.full((n, kk), -1, np.int64)
    similarities = np.full((n, kk), -np.inf, np.float32)
    rows = np.searchsorted(local_ids, new_ids)
    neighbours[rows] = np.where(nbr_ids >= 0, np.searchsorted(local_ids, np.maximum(nbr_ids, 0)), -1)
    similarities[rows] = sims
    start = cluster_of[local_pos].copy()
    lone = start < 0
    start[lone] = start.max(initial=0) + 1 + np.arange(int(lone.sum()))
    _, start = np.unique(start, return_inverse=True)
    frozen = np.zeros(int(start.max()) + 1, bool)
    frozen[start[~lone]] = True
    report(progress, "cluster", 0, int(n), "faces")
    labels = cluster_labels(x_local, KnnGraph(neighbours, similarities), settings, labels=start, frozen=frozen)
    rejections = g.cluster_rejections()
    name_ids = _named_clusters(faces, members)
    joins: dict[int, list[int]] = defaultdict(list)
    labels_out: dict[int, list[int]] = defaultdict(list)
    new_clusters: list[NewCluster] = []
    alone: list[int] = []
    joined = named = 0
    for group in _groups(labels):
        positions = local_pos[group]
        old = np.unique(cluster_of[positions][cluster_of[positions] >= 0])
        incoming = positions[cluster_of[positions] < 0]
        if old.size:
            cid = int(old[0])
            for pos in incoming.tolist():
                f = int(faces.face_ids[pos])
                if (f, cid) in rejections:
                    if cluster_of[pos] == NEW:
                        alone.append(f)
                        final[pos] = ALONE
                    continue
                joins[cid].append(f)
                final[pos] = cid
                joined += 1
                if cid in name_ids and faces.identity_ids[pos] < 0:
                    labels_out[name_ids[cid]].append(f)
                    named += 1
        elif len(group) >= 2:
            rep = group[representative(x_local[group])]
            new_clusters.append(NewCluster([int(f) for f in faces.face_ids[incoming]], int(local_ids[rep])))
        else:
            fresh = [int(faces.face_ids[pos]) for pos in incoming if cluster_of[pos] == NEW]
            alone.extend(fresh)
            final[incoming] = ALONE
    ids = g.save_clustering(new_clusters, dict(joins), alone, labels=dict(labels_out))
    for cid, cluster in zip(ids, new_clusters):
        final[np.searchsorted(faces.face_ids, cluster.face_ids)] = cid
    return {"new_faces": int(new_pos.size), "new_clusters": len(new_clusters), "joined": joined,
            "named_joined": named, "final": final}


def _named_clusters(faces: Any, members: np.ndarray) -> dict[int, int]:
    """Cluster id -> identity id for the named clusters among the faces at positions `members` (all
    faces of the touched clusters): those where more than half of the live faces carry one identity
    (naming a cluster labels all of them). Faces joining such a cluster take its name."""
    clusters = faces.cluster_ids[members]
    identities = faces.identity_ids[members]
    found, sizes = np.unique(clusters, return_counts=True)
    labeled = identities >= 0
    if not labeled.any():
        return {}
    pairs, counts = np.unique(np.stack([clusters[labeled], identities[labeled]], axis=1), axis=0,
                              return_counts=True)
    order = np.lexsort((-counts, pairs[:, 0]))  # per cluster, its most common identity first
    pairs, counts = pairs[order], counts[order]
    first = np.ones(len(pairs), bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    size_of = dict(zip(found.tolist(), sizes.tolist()))
    return {int(c): int(i) for (c, i), n in zip(pairs[first], counts[first]) if 2 * n > size_of[int(c)]}
