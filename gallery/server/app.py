"""The application factory: the /v1 API, its error answers, the limits, and the web page.

`create_app(config)` builds one worker's application; `app_from_env()` is what uvicorn calls in each
worker process (`gallery serve` puts the config in the environment).
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from gallery.device import apply_process_defaults
from gallery.errors import GalleryError
from gallery.server.config import ServeConfig
from gallery.server.docs import mount_docs
from gallery.server.jobs import Jobs
from gallery.server.limits import Limits
from gallery.server.origin import HostGuard
from gallery.server.routes import admin, clusters, people, search
from gallery.server.service import ApiError, SearchService, api_error_of
from gallery.store import Gallery

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
               422: "bad_request", 504: "timeout"}


def _error(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def create_app(config: ServeConfig) -> FastAPI:
    apply_process_defaults()  # before the search service loads torch and faiss
    gallery = Gallery.open(config.gallery)
    service = SearchService(config.gallery_path, config.device)
    if config.uploads_dir:  # in the server's folder in the gallery: a killed server's uploads are found and removed
        Path(config.uploads_dir).mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix=f"worker-{os.getpid()}-", dir=config.uploads_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await run_in_threadpool(service.warm_up)  # the first search should not pay for loading the models
        yield
        service.close()
        gallery.close()
        tmp.cleanup()

    app = FastAPI(
        title="Face gallery",
        version="1",
        summary="Who is this? Search, verify, enrol and tend the people of a face gallery.",
        description="Every /v1 endpoint except /v1/healthz needs an API key in the `X-Api-Key` header "
                    "(`gallery keys create`); scopes nest: admin > enrol > search.",
        lifespan=lifespan,
        docs_url=None,  # served from the package below (gallery.server.docs), not from a CDN
        redoc_url=None,
    )
    app.state.config = config
    app.state.gallery = gallery
    app.state.service = service
    app.state.jobs = Jobs(Path(config.jobs_dir))
    app.state.tmp_dir = Path(tmp.name)
    app.state.verify_key = gallery.verify_key

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.body())

    @app.exception_handler(HTTPException)  # FastAPI's and Starlette's (unknown routes, multipart errors)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else (
            f"No such endpoint: {request.method} {request.url.path} (the API is under /v1; see /docs).")
        return _error(exc.status_code, {"error": ERROR_CODES.get(exc.status_code, "error"), "detail": detail})

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(422, {"error": "bad_request", "detail": problems})

    @app.exception_handler(GalleryError)
    @app.exception_handler(FileNotFoundError)
    async def on_known(request: Request, exc: Exception) -> JSONResponse:
        known = api_error_of(exc)
        assert known is not None
        return _error(known.status, known.body())

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        known = api_error_of(exc)
        if known is not None:
            return _error(known.status, known.body())
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, {"error": "internal", "detail": "An unexpected error: it is logged on the server."})

    for module in (search, people, clusters, admin):
        app.include_router(module.router, prefix="/v1")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    mount_docs(app)
    app.add_middleware(Limits, max_body_bytes=config.max_upload_bytes, timeout_s=config.request_timeout_s)
    if not config.auth:
        app.add_middleware(HostGuard, bound=config.host, allowed=config.allowed_hosts)
    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory in each worker process."""
    return create_app(ServeConfig.from_env())
