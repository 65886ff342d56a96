"""Clusters of unlabeled faces (gallery.app.clusters): list, show, name, split, reject, and a clustering job.

Answers are the objects the CLI prints with `--json` (gallery.app.answers).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from gallery.app.answers import (
    ClusterDetail,
    ClusterNamed,
    ClusterRejected,
    ClusterRun,
    ClusterSplit,
    ClusterSummary,
    Job,
    Threshold,
)
from gallery.server.auth import require

router = APIRouter(tags=["clusters"])

MAX_ID = 2**63 - 1  # SQLite's largest integer
ClusterId = Path(ge=0, le=MAX_ID, description="a cluster id")


def cluster_api() -> Any:
    """The clustering use cases, imported on first use (numpy/faiss stay out of the server's start-up)."""
    import gallery.app.clusters as api

    return api


class Name(BaseModel):
    name: str = Field(min_length=1)
    strict: bool = Field(False, description="Leave the faces far from the rest of the cluster without the name.")


class Split(BaseModel):
    threshold: Threshold | None = None


class Reject(BaseModel):
    face_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1)


class Run(BaseModel):
    rebuild: bool = False


@router.get("/clusters", response_model=list[ClusterSummary], summary="Clusters of unlabeled faces, largest first")
def list_clusters(request: Request, min_size: int = Query(2, ge=1, le=MAX_ID), limit: int = Query(0, ge=0, le=MAX_ID),
                  _key: Any = Depends(require("search"))) -> list[ClusterSummary]:
    return cluster_api().clusters(request.app.state.config.gallery, min_size=min_size, limit=limit)


@router.get("/clusters/{cluster_id}", response_model=ClusterDetail,
            summary="One cluster and its faces, those far from the rest first")
def show_cluster(request: Request, cluster_id: int = ClusterId,
                 _key: Any = Depends(require("search"))) -> ClusterDetail:
    return cluster_api().cluster(request.app.state.config.gallery, cluster_id)


@router.post("/clusters/{cluster_id}/name", response_model=ClusterNamed, summary="Name a cluster: its faces become "
             "that identity; faces far from the rest are listed (far_faces), and left unnamed with strict")
def name_cluster(body: Name, request: Request, cluster_id: int = ClusterId,
                 _key: Any = Depends(require("enrol"))) -> ClusterNamed:
    return cluster_api().name(request.app.state.config.gallery, cluster_id, body.name, strict=body.strict)


@router.post("/clusters/{cluster_id}/split", response_model=ClusterSplit,
             summary="Split a cluster at a stricter threshold")
def split_cluster(request: Request, cluster_id: int = ClusterId, body: Split | None = None,
                  _key: Any = Depends(require("enrol"))) -> ClusterSplit:
    threshold = body.threshold if body else None
    return cluster_api().split(request.app.state.config.gallery, cluster_id, threshold=threshold)


@router.post("/clusters/{cluster_id}/reject", response_model=ClusterRejected,
             summary="Take faces out of a cluster (not this person)")
def reject_faces(body: Reject, request: Request, cluster_id: int = ClusterId,
                 _key: Any = Depends(require("enrol"))) -> ClusterRejected:
    return cluster_api().reject(request.app.state.config.gallery, cluster_id, body.face_ids)


@router.post("/clusters/run", status_code=202, response_model=Job,
             summary="Cluster the unlabeled faces (a background job; its result is a ClusterRun)",
             responses={202: {"description": "the job, queued", "model": Job}})
def run_clustering(request: Request, body: Run | None = None,
                   _key: Any = Depends(require("admin"))) -> dict[str, Any]:
    api = cluster_api()
    gallery = request.app.state.config.gallery
    rebuild = bool(body and body.rebuild)

    def work(on_progress: Any) -> ClusterRun:
        return api.cluster_run(gallery, rebuild=rebuild, progress=on_progress)

    return request.app.state.jobs.start("cluster", {"rebuild": rebuild}, work)
