"""Clusters of unlabeled faces (search.cluster): list, show, name, split, reject, and a clustering job.

Answers are the `.as_dict()` objects the CLI prints with `--json`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from gallery.server.auth import require

router = APIRouter(tags=["clusters"])

MAX_ID = 2**63 - 1  # SQLite's largest integer
ClusterId = Path(ge=0, le=MAX_ID, description="a cluster id")


def cluster_api() -> Any:
    """The clustering API, imported on first use (numpy/faiss stay out of the server's start-up)."""
    import search.cluster as api

    return api


class Name(BaseModel):
    name: str = Field(min_length=1)
    strict: bool = Field(False, description="Leave the faces far from the rest of the cluster without the name.")


class Split(BaseModel):
    threshold: float | None = Field(None, ge=-1, le=1)


class Reject(BaseModel):
    face_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1)


class Run(BaseModel):
    rebuild: bool = False


@router.get("/clusters", summary="Clusters of unlabeled faces, largest first")
def list_clusters(request: Request, min_size: int = Query(2, ge=1, le=MAX_ID), limit: int = Query(0, ge=0, le=MAX_ID),
                  _key: Any = Depends(require("search"))) -> list[dict[str, Any]]:
    api = cluster_api()
    return [c.as_dict() for c in api.list_clusters(request.app.state.config.gallery, min_size=min_size, limit=limit)]


@router.get("/clusters/{cluster_id}", summary="One cluster and its faces, those far from the rest first")
def show_cluster(request: Request, cluster_id: int = ClusterId,
                 _key: Any = Depends(require("search"))) -> dict[str, Any]:
    return cluster_api().show_cluster(request.app.state.config.gallery, cluster_id).as_dict()


@router.post("/clusters/{cluster_id}/name", summary="Name a cluster: its faces become that identity; "
             "faces far from the rest are listed (far_faces), and left unnamed with strict")
def name_cluster(body: Name, request: Request, cluster_id: int = ClusterId,
                 _key: Any = Depends(require("enrol"))) -> dict[str, Any]:
    gallery = request.app.state.config.gallery
    return cluster_api().name_cluster(gallery, cluster_id, body.name, strict=body.strict).as_dict()


@router.post("/clusters/{cluster_id}/split", summary="Split a cluster at a stricter threshold")
def split_cluster(request: Request, cluster_id: int = ClusterId, body: Split | None = None,
                  _key: Any = Depends(require("enrol"))) -> dict[str, Any]:
    threshold = body.threshold if body else None
    return cluster_api().split_cluster(request.app.state.config.gallery, cluster_id, threshold=threshold).as_dict()


@router.post("/clusters/{cluster_id}/reject", summary="Take faces out of a cluster (not this person)")
def reject_faces(body: Reject, request: Request, cluster_id: int = ClusterId,
                 _key: Any = Depends(require("enrol"))) -> dict[str, Any]:
    return cluster_api().reject_faces(request.app.state.config.gallery, cluster_id, body.face_ids).as_dict()


@router.post("/clusters/run", status_code=202, summary="Cluster the unlabeled faces (a background job)")
def run_clustering(request: Request, body: Run | None = None,
                   _key: Any = Depends(require("admin"))) -> dict[str, Any]:
    api = cluster_api()
    gallery = request.app.state.config.gallery
    rebuild = bool(body and body.rebuild)

    def work(on_progress: Any) -> dict[str, Any]:
        return api.cluster_gallery(gallery, rebuild=rebuild, progress=on_progress).as_dict()

    return request.app.state.jobs.start("cluster", {"rebuild": rebuild}, work)
