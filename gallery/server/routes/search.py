"""`POST /v1/search` (who is this?) and `POST /v1/verify` (same person?).

A photo comes as a multipart `file` (FastAPI's File/Form: the form is documented from the parameters)
or as base64 in JSON (`image`; the JSON body's schema is its pydantic model's); embedding-only search
takes `embedding` (one vector) or `embeddings` (several) in JSON. Answers are the objects `gallery search
--json` prints, one per face, under `results` (gallery.app.answers.SearchAnswer).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gallery.app.answers import SearchAnswer, SearchResult, SimilarFaces, Threshold, VerifyAnswer
from gallery.server.auth import require
from gallery.server.service import ApiError
from gallery.server.uploads import from_base64, photo_file, refuse_failed

router = APIRouter(tags=["search"])



class SearchJson(BaseModel):
    """The JSON form of a search: a photo in base64, or one or more embeddings."""

    model_config = ConfigDict(extra="ignore")
    image: str | None = Field(None, description="the photo, base64")
    filename: str | None = Field(None, description="the photo's name in the answer")
    embedding: list[Any] | None = Field(None, description="one unit embedding of the gallery's dimension")
    embeddings: list[Any] | None = Field(None, description="1 to 1000 unit embeddings")
    k: int = Field(5, ge=1, le=100, description="identities (or faces) per query face")
    threshold: Threshold | None = None
    largest_only: bool = Field(False, description="answer only the photo's main face")
    faces: bool = Field(False, description="nearest gallery faces instead of identities")


class VerifyJson(BaseModel):
    """The JSON form of a verification: photos in base64."""

    model_config = ConfigDict(extra="ignore")
    file_a: str = Field(description="photo A, base64")
    file_b: str | None = Field(None, description="photo B, base64")
    identity: str | None = None
    threshold: Threshold | None = None


def json_alternative(model: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra adding `model` as the request's application/json alternative to the form."""
    return {"requestBody": {"content": {"application/json": {"schema": model.model_json_schema(
        ref_template="#/components/schemas/{model}")}}}}


def content_kind(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def json_body(request: Request, model: type[BaseModel]) -> Any:
    """The request's JSON body as `model` (400 for bad JSON, 422 with the fields' problems)."""
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):  # RecursionError: nested deeper than a JSON parser follows
        raise ApiError(400, "bad_json", "The body is not valid JSON (or is nested too deep).") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "The JSON body must be an object.")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, "bad_request", problems) from None


def form_or_json(request: Request) -> str:
    kind = content_kind(request)
    if kind not in ("multipart/form-data", "application/json"):
        raise ApiError(415, "unsupported_media_type", "Send multipart/form-data (a 'file' field) or application/json.")
    return kind


UNIT_TOLERANCE = 0.01  # |norm - 1| allowed for an embedding sent by a client (JSON rounding is far below)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _embeddings(body: SearchJson, dim: int) -> np.ndarray | None:
    """The query embeddings of a JSON body: 1 to 1000 flat lists of `dim` finite numbers, each a unit
    vector as the model makes them (booleans, strings, nested lists and huge values are refused)."""
    rows = body.embeddings
    if rows is None and body.embedding is not None:
        rows = [body.embedding]
    if rows is None:
        return None
    ok = (0 < len(rows) <= 1000
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


@router.post("/search", response_model=SearchAnswer, summary="Who is this?",
             openapi_extra=json_alternative(SearchJson))
async def search(
    request: Request,
    file: Annotated[UploadFile | None, File(description="the photo")] = None,
    k: Annotated[int, Form(ge=1, le=100, description="identities (or faces) per query face")] = 5,
    threshold: Annotated[Threshold | None, Form()] = None,
    largest_only: Annotated[bool, Form(description="answer only the photo's main face")] = False,
    faces: Annotated[bool, Form(description="nearest gallery faces instead of identities")] = False,
    _key: Any = Depends(require("search")),
) -> SearchAnswer:
    """Every face of the photo (or each embedding) with its top-k identities and an open-set decision."""
    if form_or_json(request) == "application/json":
        body: SearchJson = await json_body(request, SearchJson)
        photo = (body.filename, from_base64(body.image, "image")) if body.image is not None else None
    else:
        body = SearchJson(k=k, threshold=threshold, largest_only=largest_only, faces=faces)
        photo = (file.filename, await file.read()) if file is not None else None
    service = request.app.state.service
    tmp = request.app.state.tmp_dir

    def run() -> SearchAnswer:
        with service.searcher() as s:
            x = _embeddings(body, s.spec.dim)
            size = None
            if x is not None:
                answers, query = s.search_embeddings(x, k=body.k, faces_mode=body.faces, threshold=body.threshold), None
            elif photo is not None:
                filename, data = photo
                with photo_file(data, filename, tmp) as path:
                    found, answers = s.search(path, largest_only=body.largest_only, faces_mode=body.faces, k=body.k,
                                              threshold=body.threshold)
                refuse_failed(found.error, found.detail, filename)
                size, query = {"name": filename, "width": found.width, "height": found.height}, filename
            else:
                raise ApiError(422, "bad_request", "Give a photo (multipart 'file' or JSON 'image' in base64) or "
                                                   "JSON 'embedding'/'embeddings'.")
            warnings = s.warnings
        return SearchAnswer(results=[SearchResult.of(a, warnings, query) for a in answers], photo=size,
                            warnings=warnings)

    return await run_in_threadpool(run)


@router.get("/faces/{face_id}/similar", response_model=SimilarFaces, summary="Where else does this face appear?")
def similar_faces(
    request: Request,
    face_id: int = Path(ge=1, le=2**63 - 1, description="a gallery face id"),
    k: int = Query(12, ge=1, le=100, description="nearest faces"),
    _key: Any = Depends(require("search")),
) -> SimilarFaces:
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
    return SimilarFaces(face_id=face_id, **SearchResult.of(answer, warnings).model_dump())


@router.post("/verify", response_model=VerifyAnswer, summary="Are these the same person?",
             openapi_extra=json_alternative(VerifyJson))
async def verify(
    request: Request,
    file_a: Annotated[UploadFile | None, File(description="photo A (its main face)")] = None,
    file_b: Annotated[UploadFile | None, File(description="photo B (its main face)")] = None,
    identity: Annotated[str | None, Form(description="instead of photo B: a gallery identity")] = None,
    threshold: Annotated[Threshold | None, Form()] = None,
    _key: Any = Depends(require("search")),
) -> VerifyAnswer:
    """The main face of `file_a` against the main face of `file_b` (the same object as `gallery verify
    --json`), or against the faces of a gallery identity (`identity`: its best-matching face; `gallery
    verify A --identity NAME`)."""
    from gallery.app.verify import verify as run_verify

    photos: dict[str, tuple[str | None, bytes]] = {}
    if form_or_json(request) == "application/json":
        body: VerifyJson = await json_body(request, VerifyJson)
        photos["a"] = ("file_a", from_base64(body.file_a, "file_a"))
        if body.file_b is not None:
            photos["b"] = ("file_b", from_base64(body.file_b, "file_b"))
        identity, threshold = body.identity, body.threshold
    else:
        for key, upload in (("a", file_a), ("b", file_b)):
            if upload is not None:
                photos[key] = (upload.filename, await upload.read())
    if "a" not in photos or (("b" in photos) == bool(identity)):
        raise ApiError(422, "bad_request", "Give 'file_a' and either 'file_b' or 'identity'.")
    service, tmp = request.app.state.service, request.app.state.tmp_dir

    def run() -> VerifyAnswer:
        (name_a, data_a), (name_b, data_b) = photos["a"], photos.get("b", ("file_b", b""))
        name_a, name_b = name_a or "file_a", name_b or "file_b"
        with service.searcher() as s, photo_file(data_a, name_a, tmp) as path_a:
            if "b" not in photos:
                return run_verify(path_a, identity=str(identity), threshold=threshold, names=(name_a, None),
                                  searcher=s)
            with photo_file(data_b, name_b, tmp) as path_b:
                return run_verify(path_a, path_b, threshold=threshold, names=(name_a, name_b), searcher=s)

    return await run_in_threadpool(run)
