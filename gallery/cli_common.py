"""What every `gallery` subcommand shares: consoles, common options, and turning known errors
into one clear message (exit code 2) instead of a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gallery.labels import LabelSourceError
from gallery.models import ModelWeightsMissing, UnknownModelError
from gallery.store import GalleryError

out = Console()
err = Console(stderr=True)

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    GalleryError,
    ModelWeightsMissing,
    UnknownModelError,
    LabelSourceError,
    OSError,  # FileNotFoundError, PermissionError, NotADirectoryError...: the message names the path
)

GalleryOpt = Annotated[Path, typer.Option("--gallery", "-g", help="Gallery folder.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # paths stay copyable
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Known problems become one clear message and exit code 2, never a traceback."""
    from sqlalchemy.exc import DatabaseError

    from gallery.device import DeviceUnavailable  # imports torch: only when a command runs
    from indexer.errors import IndexerError

    try:
        yield
    except DatabaseError as exc:
        fail(f"gallery database problem: {exc.orig}. Is the gallery folder writable and its gallery.db intact?")
    except (*EXPECTED_ERRORS, DeviceUnavailable, IndexerError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted:[/] committed work is kept; run the same command again to resume.")
        raise typer.Exit(130) from None
