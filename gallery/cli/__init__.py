"""The `gallery` command: the root typer app, with one module per command group on top of the API.

Nothing imports this package; it imports everything below it, lazily: each command imports the heavy
libraries it needs (torch, faiss) inside its body, so `gallery --help` and `gallery info` stay fast.

Exit codes: 0 success (photos that failed are recorded, not fatal); 1 `search`/`verify`: some query
photo had no usable face; 2 a problem the message explains (missing gallery, weights, model
mismatch, bad option); 130 interrupted (committed work is kept).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from gallery.cli import bench, cluster, common, curate, info, ingest, keys, search, serve
from gallery.cli.common import GalleryTyper
from gallery.cli.index import index_app

app = GalleryTyper(
    help="Face gallery search engine: ingest photo archives, index faces, ask 'who is this?'.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log diagnostics to stderr.", metavar="")] = False,
) -> None:
    """Face gallery search engine: ingest photo archives, index faces, ask 'who is this?'."""
    from gallery.device import apply_process_defaults

    apply_process_defaults()  # before any command imports torch or faiss
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


ingest.register(app)
ingest.register_sync(app)
info.register(app)
curate.register(app)
cluster.register(app)
search.register(app)
bench.register(app)
keys.register(app)
serve.register(app)
app.add_typer(index_app, name="index")


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except SystemExit as done:
        if not common.wants_exit_without_teardown():
            raise
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
