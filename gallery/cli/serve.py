"""`gallery serve`: the gallery over HTTP (FastAPI on uvicorn) with a small web page at `/`.

FastAPI and uvicorn are imported inside the command (the `[server]` extra), never by `gallery --help`.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

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
        allow_host: Annotated[list[str] | None, typer.Option(
            "--allow-host", help="A Host name a server without keys answers besides its address (repeatable; e.g. "
                                 "the name a reverse proxy or /etc/hosts gives it).")] = None,
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
        from gallery.store.gallery import ENROL_DIR

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
        with Gallery.open(gallery) as g, server_folder(g) as folder:
            if enrol_dir is not None:
                g.remember_enrol_dir(enrol_dir)  # so that erasure reaches the copies kept there
            config = ServeConfig(
                gallery=str(gallery.resolve()), jobs_dir=str(folder / "jobs"),
                enrol_dir=str((enrol_dir or gallery / ENROL_DIR).resolve()), auth=has_keys,
                max_upload_bytes=int(max_upload_mb * 2**20), request_timeout_s=request_timeout,
                ingest_roots=[str(p.resolve()) for p in ingest_root or []], device=device, host=host,
                allowed_hosts=list(allow_host or []), uploads_dir=str(folder / "uploads"),
            )
            os.environ[ENV_VAR] = config.to_env()
            note(f"serving {gallery} on http://{host}:{port}/ (API under /v1, docs at /docs); Ctrl-C stops")
            uvicorn.run("gallery.server.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                        log_level=log_level, timeout_graceful_shutdown=5)


@contextmanager
def server_folder(gallery: Any) -> Iterator[Path]:
    """This server's folder in the gallery (job records, uploads being searched), held by a lock file
    while the server runs and deleted when it stops; a killed server's folder is found by `gallery
    check` and removed by `gallery repair` or the next erasure."""
    from filelock import FileLock

    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    gallery.serve_dir.mkdir(exist_ok=True)
    lock = FileLock(gallery.serve_dir / f"{name}.lock")
    lock.acquire()
    folder = gallery.serve_dir / name
    try:
        (folder / "jobs").mkdir(parents=True)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.release()
        (gallery.serve_dir / f"{name}.lock").unlink(missing_ok=True)
        try:
            gallery.serve_dir.rmdir()
        except OSError:
            pass  # another server of this gallery runs
