"""Identities and faces: list, show, enrol, rename, merge, relabel, delete, erase, and face crops.

Answers are the objects the CLI prints with `--json` (`gallery identities ...`, `gallery faces ...`).
Reading needs the `search` scope, naming and deleting `enrol`, erasing `admin`. A person is addressed
by name (`/identities/{name}`) or by id (`/identities/id/{identity_id}`: any name, `/` included; the
list gives each person's `identity_id`, and `?name=` finds one by exact name). Enrolment and erasure
run as jobs: answered with their result when they end within the request timeout, else 202 with the
job to follow (never a 504 for work that goes on).
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from gallery.app.answers import (
    EnrolAnswer,
    ErasureAnswer,
    FaceRecord,
    FacesDeleted,
    IdentityFaces,
    IdentityPage,
    IdentityRow,
    Job,
    Merged,
    NameDeleted,
    Relabeled,
    Renamed,
)
from gallery.server import writes
from gallery.server.auth import require
from gallery.server.service import ApiError

router = APIRouter(tags=["people"])

MAX_ID = 2**63 - 1  # SQLite's largest integer
FaceId = Path(ge=1, le=MAX_ID, description="a face id")
IdentityId = Path(ge=1, le=MAX_ID, description="an identity id (from the list)")
CROPS = threading.BoundedSemaphore(2)  # photos decoded for crops at once in a worker (each up to 200 MP)
JPEG = {200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
              "description": "a JPEG image"}}
STILL_RUNNING = {202: {"model": Job, "description": "still running past the request timeout: the job to follow"}}


async def as_job(request: Request, kind: str, work: Any, started: float, done_status: int = 200) -> JSONResponse:
    """Run `work` as a job and answer with its result if it ends within the request timeout (less what
    the request took so far), else 202 with the job record. A failed job answers its error."""
    state = request.app.state
    record = state.jobs.start(kind, {}, lambda on_progress: work())
    budget = 0.8 * state.config.request_timeout_s - (time.monotonic() - started)
    ended = await run_in_threadpool(state.jobs.wait, record["job"], budget)
    if ended is None:
        body = {**(state.jobs.get(record["job"]) or record),
                "detail": f"Still running: follow it with GET /v1/jobs/{record['job']}."}
        return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{record['job']}"})
    if ended["state"] == "failed":
        error = dict(ended.get("error") or {})
        raise ApiError(int(error.pop("status", 500)), str(error.pop("error", "internal")),
                       str(error.pop("detail", "The job failed.")), **error)
    result = ended["result"]  # the job's typed answer, as JSON
    pending = isinstance(result, dict) and result.get("status") == "pending"
    return JSONResponse(result, status_code=202 if pending else done_status)


class Rename(BaseModel):
    to: str = Field(min_length=1)


class Merge(BaseModel):
    names: list[str] = Field(min_length=1)
    into: str = Field(min_length=1)


class Relabel(BaseModel):
    name: str | None = Field(None, description="the identity these faces show; null: unlabeled")


class RelabelMany(Relabel):
    face_ids: list[int] = Field(min_length=1, max_length=10_000, description="the faces, all or none relabeled")


@router.get("/identities", response_model=IdentityPage, summary="List identities (paged, most faces first)")
def list_identities(
    request: Request,
    offset: int = Query(0, ge=0, le=MAX_ID),
    limit: int = Query(50, ge=1, le=1000),
    q: str | None = Query(None, description="only names containing this text (case-insensitive)"),
    name: str | None = Query(None, description="only the identity of exactly this name"),
    _key: Any = Depends(require("search")),
) -> IdentityPage:
    g = request.app.state.gallery
    rows = g.identity_rows()
    if q:
        rows = [r for r in rows if q.lower() in r[1].lower()]
    if name is not None:
        rows = [r for r in rows if r[1] == name]
    page = rows[offset: offset + limit]
    out = []
    for identity_id, identity, n in page:
        faces = g.face_details(identity_id=identity_id) if n else []
        main = next((f for f in faces if f.is_main), faces[0] if faces else None)
        out.append(IdentityRow(identity=identity, identity_id=identity_id, faces=n,
                               face_id=main.face_id if main else None))
    return IdentityPage(total=len(rows), offset=offset, limit=limit, identities=out)


def _show(g: Any, name: str) -> IdentityFaces:
    return IdentityFaces.model_validate({"identity": name, "identity_id": g.identity_id(name),
                                         "faces": [asdict(f) for f in g.identity_faces(name)]})


@router.get("/identities/id/{identity_id}", response_model=IdentityFaces, summary="The faces of one identity, by id")
def show_identity_by_id(request: Request, identity_id: int = IdentityId,
                        _key: Any = Depends(require("search"))) -> IdentityFaces:
    g = request.app.state.gallery
    return _show(g, g.identity_name(identity_id))


@router.get("/identities/{name}", response_model=IdentityFaces, summary="The faces of one identity")
def show_identity(name: str, request: Request, _key: Any = Depends(require("search"))) -> IdentityFaces:
    return _show(request.app.state.gallery, name)


def multipart_only(request: Request) -> None:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "Enrol with multipart/form-data: 'name' and one or more 'file'.")


@router.post("/identities", status_code=201, response_model=EnrolAnswer, responses=STILL_RUNNING,
             summary="Enrol: photos of a person, under a name")
async def enrol(
    request: Request,
    name: Annotated[str, Form(description="the person's name")],
    file: Annotated[list[UploadFile] | None, File(description="one or more photos of the person")] = None,
    _key: Any = Depends(require("enrol")),
    _multipart: None = Depends(multipart_only),
) -> JSONResponse:
    """The photos are kept by the server, ingested, and the main face of each is given the name. A
    photo the gallery holds already is not kept twice (enrolling the same photos again adds nothing).
    201 with the result, or 202 with the job when it takes longer than the request timeout."""
    started = time.monotonic()
    if not name.strip():
        raise ApiError(422, "bad_request", "Give the person's 'name'.")
    photos = [(f.filename, await f.read()) for f in file or []]
    if not photos:
        raise ApiError(400, "bad_request", "Enrolment needs at least one photo (multipart field 'file').")
    state = request.app.state
    return await as_job(request, "enrol", lambda: writes.enrol(state.config, state.gallery, name, photos), started,
                        done_status=201)


@router.post("/identities/merge", response_model=Merged, summary="Make several identities one person")
def merge_identities(body: Merge, request: Request, _key: Any = Depends(require("enrol"))) -> Merged:
    n = request.app.state.gallery.merge_identities(body.names, body.into)
    return Merged(merged=body.names, into=body.into, faces=n)


def _rename(g: Any, name: str, to: str) -> Renamed:
    return Renamed(renamed=name, to=to, faces=g.rename_identity(name, to))


def _delete(g: Any, name: str) -> NameDeleted:
    return NameDeleted(deleted=name, faces_unlabeled=g.delete_identity(name))


KeepOut = Query(True, description="keep the erased photos out of future ingests and syncs of the archive (a "
                                   "keyed fingerprint of each photo's content, nothing readable); false: the next "
                                   "ingest or sync of an archive still holding them reads them in again")


async def _erase(request: Request, started: float, keep_out: bool, **selection: Any) -> JSONResponse:
    config = request.app.state.config
    command = "identities erase" if "identity" in selection else "faces erase"
    return await as_job(request, "erase", lambda: writes.erase(config, command, 30.0, keep_out=keep_out, **selection),
                        started)


@router.post("/identities/id/{identity_id}/rename", response_model=Renamed, summary="Rename an identity, by id")
def rename_identity_by_id(body: Rename, request: Request, identity_id: int = IdentityId,
                          _key: Any = Depends(require("enrol"))) -> Renamed:
    g = request.app.state.gallery
    return _rename(g, g.identity_name(identity_id), body.to)


@router.delete("/identities/id/{identity_id}", response_model=NameDeleted,
               summary="Remove a name (its faces stay, unlabeled), by id")
def delete_identity_by_id(request: Request, identity_id: int = IdentityId,
                          _key: Any = Depends(require("enrol"))) -> NameDeleted:
    g = request.app.state.gallery
    return _delete(g, g.identity_name(identity_id))


@router.post("/identities/id/{identity_id}/erase", response_model=ErasureAnswer, responses=STILL_RUNNING,
             summary="Erase a person from every file of the gallery, by id")
async def erase_identity_by_id(request: Request, identity_id: int = IdentityId, keep_out: bool = KeepOut,
                               _key: Any = Depends(require("admin"))) -> JSONResponse:
    started = time.monotonic()
    name = await run_in_threadpool(request.app.state.gallery.identity_name, identity_id)
    return await _erase(request, started, keep_out, identity=name)


@router.post("/identities/{name}/rename", response_model=Renamed, summary="Rename an identity")
def rename_identity(name: str, body: Rename, request: Request,
                    _key: Any = Depends(require("enrol"))) -> Renamed:
    return _rename(request.app.state.gallery, name, body.to)


@router.delete("/identities/{name}", response_model=NameDeleted, summary="Remove a name (its faces stay, unlabeled)")
def delete_identity(name: str, request: Request, _key: Any = Depends(require("enrol"))) -> NameDeleted:
    return _delete(request.app.state.gallery, name)


@router.post("/identities/{name}/erase", response_model=ErasureAnswer, responses=STILL_RUNNING,
             summary="Erase a person from every file of the gallery")
async def erase_identity(name: str, request: Request, keep_out: bool = KeepOut,
                         _key: Any = Depends(require("admin"))) -> JSONResponse:
    return await _erase(request, time.monotonic(), keep_out, identity=name)


def _face(request: Request, face_id: int) -> Any:
    record = request.app.state.gallery.face_records([face_id]).get(face_id)
    if record is None:
        raise ApiError(404, "not_found", f"No live face with id {face_id} in this gallery.")
    return record


@router.get("/faces/{face_id}", response_model=FaceRecord, summary="One face: identity, photo, box")
def show_face(request: Request, face_id: int = FaceId, _key: Any = Depends(require("search"))) -> FaceRecord:
    return FaceRecord.model_validate(asdict(_face(request, face_id)))


@router.get("/faces/{face_id}/crop", summary="The face cut from its photo (JPEG)",
            response_class=Response, responses=JPEG)
def face_crop(
    request: Request,
    face_id: int = FaceId,
    size: int = Query(256, ge=16, le=1024),
    margin: float = Query(0.4, ge=0, le=2),
    _key: Any = Depends(require("search")),
) -> Response:
    """Only a regular file within the ingest's size and pixel limits is opened (a special file or a
    huge photo at the face's path is refused with the ingest's reason, 422)."""
    from gallery.faces.crop import crop_face

    record = _face(request, face_id)
    with CROPS:
        image = crop_face(record.photo, record.box, margin, size, t_ms=record.t_ms)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=88)
    return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})


@router.get("/faces/{face_id}/photo", summary="The face's whole photo with the face outlined (JPEG)",
            response_class=Response, responses=JPEG)
def face_photo(
    request: Request,
    face_id: int = FaceId,
    max_side: int = Query(800, ge=16, le=2048, description="pixels on the longer side at most"),
    _key: Any = Depends(require("search")),
) -> Response:
    """The photo a face was found in, scaled down, with a box around the face: a person's photos on the
    web page. Opened within the same limits as a crop."""
    from gallery.faces.crop import photo_with_face

    record = _face(request, face_id)
    with CROPS:
        image = photo_with_face(record.photo, record.box, max_side, t_ms=record.t_ms)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})


@router.post("/faces/relabel", response_model=Relabeled,
             summary="Give several faces an identity, or none (all or none)")
def relabel_many(body: RelabelMany, request: Request, _key: Any = Depends(require("enrol"))) -> Relabeled:
    """Moves faces to another person (created if new) or removes their name, in one transaction: a
    face that is not live refuses the whole request."""
    if any(not 1 <= f <= MAX_ID for f in body.face_ids):
        raise ApiError(422, "bad_request", "face_ids: face ids are positive integers.")
    n = request.app.state.gallery.relabel_faces(body.face_ids, body.name)
    return Relabeled(relabeled=n, identity=body.name)


@router.post("/faces/{face_id}/relabel", response_model=Relabeled, summary="Give a face an identity, or none")
def relabel_face(body: Relabel, request: Request, face_id: int = FaceId,
                 _key: Any = Depends(require("enrol"))) -> Relabeled:
    n = request.app.state.gallery.relabel_faces([face_id], body.name)
    return Relabeled(relabeled=n, identity=body.name)


@router.delete("/faces/{face_id}", response_model=FacesDeleted, response_model_exclude_none=True,
               summary="Hide a face from every answer")
def delete_face(request: Request, face_id: int = FaceId, ignore: bool = Query(False, description="also remember "
                "it as not wanted (not a face, not a person of interest)"),
                _key: Any = Depends(require("enrol"))) -> FacesDeleted:
    n = request.app.state.gallery.delete_faces([face_id], ignore=ignore)
    return FacesDeleted(ignored=n) if ignore else FacesDeleted(deleted=n)


@router.post("/faces/{face_id}/erase", response_model=ErasureAnswer, responses=STILL_RUNNING,
             summary="Erase a face from every file of the gallery")
async def erase_face(request: Request, face_id: int = FaceId, keep_out: bool = KeepOut,
                     _key: Any = Depends(require("admin"))) -> JSONResponse:
    return await _erase(request, time.monotonic(), keep_out, face_ids=[face_id])
