"""Clusters in SQLite: which face is in which candidate person, rejections, and naming.

A cluster's name is not stored: it is the identity its faces carry (naming a cluster labels its faces),
so renames, merges and relabels need no second bookkeeping and a re-clustering keeps the names.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from gallery.errors import GalleryError, NotInGallery
from gallery.store import schema
from gallery.store.schema import Cluster, ClusterRejection, Face, FaceCluster, Identity

NEW = -2  # a live face no clustering has seen yet
BATCH = 30_000  # ids per IN (...): under SQLite's default limit of 32,766 variables
ALONE = -1  # clustered, in no cluster


@dataclass
class ClusteringFaces:
    """Live faces a clustering works on, in id order."""

    face_ids: np.ndarray  # (n,) int64
    cluster_ids: np.ndarray  # (n,) int64: a cluster id, ALONE or NEW
    identity_ids: np.ndarray  # (n,) int64: -1 when unlabeled
    low_quality: np.ndarray | None = None  # (n,) bool: below the quality gate (gallery.faces.quality)


@dataclass(frozen=True)
class ClusterRow:
    cluster_id: int
    size: int  # live faces
    representative_face_id: int | None
    name: str | None  # the identity most of its faces carry (None: unnamed)
    named_faces: int  # how many of its faces carry that name


@dataclass(frozen=True)
class NewCluster:
    face_ids: list[int]
    representative_face_id: int
    parent_id: int | None = None


def forget_faces_in_clusters(s: Session, face_ids: Any) -> None:
    """Before face rows are deleted (erasure, repair): their cluster rows go first."""
    ids = [int(i) for i in face_ids]
    for start in range(0, len(ids), BATCH):
        part = ids[start:start + BATCH]
        s.execute(delete(FaceCluster).where(FaceCluster.face_id.in_(part)))
        s.execute(delete(ClusterRejection).where(ClusterRejection.face_id.in_(part)))
    GalleryClusters._drop_empty_clusters(s)


class GalleryClusters:
    """Mixin of Gallery: the cluster tables."""

    def session(self) -> AbstractContextManager[Session]:  # pragma: no cover - provided by Gallery
        raise NotImplementedError

    # --- reading -------------------------------------------------------------------------------

    def clustering_faces(self) -> ClusteringFaces:
        """One pass over the live faces with the driver's cursor (no ORM rows: 1M faces in ~1 s)."""
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()  # plain tuples: numpy reads 1M of them in a second
            cursor.execute(
                "SELECT f.face_id, CASE WHEN fc.face_id IS NULL THEN ? ELSE coalesce(fc.cluster_id, ?) END, "
                "coalesce(f.identity_id, -1), f.quality_issue IS NOT NULL FROM faces f "
                "LEFT JOIN face_clusters fc ON fc.face_id = f.face_id WHERE f.deleted = 0 ORDER BY f.face_id",
                (NEW, ALONE)
            )
            rows = cursor.fetchall()
            cursor.close()
        table = np.array(rows, dtype=np.int64).reshape(-1, 4)
        return ClusteringFaces(table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy(), table[:, 3].astype(bool))

    def clustering_settings(self) -> dict | None:
        """The parameters and model of the last full clustering (None: never clustered)."""
        with self.session() as s:
            return schema.get_meta(s, "clustering")

    def cluster_rows(self, cluster_ids: list[int] | None = None, min_size: int = 1) -> list[ClusterRow]:
        """Clusters with their live sizes and names, largest first."""
        with self.session() as s:
            q = (
                select(FaceCluster.cluster_id, Face.identity_id, func.count())
                .join(Face, Face.face_id == FaceCluster.face_id)
                .where(Face.deleted.is_(False), FaceCluster.cluster_id.is_not(None))
                .group_by(FaceCluster.cluster_id, Face.identity_id)
            )
            if cluster_ids is not None:
                q = q.where(FaceCluster.cluster_id.in_(cluster_ids))
            sizes: Counter[int] = Counter()
            named: dict[int, Counter] = {}
            for cid, identity_id, n in s.execute(q):
                sizes[cid] += n
                if identity_id is not None:
                    named.setdefault(cid, Counter())[identity_id] += n
            reps = dict(s.execute(select(Cluster.cluster_id, Cluster.representative_face_id)
                                  .where(Cluster.cluster_id.in_(list(sizes)))).all()) if sizes else {}
            names = dict(s.execute(select(Identity.identity_id, Identity.name)).all()) if named else {}
        out = []
        for cid, size in sizes.items():
            if size < min_size:
                continue
            top = named.get(cid, Counter()).most_common(1)
            name, n_named = (names.get(top[0][0]), top[0][1]) if top else (None, 0)
            out.append(ClusterRow(int(cid), int(size), reps.get(cid), name, int(n_named)))
        out.sort(key=lambda r: (-r.size, r.cluster_id))
        return out

    def cluster_face_ids(self, cluster_id: int) -> list[int]:
        """Live faces of a cluster (NotInGallery when there is no such cluster)."""
        with self.session() as s:
            if s.get(Cluster, cluster_id) is None:
                raise NotInGallery(f"No cluster {cluster_id} in this gallery (see `gallery clusters`).")
            return list(s.scalars(
                select(FaceCluster.face_id).join(Face, Face.face_id == FaceCluster.face_id)
                .where(FaceCluster.cluster_id == cluster_id, Face.deleted.is_(False)).order_by(FaceCluster.face_id)
            ))

    def cluster_rejections(self) -> set[tuple[int, int]]:
        with self.session() as s:
            return {(int(f), int(c)) for f, c in s.execute(select(ClusterRejection.face_id,
                                                                  ClusterRejection.cluster_id))}

    # --- writing -------------------------------------------------------------------------------

    def save_clustering(
        self,
        new_clusters: list[NewCluster],
        joins: dict[int, list[int]],
        alone: list[int],
        settings: dict | None = None,
        rebuild: bool = False,
        labels: dict[int, list[int]] | None = None,
        representatives: dict[int, int] | None = None,
        rejections: Callable[[list[int]], set[tuple[int, int]]] | None = None,
    ) -> list[int]:
        """Record a clustering in one transaction; returns the ids given to `new_clusters`.

        joins: existing cluster id -> faces that join it; alone: faces clustered into no cluster;
        labels: identity id -> faces that take it (faces that joined a named cluster);
        rebuild: forget every earlier assignment first (rejections stay);
        rejections: given the new clusters' ids, every (face, cluster) rejection from now on (a full
        clustering renumbers clusters): they replace the old ones in the same transaction, so a crash
        never leaves new clusters with rejections that name the old ones.
        """
        with self.session() as s, s.begin():
            ids = self._save_clustering(s, new_clusters, joins, alone, settings, rebuild, labels, representatives)
            if rejections is not None:
                self._write_rejections(s, rejections(ids))
        return ids

    def _save_clustering(
        self, s: Session, new_clusters: list[NewCluster], joins: dict[int, list[int]], alone: list[int],
        settings: dict | None = None, rebuild: bool = False, labels: dict[int, list[int]] | None = None,
        representatives: dict[int, int] | None = None,
    ) -> list[int]:
        """save_clustering inside the caller's transaction."""
        if rebuild:
            s.execute(delete(FaceCluster))
            s.execute(delete(Cluster))
        next_id = schema.high_water(s, "cluster") + 1
        ids = list(range(next_id, next_id + len(new_clusters)))
        now = time.time()
        if new_clusters:
            s.execute(insert(Cluster), [
                {"cluster_id": cid, "created_at": now, "representative_face_id": c.representative_face_id,
                 "parent_id": c.parent_id} for cid, c in zip(ids, new_clusters)])
            schema.raise_high_water(s, cluster=ids[-1])
        rows = [(f, cid) for cid, c in zip(ids, new_clusters) for f in c.face_ids]
        rows += [(f, cid) for cid, faces in joins.items() for f in faces]
        rows += [(f, None) for f in alone]
        for start in range(0, len(rows), BATCH):
            part = rows[start:start + BATCH]
            s.execute(delete(FaceCluster).where(FaceCluster.face_id.in_([f for f, _ in part])))
            s.execute(insert(FaceCluster), [{"face_id": int(f), "cluster_id": c} for f, c in part])
        for cid, rep in (representatives or {}).items():
            s.execute(update(Cluster).where(Cluster.cluster_id == cid).values(representative_face_id=rep))
        for identity_id, faces in (labels or {}).items():
            for start in range(0, len(faces), BATCH):
                s.execute(update(Face).where(Face.face_id.in_(faces[start:start + BATCH]),
                                             Face.identity_id.is_(None)).values(identity_id=identity_id))
        if settings is not None:
            schema.set_meta(s, "clustering", settings)
        self._drop_empty_clusters(s)
        return ids

    @staticmethod
    def _write_rejections(s: Session, pairs: set[tuple[int, int]]) -> None:
        s.execute(delete(ClusterRejection))
        if pairs:
            s.execute(insert(ClusterRejection), [{"face_id": f, "cluster_id": c} for f, c in sorted(pairs)])

    def name_cluster(self, cluster_id: int, name: str, except_faces: list[int] | None = None) -> tuple[int, bool]:
        """Give every live face of the cluster but `except_faces` the identity `name` (created, or merged
        into when it exists). Returns (faces labeled, whether the name existed)."""
        name = name.strip()
        if not name:
            raise GalleryError("A cluster's name cannot be empty.")
        with self.session() as s, s.begin():
            if s.get(Cluster, cluster_id) is None:
                raise NotInGallery(f"No cluster {cluster_id} in this gallery (see `gallery clusters`).")
            existed = s.scalar(select(Identity.identity_id).where(Identity.name == name)) is not None
            identity_id = schema.get_or_create_identity(s, name)
            members = select(FaceCluster.face_id).where(FaceCluster.cluster_id == cluster_id)
            if except_faces:
                skip = {int(f) for f in except_faces}
                ids = [f for f in s.scalars(members) if f not in skip]
                n = 0
                for start in range(0, len(ids), BATCH):
                    n += s.execute(update(Face).where(Face.face_id.in_(ids[start:start + BATCH]),
                                                      Face.deleted.is_(False)).values(identity_id=identity_id)).rowcount
            else:
                n = s.execute(update(Face).where(Face.face_id.in_(members), Face.deleted.is_(False))
                              .values(identity_id=identity_id)).rowcount
            # identities whose last face moved here disappear (as with relabel)
            self._drop_empty_identities(s)  # type: ignore[attr-defined]
        return int(n or 0), existed

    def reject_from_cluster(self, cluster_id: int, face_ids: list[int]) -> int:
        """Take faces out of a cluster for good: they become unclustered and never rejoin it."""
        with self.session() as s, s.begin():
            if s.get(Cluster, cluster_id) is None:
                raise NotInGallery(f"No cluster {cluster_id} in this gallery (see `gallery clusters`).")
            ids = sorted({int(f) for f in face_ids})
            members = set(s.scalars(select(FaceCluster.face_id).where(FaceCluster.cluster_id == cluster_id)))
            strangers = [f for f in ids if f not in members]
            if strangers:
                raise NotInGallery(f"Face {', '.join(map(str, strangers[:10]))} is not in cluster {cluster_id}.")
            for start in range(0, len(ids), BATCH):
                s.execute(update(FaceCluster).where(FaceCluster.face_id.in_(ids[start:start + BATCH]))
                          .values(cluster_id=None))
            for f in ids:
                s.merge(ClusterRejection(face_id=f, cluster_id=cluster_id))
            # a rejected face cannot stand for the cluster (lists fall back to another of its faces)
            cluster = s.get(Cluster, cluster_id)
            if cluster is not None and cluster.representative_face_id in members.intersection(ids):
                cluster.representative_face_id = None
            self._drop_empty_clusters(s)
            return len(ids)

    def replace_cluster(self, cluster_id: int, parts: list[NewCluster], alone: list[int]) -> list[int]:
        """Split: the cluster's faces go to new clusters (parent_id = cluster_id) or alone; it goes.
        Faces rejected from it stay rejected from every part (one transaction)."""
        with self.session() as s, s.begin():
            ids = self._save_clustering(s, parts, {}, alone)
            rejected = list(s.scalars(select(ClusterRejection.face_id)
                                      .where(ClusterRejection.cluster_id == cluster_id)))
            for f in rejected:
                for new_id in ids:
                    s.merge(ClusterRejection(face_id=f, cluster_id=new_id))
            # its remaining rows are deleted faces: the cluster itself goes
            s.execute(delete(FaceCluster).where(FaceCluster.cluster_id == cluster_id))
            self._drop_empty_clusters(s)
        return ids

    @staticmethod
    def _drop_empty_clusters(s: Session) -> None:
        used = select(FaceCluster.cluster_id).where(FaceCluster.cluster_id.is_not(None))
        s.execute(delete(Cluster).where(~Cluster.cluster_id.in_(used)))
