"""Identities and faces: list, show, enrol, rename, merge, relabel, delete, erase, and face crops.

Answers are the objects the CLI prints with `--json` (`gallery identities ...`, `gallery faces ...`).
Reading needs the `search` scope, naming and deleting `enrol`, erasing `admin`.
"""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field

from gallery.server import writes
from gallery.server.auth import require
from gallery.server.service import ApiError

router = APIRouter(tags=["people"])


class Rename(BaseModel):
    to: str = Field(min_length=1)


class Merge(BaseModel):
    names: list[str] = Field(min_length=1)
    into: str = Field(min_length=1)


class Relabel(BaseModel):
    name: str | None = Field(None, description="the identity these faces show; null: unlabeled")


@router.get("/identities", summary="List identities (paged, most faces first)")
def list_identities(
    request: Request,
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=1000),
    q: str | None = Query(None, description="only names containing this text (case-insensitive)"),
    _key: Any = Depends(require("search")),
) -> dict[str, Any]:
    g = request.app.state.gallery
    rows = g.identities()
    if q:
        rows = [r for r in rows if q.lower() in r[0].lower()]
    page = rows[offset: offset + limit]
    out = []
    for name, n in page:
        faces = g.identity_faces(name) if n else []
        main = next((f for f in faces if f.is_main), faces[0] if faces else None)
        out.append({"identity": name, "faces": n, "face_id": main.face_id if main else None})
    return {"total": len(rows), "offset": offset, "limit": limit, "identities": out}


@router.get("/identities/{name}", summary="The faces of one identity")
def show_identity(name: str, request: Request, _key: Any = Depends(require("search"))) -> dict[str, Any]:
    faces = request.app.state.gallery.identity_faces(name)
    return {"identity": name, "faces": [asdict(f) for f in faces]}


@router.post("/identities", status_code=201, summary="Enrol: photos of a person, under a name",
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["name", "file"], "properties": {
                     "name": {"type": "string"},
                     "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}},
                 "required": True}})
async def enrol(request: Request, _key: Any = Depends(require("enrol"))) -> dict[str, Any]:
    """The photos are kept by the server, ingested, and the main face of each is given the name."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "Enrol with multipart/form-data: 'name' and one or more 'file'.")
    form = await request.form()
    name = form.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(422, "bad_request", "Give the person's 'name'.")
    photos = [(f.filename, await f.read()) for f in form.getlist("file") if hasattr(f, "read")]
    state = request.app.state
    return await run_in_threadpool(writes.enrol, state.config, state.gallery, name, photos)


@router.post("/identities/merge", summary="Make several identities one person")
def merge_identities(body: Merge, request: Request, _key: Any = Depends(require("enrol"))) -> dict[str, Any]:
    n = request.app.state.gallery.merge_identities(body.names, body.into)
    return {"merged": body.names, "into": body.into, "faces": n}


@router.post("/identities/{name}/rename", summary="Rename an identity")
def rename_identity(name: str, body: Rename, request: Request,
                    _key: Any = Depends(require("enrol"))) -> dict[str, Any]:
    n = request.app.state.gallery.rename_identity(name, body.to)
    return {"renamed": name, "to": body.to, "faces": n}


@router.delete("/identities/{name}", summary="Remove a name (its faces stay, unlabeled)")
def delete_identity(name: str, request: Request, _key: Any = Depends(require("enrol"))) -> dict[str, Any]:
    n = request.app.state.gallery.delete_identity(name)
    return {"deleted": name, "faces_unlabeled": n}


@router.post("/identities/{name}/erase", summary="Erase a person from every file of the gallery")
def erase_identity(name: str, request: Request, _key: Any = Depends(require("admin"))) -> dict[str, Any]:
    state = request.app.state
    return writes.erase(state.config, state.gallery, "identities erase", identity=name)


def _face(request: Request, face_id: int) -> Any:
    record = request.app.state.gallery.face_records([face_id]).get(face_id)
    if record is None:
        raise ApiError(404, "not_found", f"No live face with id {face_id} in this gallery.")
    return record


@router.get("/faces/{face_id}", summary="One face: identity, photo, box")
def show_face(face_id: int, request: Request, _key: Any = Depends(require("search"))) -> dict[str, Any]:
    return asdict(_face(request, face_id))


@router.get("/faces/{face_id}/crop", summary="The face cut from its photo (JPEG)",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def face_crop(
    face_id: int,
    request: Request,
    size: int = Query(256, ge=16, le=1024),
    margin: float = Query(0.4, ge=0, le=2),
    _key: Any = Depends(require("search")),
) -> Response:
    from gallery.faces.crop import crop_face

    record = _face(request, face_id)
    image = crop_face(record.photo, record.box, margin, size)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=88)
    return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})


@router.post("/faces/{face_id}/relabel", summary="Give a face an identity, or none")
def relabel_face(face_id: int, body: Relabel, request: Request,
                 _key: Any = Depends(require("enrol"))) -> dict[str, Any]:
    n = request.app.state.gallery.relabel_faces([face_id], body.name)
    return {"relabeled": n, "identity": body.name}


@router.delete("/faces/{face_id}", summary="Hide a face from every answer")
def delete_face(face_id: int, request: Request, ignore: bool = Query(False, description="also remember it as "
                "not wanted (not a face, not a person of interest)"),
                _key: Any = Depends(require("enrol"))) -> dict[str, Any]:
    n = request.app.state.gallery.delete_faces([face_id], ignore=ignore)
    return {"ignored": n} if ignore else {"deleted": n}


@router.post("/faces/{face_id}/erase", summary="Erase a face from every file of the gallery")
def erase_face(face_id: int, request: Request, _key: Any = Depends(require("admin"))) -> dict[str, Any]:
    state = request.app.state
    return writes.erase(state.config, state.gallery, "faces erase", face_ids=[face_id])
