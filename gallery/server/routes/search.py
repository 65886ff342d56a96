"""`POST /v1/search` (who is this?) and `POST /v1/verify` (same person?).

A photo comes as a multipart `file` or as base64 in JSON (`image`); embedding-only search takes
`embedding` (one vector) or `embeddings` (several) in JSON. Answers are the objects `gallery search
--json` prints, one per face, under `results`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError

from gallery.server.auth import require
from gallery.server.service import ApiError
from gallery.server.uploads import from_base64, photo_file, refuse_failed

router = APIRouter(tags=["search"])

MULTIPART_SCHEMA = {
    "requestBody": {
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"}, "k": {"type": "integer"},
                "threshold": {"type": "number"}, "largest_only": {"type": "boolean"},
                "faces": {"type": "boolean"}}}},
            "application/json": {"schema": {"type": "object", "properties": {
                "image": {"type": "string", "description": "base64 photo"},
                "embedding": {"type": "array", "items": {"type": "number"}},
                "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                "k": {"type": "integer"}, "threshold": {"type": "number"}, "largest_only": {"type": "boolean"},
                "faces": {"type": "boolean"}}}},
        },
        "required": True,
    }
}


class SearchParams(BaseModel):
    k: int = Field(5, ge=1, le=100, description="identities (or faces) per query face")
    threshold: float | None = Field(None, ge=-1, le=1, description="match threshold (default: the gallery's)")
    largest_only: bool = False
    faces: bool = Field(False, description="nearest gallery faces instead of identities")


def _params(raw: dict[str, Any]) -> SearchParams:
    try:
        return SearchParams.model_validate({k: v for k, v in raw.items() if k in SearchParams.model_fields
                                            and v not in ("", None)})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, "bad_request", problems) from None


async def read_query(request: Request, *names: str) -> tuple[dict[str, Any], dict[str, tuple[str | None, bytes]]]:
    """(fields, photos by field name) from a multipart form or a JSON body (photos as base64)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    photos: dict[str, tuple[str | None, bytes]] = {}
    if kind == "multipart/form-data":
        form = await request.form()
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                if key in names:
                    photos[key] = (value.filename, await value.read())
            else:
                fields[key] = value
        return fields, photos
    if kind == "application/json":
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # RecursionError: nested deeper than a JSON parser follows
            raise ApiError(400, "bad_json", "The body is not valid JSON (or is nested too deep).") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_json", "The JSON body must be an object.")
        for name in names:
            key = "image" if name == "file" else name
            if isinstance(body.get(key), str):
                photos[name] = (body.get("filename") if name == "file" else name, from_base64(body[key], key))
        return body, photos
    raise ApiError(415, "unsupported_media_type", "Send multipart/form-data (a 'file' field) or application/json.")


UNIT_TOLERANCE = 0.01  # |norm - 1| allowed for an embedding sent by a client (JSON rounding is far below)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _embeddings(body: dict[str, Any], dim: int) -> np.ndarray | None:
    """The query embeddings of a JSON body: 1 to 1000 flat lists of `dim` finite numbers, each a unit
    vector as the model makes them (booleans, strings, nested lists and huge values are refused)."""
    rows = body.get("embeddings")
    if rows is None and body.get("embedding") is not None:
        rows = [body["embedding"]]
    if rows is None:
        return None
    ok = (isinstance(rows, list) and 0 < len(rows) <= 1000
          and all(isinstance(r, list) and len(r) == dim and all(_is_number(v) for v in r) for r in rows))
    if not ok:
        raise ApiError(422, "bad_embedding", f"Embeddings must be 1 to 1000 lists of {dim} numbers (this gallery's "
                                             "model dimension).")
    x = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1) if np.isfinite(x).all() else np.full(len(x), np.nan)
    if not (np.abs(norms - 1.0) <= UNIT_TOLERANCE).all():
        raise ApiError(422, "bad_embedding", "Embeddings must be finite unit vectors (L2 norm 1), as the gallery's "
                                             "model makes them.")
    return x.astype(np.float32)


@router.post("/search", openapi_extra=MULTIPART_SCHEMA, summary="Who is this?")
async def search(request: Request, _key: Any = Depends(require("search"))) -> dict[str, Any]:
    """Every face of the photo (or each embedding) with its top-k identities and an open-set decision."""
    fields, photos = await read_query(request, "file")
    params = _params(fields)
    service = request.app.state.service
    tmp = request.app.state.tmp_dir

    def run() -> dict[str, Any]:
        with service.searcher(params.threshold) as s:
            x = _embeddings(fields, s.spec.dim)
            photo: dict[str, Any] | None = None
            if x is not None:
                records = [a.as_dict() for a in s.search_embeddings(x, k=params.k, faces_mode=params.faces)]
            elif "file" in photos:
                filename, data = photos["file"]
                with photo_file(data, filename, tmp) as path:
                    found, answers = s.search(path, largest_only=params.largest_only, faces_mode=params.faces,
                                              k=params.k)
                refuse_failed(found.error, found.detail, filename)
                records = [{**a.as_dict(), "query": filename} for a in answers]
                photo = {"name": filename, "width": found.width, "height": found.height}
            else:
                raise ApiError(422, "bad_request", "Give a photo (multipart 'file' or JSON 'image' in base64) or "
                                                   "JSON 'embedding'/'embeddings'.")
            warnings = s.warnings
        for r in records:
            r["warnings"] = warnings
        return {"results": records, "photo": photo, "warnings": warnings}

    return await run_in_threadpool(run)


@router.get("/faces/{face_id}/similar", summary="Where else does this face appear?")
def similar_faces(
    request: Request,
    face_id: int = Path(ge=1, le=2**63 - 1, description="a gallery face id"),
    k: int = Query(12, ge=1, le=100, description="nearest faces"),
    _key: Any = Depends(require("search")),
) -> dict[str, Any]:
    """The gallery faces nearest to one gallery face (itself left out), each with its photo, score and
    whether it passes the 1:1 threshold: the answer of `gallery search --faces` for a face already in
    the gallery."""
    service, gallery = request.app.state.service, request.app.state.gallery
    if face_id not in gallery.face_records([face_id]):
        raise ApiError(404, "not_found", f"No live face with id {face_id} in this gallery.")
    with service.searcher() as s:
        x = gallery.read_embeddings([face_id])
        [answer] = s.search_embeddings(x, k=k, faces_mode=True, query=f"face {face_id}",
                                       exclude_face_ids=[{face_id}])
        warnings = s.warnings
    return {"face_id": face_id, **answer.as_dict(), "warnings": warnings}


@router.post("/verify", summary="Are these the same person?", openapi_extra={"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file_a": {"type": "string", "format": "binary"}, "file_b": {"type": "string", "format": "binary"},
        "identity": {"type": "string"}, "threshold": {"type": "number"}}}}}, "required": True}})
async def verify(request: Request, _key: Any = Depends(require("search"))) -> dict[str, Any]:
    """The main face of `file_a` against the main face of `file_b` (the same object as `gallery verify
    --json`), or against the faces of a gallery identity (`identity`: its best-matching face)."""
    from search.verify import VerifyResult

    fields, photos = await read_query(request, "file_a", "file_b")
    threshold = fields.get("threshold")
    try:
        threshold = None if threshold in (None, "") else float(threshold)
    except (TypeError, ValueError):
        threshold = math.nan
    if threshold is not None and not (math.isfinite(threshold) and -1 <= threshold <= 1):
        raise ApiError(422, "bad_request", "threshold: a number from -1 to 1.")
    identity = fields.get("identity")
    if "file_a" not in photos or (("file_b" in photos) == bool(identity)):
        raise ApiError(422, "bad_request", "Give 'file_a' and either 'file_b' or 'identity'.")
    service, gallery, tmp = request.app.state.service, request.app.state.gallery, request.app.state.tmp_dir

    def main_face(s: Any, name: str) -> Any:
        filename, data = photos[name]
        with photo_file(data, filename, tmp) as path:
            found = s.pipeline.faces_of(path, largest_only=True)
        refuse_failed(found.error, found.detail, filename)
        return filename, found.faces[0]

    def run() -> dict[str, Any]:
        with service.searcher(threshold) as s:
            name_a, a = main_face(s, "file_a")
            if identity:
                faces = gallery.identity_faces(str(identity))
                ids = [f.face_id for f in faces]
                if not ids:
                    raise ApiError(404, "not_found", f"Identity '{identity}' has no live faces.")
                scores = gallery.read_embeddings(ids) @ a.embedding
                best = int(np.argmax(scores))
                score = float(scores[best])
                return {"photo_a": name_a, "identity": identity, "score": score, "threshold": s.one_to_one,
                        "threshold_source": s.one_to_one_source, "same": score >= s.one_to_one, "question": "1:1",
                        "model": s.spec.name, "box_a": a.box, "face_id": ids[best], "faces_compared": len(ids)}
            name_b, b = main_face(s, "file_b")
            score = float(np.dot(a.embedding, b.embedding))
            return VerifyResult(name_a, name_b, score, s.one_to_one, s.one_to_one_source, score >= s.one_to_one,
                                s.spec.name, a.box, b.box).as_dict()

    return await run_in_threadpool(run)
