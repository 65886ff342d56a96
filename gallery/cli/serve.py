"""`gallery serve`: the gallery over HTTP (FastAPI on uvicorn) with a small web page at `/`.

FastAPI and uvicorn are imported inside the command (the `[server]` extra), never by `gallery --help`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from gallery.cli.common import DeviceOpt, GalleryOpt, GalleryTyper, fail, note, warn


def register(app: GalleryTyper) -> None:
    @app.command()
    def serve(
        gallery: GalleryOpt,
        host: Annotated[str, typer.Option(help="Address to listen on (loopback: this machine only).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
        workers: Annotated[int, typer.Option(help="Worker processes, each with its own loaded model.", min=1)] = 1,
        insecure: Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback address without API keys.",
                                               metavar="")] = False,
        max_upload_mb: Annotated[float, typer.Option(help="Largest request body (photo upload) in MiB; larger: "
                                                          "413.", min=0.01)] = 20,
        request_timeout: Annotated[float, typer.Option(help="Seconds before a request is answered 504.", min=1)]
        = 60,
        ingest_root: Annotated[list[Path] | None, typer.Option(
            "--ingest-root", help="Server-side folder POST /v1/ingest may read (repeatable; none: ingest over HTTP "
                                  "is off).")] = None,
        enrol_dir: Annotated[Path | None, typer.Option(help="Where enrolled photos are kept (default: GALLERY/"
                                                            "enrolled).", show_default=False)] = None,
        device: DeviceOpt = "auto",
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    ) -> None:
        """Serve the gallery: /v1 API (OpenAPI at /docs) and a web page at / to ask 'who is this?' and name people."""
        try:
            import importlib

            import uvicorn

            importlib.import_module("gallery.server.app")  # fail now, with the fix, when the extra is missing
        except ImportError as exc:
            fail(f"gallery serve needs the server extra ({exc.name} is missing): pip install 'face-gallery[server]'")
        from gallery.server.config import ENV_VAR, ServeConfig, is_loopback
        from gallery.store import Gallery

        with Gallery.open(gallery) as g:
            has_keys = g.has_active_keys()
        loopback = is_loopback(host)
        if not has_keys and not loopback and not insecure:
            fail(f"Refusing to serve on {host} without API keys: anyone who can reach it could search and edit "
                 f"the gallery. Create a key (gallery keys create --gallery {gallery} --name NAME --scope admin), "
                 "listen on 127.0.0.1, or pass --insecure.")
        if not has_keys:
            warn(f"no API keys in this gallery: every request is allowed{' (loopback only)' if loopback else ''}. "
                 f"Create one with: gallery keys create --gallery {gallery} --name NAME --scope admin "
                 "(the server asks for keys once one exists, from its next start)")
        jobs_dir = tempfile.mkdtemp(prefix="gallery-jobs-")
        config = ServeConfig(
            gallery=str(gallery.resolve()), jobs_dir=jobs_dir,
            enrol_dir=str((enrol_dir or gallery / "enrolled").resolve()), auth=has_keys,
            max_upload_bytes=int(max_upload_mb * 2**20), request_timeout_s=request_timeout,
            ingest_roots=[str(p.resolve()) for p in ingest_root or []], device=device,
        )
        os.environ[ENV_VAR] = config.to_env()
        note(f"serving {gallery} on http://{host}:{port}/ (API under /v1, docs at /docs); Ctrl-C stops")
        try:
            uvicorn.run("gallery.server.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                        log_level=log_level, timeout_graceful_shutdown=5)
        finally:
            shutil.rmtree(jobs_dir, ignore_errors=True)
