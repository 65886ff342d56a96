"""Who is in an unlabeled archive (search.cluster): run the clustering, list, show, name, split and
reject, each answered with its typed answer, for `gallery cluster|clusters ...` and /v1/clusters alike."""

from __future__ import annotations

from pathlib import Path

from gallery.app.answers import (
    ClusterDetail,
    ClusterNamed,
    ClusterRejected,
    ClusterRun,
    ClusterSplit,
    ClusterSummary,
    check_threshold,
)
from gallery.progress import ProgressFn


def cluster_run(gallery: Path | str, rebuild: bool = False, progress: ProgressFn | None = None,
                **settings: object) -> ClusterRun:
    """Cluster the unlabeled faces (incrementally: faces seen before keep their clusters unless
    `rebuild`); `settings` are search.cluster.cluster_gallery's (threshold, floor, k, method, ...)."""
    from search.cluster import cluster_gallery

    check_threshold(settings.get("threshold"))  # type: ignore[arg-type]
    report = cluster_gallery(gallery, rebuild=rebuild, progress=progress, **settings)  # type: ignore[arg-type]
    return ClusterRun.model_validate(report.as_dict())


def clusters(gallery: Path | str, min_size: int = 2, limit: int = 0, suggest: bool = True) -> list[ClusterSummary]:
    from search.cluster import list_clusters

    return [ClusterSummary.model_validate(c.as_dict())
            for c in list_clusters(gallery, min_size=min_size, limit=limit, suggest=suggest)]


def cluster(gallery: Path | str, cluster_id: int, sheet: Path | None = None, max_faces: int = 64) -> ClusterDetail:
    """One cluster and its faces (the doubtful ones first); `sheet`: also draw its contact sheet there."""
    from search.cluster import contact_sheet, show_cluster

    detail = show_cluster(gallery, cluster_id)
    written = contact_sheet(gallery, cluster_id, sheet, max_faces=max_faces) if sheet is not None else None
    return ClusterDetail.model_validate({**detail.as_dict(), "sheet": str(written) if written else None})


def name(gallery: Path | str, cluster_id: int, identity: str, strict: bool = False) -> ClusterNamed:
    from search.cluster import name_cluster

    return ClusterNamed.model_validate(name_cluster(gallery, cluster_id, identity, strict=strict).as_dict())


def split(gallery: Path | str, cluster_id: int, threshold: float | None = None) -> ClusterSplit:
    from search.cluster import split_cluster

    check_threshold(threshold)
    return ClusterSplit.model_validate(split_cluster(gallery, cluster_id, threshold=threshold).as_dict())


def reject(gallery: Path | str, cluster_id: int, face_ids: list[int]) -> ClusterRejected:
    from search.cluster import reject_faces

    return ClusterRejected.model_validate(reject_faces(gallery, cluster_id, face_ids).as_dict())
