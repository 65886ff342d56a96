"""Health, status, server-side ingest as a background job, and job progress."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from gallery.app.answers import GalleryStatus, Health, IngestAnswer, Job, ServerState
from gallery.server import writes
from gallery.server.auth import require
from gallery.server.routes.clusters import cluster_api
from gallery.server.service import ApiError

router = APIRouter(tags=["admin"])


class IngestRequest(BaseModel):
    path: str = Field(min_length=1, description="a folder (or photo) on the server, inside an --ingest-root")
    labels: str = Field("folder", description="'folder' (parent folder name), 'none', or 'csv:FILE'")
    workers: int | None = Field(None, ge=0, le=64, description="decode processes (0: in-process)")
    cluster: bool = Field(False, description="then group the new unlabeled faces (incremental clustering)")


@router.get("/healthz", response_model=Health, summary="Liveness (no key needed)")
def healthz() -> Health:
    return Health(status="ok", time=time.time())


@router.get("/status", response_model=GalleryStatus,
            summary="Counts, index freshness, the threshold in force and its source")
def status(request: Request, _key: Any = Depends(require("search"))) -> GalleryStatus:
    """The object `gallery info --json` prints, with the server's settings and running jobs."""
    from gallery.app.status import status as gallery_status

    state = request.app.state
    config = state.config
    server = ServerState(auth="api keys" if config.auth else "open (no keys)",
                         max_upload_bytes=config.max_upload_bytes, request_timeout_s=config.request_timeout_s,
                         ingest_roots=config.ingest_roots)
    return gallery_status(state.gallery, server=server, jobs_running=len(state.jobs.running()))


@router.post("/ingest", status_code=202, response_model=Job,
             summary="Ingest a server-side folder (a background job; its result is an IngestAnswer)",
             responses={202: {"description": "the job, queued", "model": Job}})
def ingest(body: IngestRequest, request: Request, _key: Any = Depends(require("admin"))) -> dict[str, Any]:
    """Returns the job; follow it with GET /v1/jobs/{job}. Searches are answered meanwhile. The job's
    result is the object `gallery ingest --json` prints (IngestAnswer): the ingest, then the index
    updated when due and the calibration when due, as after `gallery ingest`."""
    config = request.app.state.config
    path = writes.allowed_ingest_path(config, body.path)
    if body.labels.startswith("csv:"):
        writes.allowed_ingest_path(config, body.labels[4:])
    elif body.labels not in ("folder", "none"):
        raise ApiError(422, "bad_request", f"Unknown labels '{body.labels}': use folder, none or csv:FILE.")

    if body.cluster:
        cluster_api()  # 501 now, not after the ingest, when this installation cannot cluster

    def work(on_progress: Any) -> IngestAnswer:
        from gallery.app.clusters import cluster_run

        result = writes.ingest_folder(config, str(path), body.labels, body.workers, on_progress)
        if body.cluster:
            result.clusters = cluster_run(config.gallery, progress=on_progress)
        return result

    params = {"path": str(path), "labels": body.labels, "cluster": body.cluster}
    return request.app.state.jobs.start("ingest", params, work)


@router.get("/jobs", response_model=list[Job], summary="Recent jobs of this server, newest first")
def list_jobs(request: Request, _key: Any = Depends(require("enrol"))) -> list[dict[str, Any]]:
    return request.app.state.jobs.list()


@router.get("/jobs/{job_id}", response_model=Job, summary="A job's state, progress and result")
def show_job(job_id: str, request: Request, _key: Any = Depends(require("enrol"))) -> dict[str, Any]:
    record = request.app.state.jobs.get(job_id)
    if record is None:
        raise ApiError(404, "not_found", f"No job '{job_id}' on this server (jobs last as long as the server).")
    return record
