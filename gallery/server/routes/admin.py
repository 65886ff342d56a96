"""Health, status, server-side ingest as a background job, and job progress."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

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


@router.get("/healthz", summary="Liveness (no key needed)")
def healthz() -> dict[str, Any]:
    return {"status": "ok", "time": time.time()}


@router.get("/status", summary="Counts, index freshness, the threshold in force and its source")
def status(request: Request, _key: Any = Depends(require("search"))) -> dict[str, Any]:
    from gallery.errors import NoIndexError
    from indexer.manifest import read_manifest
    from search.tail import index_advice
    from search.threshold import calibration_status, resolve_decision, resolve_one_to_one

    state = request.app.state
    g = state.gallery
    info = g.info()
    decision = resolve_decision(g)
    threshold, source = decision.threshold, decision.source
    one, one_source = resolve_one_to_one(g)
    try:
        manifest = read_manifest(g.index_dir, g.root)
        index: dict[str, Any] | None = {
            "factory": manifest["factory"], "ntotal": manifest["ntotal"], "built_at": manifest.get("built_at"),
            "max_face_id": manifest["max_face_id"],
            "unindexed_faces": g.live_face_count(after_face_id=int(manifest["max_face_id"])),
            "advice": index_advice(g),
        }
    except NoIndexError as exc:
        index = {"advice": str(exc)}
    config = state.config
    return {
        **info.as_dict(),
        "model": info.model["name"] if info.model else None,
        "model_stamp": info.model,
        "threshold": threshold,
        "threshold_source": source,
        "rule": decision.rule.as_dict(),
        "one_to_one_threshold": one,
        "one_to_one_source": one_source,
        "calibration": asdict(calibration_status(g)),
        "index": index,
        "jobs_running": len(state.jobs.running()),
        "server": {"auth": "api keys" if config.auth else "open (no keys)", "max_upload_bytes":
                   config.max_upload_bytes, "request_timeout_s": config.request_timeout_s,
                   "ingest_roots": config.ingest_roots},
    }


@router.post("/ingest", status_code=202, summary="Ingest a server-side folder (a background job)")
def ingest(body: IngestRequest, request: Request, _key: Any = Depends(require("admin"))) -> dict[str, Any]:
    """Returns the job; follow it with GET /v1/jobs/{job}. Searches are answered meanwhile."""
    config = request.app.state.config
    path = writes.allowed_ingest_path(config, body.path)
    if body.labels.startswith("csv:"):
        writes.allowed_ingest_path(config, body.labels[4:])
    elif body.labels not in ("folder", "none"):
        raise ApiError(422, "bad_request", f"Unknown labels '{body.labels}': use folder, none or csv:FILE.")

    if body.cluster:
        cluster_api()  # 501 now, not after the ingest, when this installation cannot cluster

    def work(on_progress: Any) -> dict[str, Any]:
        result = writes.ingest_folder(config, str(path), body.labels, body.workers, on_progress)
        if body.cluster:
            result["clusters"] = cluster_api().cluster_gallery(config.gallery, progress=on_progress).as_dict()
        return result

    params = {"path": str(path), "labels": body.labels, "cluster": body.cluster}
    return request.app.state.jobs.start("ingest", params, work)


@router.get("/jobs", summary="Recent jobs of this server, newest first")
def list_jobs(request: Request, _key: Any = Depends(require("enrol"))) -> list[dict[str, Any]]:
    return request.app.state.jobs.list()


@router.get("/jobs/{job_id}", summary="A job's state, progress and result")
def show_job(job_id: str, request: Request, _key: Any = Depends(require("enrol"))) -> dict[str, Any]:
    record = request.app.state.jobs.get(job_id)
    if record is None:
        raise ApiError(404, "not_found", f"No job '{job_id}' on this server (jobs last as long as the server).")
    return record
