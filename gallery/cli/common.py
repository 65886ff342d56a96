"""What every `gallery` subcommand shares: consoles, common options, one message style, and the one
place where known errors become a clear message and an exit code instead of a traceback.

Only typer and rich are imported here: `gallery --help` must stay fast (no torch, no faiss).
"""

from __future__ import annotations

import errno
import functools
import math
import signal
import threading
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

out = Console()
err = Console(stderr=True)

_exit_without_teardown = False


def exit_without_teardown() -> None:
    """Called by a one-shot command (search, verify) once it has closed everything it opened: the
    console entry point then ends the process at once instead of running the interpreter's teardown,
    which with torch loaded takes about half a second on a 2-core x86 VM and finishes nothing a done
    command needs. Only the console entry point acts on it (never a test's CliRunner)."""
    global _exit_without_teardown
    _exit_without_teardown = True


def wants_exit_without_teardown() -> bool:
    return _exit_without_teardown


def finite_threshold(value: float | None) -> float | None:
    """--threshold: checked by the one threshold rule (gallery.app.answers.check_threshold)."""
    if value is None:
        return None
    from gallery.app.answers import InvalidThreshold, check_threshold

    try:
        return check_threshold(value)
    except InvalidThreshold as exc:
        raise typer.BadParameter(str(exc)) from None


def fpir_range(value: float) -> float:
    """--target-fpir: a rate of false positives to allow, so more than 0 (no threshold allows none
    for certain) and at most 1."""
    if not (math.isfinite(value) and 0 < value <= 1):
        raise typer.BadParameter(f"{value} is not a rate to allow: give a number above 0 and at most 1 (e.g. 0.01).")
    return value


GalleryOpt = Annotated[Path, typer.Option("--gallery", "-g", help="Gallery folder.", show_default=False)]
# A group callback that lists when run alone (`gallery identities`, `gallery clusters`): --gallery is
# optional there, so that `gallery clusters show ... --gallery G` does not need it twice.
OptionalGalleryOpt = Annotated[Path | None, typer.Option("--gallery", "-g", help="Gallery folder.",
                                                         show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.", metavar="")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
WeightsOpt = Annotated[Path | None, typer.Option(
    help="Model weights file (.dat, .pt, Keras .h5, .onnx; else found in the cache, or downloaded). A gallery "
         "records its file's SHA-256 and refuses another file.")]
PresetOpt = Annotated[str | None, typer.Option(
    help="With --model onnx: the model family's input convention (arcface-112, sface-112, adaface-112, "
         "facenet-160; see `gallery models`).", show_default=False)]
ThresholdOpt = Annotated[
    float | None, typer.Option(help="Match threshold, -1..1 (default: calibrated, or the gallery's default).",
                               callback=finite_threshold)
]
MaxFileSizeOpt = Annotated[int, typer.Option(help="Refuse files larger than this many MiB without reading them.",
                                             min=1)]

F = TypeVar("F", bound=Callable[..., Any])


def safe(value: object) -> str:
    """Text from the gallery (names, paths) as the terminal should show it: control characters (ANSI
    escapes, newlines, carriage returns) shown as inert escapes (`\\n`, `\\x1b`) that a person can
    still read and type back, and rich markup escaped. The stored value is untouched."""
    text = "".join(ch.encode("unicode_escape").decode() if unicodedata.category(ch) == "Cc" else ch
                   for ch in str(value))
    return escape(text)


def fail(message: str, code: int = 2) -> None:
    """One red line (paths stay copyable: no wrapping, no markup from the message) and exit."""
    err.print(f"[bold red]error:[/] {safe(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def listing_gallery(gallery: Path | None) -> Path:
    """The --gallery of a listing group callback, which typer cannot mark required."""
    if gallery is None:
        fail("Missing option '--gallery' / '-g'.")
    return gallery  # type: ignore[return-value]


def hint(message: str) -> None:
    """What to run next, as part of the command's answer: on stdout, after the answer. (On stderr it
    would be read, in a captured shell line, after the answers of the commands that follow.)"""
    out.print(safe(message), style="dim", highlight=False, soft_wrap=True)


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 face`, `2 faces`, `1 identity`, `3 identities` (thousands separated)."""
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def warn(message: str) -> None:
    err.print(f"[bold yellow]warning:[/] {safe(message)}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    err.print(safe(message), style="dim", highlight=False, soft_wrap=True)


@contextmanager
def errors_as_messages() -> Iterator[None]:
    """Known problems become one clear message and their exit code (2 unless the error says
    otherwise), never a traceback; Ctrl-C exits 130 keeping committed work."""
    from sqlalchemy.exc import DatabaseError

    from gallery.errors import GalleryError

    try:
        yield
    except GalleryError as exc:
        fail(str(exc), exc.exit_code)
    except DatabaseError as exc:
        from gallery.store.integrity import DATABASE_WAY_OUT

        fail(f"gallery database problem: {exc.orig}. {DATABASE_WAY_OUT}")
    except OSError as exc:  # FileNotFoundError, PermissionError, disk full...: the message names the path
        if exc.errno == errno.ENOSPC:
            fail(f"{exc}. The disk is full: free space, then run the same command again (committed work is kept; "
                 "a half-written file is cleaned up).")
        fail(str(exc))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted:[/] committed work is kept; run the same command again to resume.")
        raise typer.Exit(130) from None


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM is handled like Ctrl-C: committed work is kept, the run is marked interrupted, exit 130."""
    raise KeyboardInterrupt


def guarded(fn: F) -> F:
    """Run a command callback inside `errors_as_messages`, showing the warnings it raised."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from gallery.errors import IndexOutgrownWarning

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)

        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", IndexOutgrownWarning)
                with errors_as_messages():
                    return fn(*args, **kwargs)
        finally:  # outside the recording block: showing a warning here must not record it again
            for w in caught:
                if issubclass(w.category, IndexOutgrownWarning):
                    warn(str(w.message))
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    return wrapper  # type: ignore[return-value]


class GalleryTyper(typer.Typer):
    """A Typer app whose every command runs `guarded`: errors are handled in this one place."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        return self._guarding(super().command(*args, **kwargs))

    def callback(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        return self._guarding(super().callback(*args, **kwargs))

    @staticmethod
    def _guarding(register: Callable[[F], F]) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            register(guarded(fn))
            return fn

        return decorator


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def print_json(answer: Any) -> None:
    """An answer (gallery.app.answers) as one line of JSON: the object the HTTP API answers too."""
    print(answer.model_dump_json())


def say_after_write(after: Any, gallery: Path) -> None:
    """What a write that added faces did to keep the gallery searchable (gallery.app.answers.AfterWrite):
    erasures finished or still pending, the index built or updated, the calibration, what to run next."""
    erasures = after.erasures
    if erasures is not None and erasures.finished:
        note(f"finished {erasures.finished} pending erasure(s)")
    if erasures is not None and erasures.pending:
        warn(f"an erasure is still pending ({'; '.join(f'{p}: {w}' for p, w in erasures.blocked.items())}); "
             f"`gallery repair --gallery {gallery}` finishes it")
    index = after.index
    if index.action == "build":
        hint(f"built the index: {index.factory}, {index.ntotal:,} faces")
    elif index.action == "update":
        hint(f"folded the new faces into the index: {index.ntotal:,} faces")
    say_calibration(after.calibration)
    if after.next:
        hint(f"next: {after.next}")


def say_calibration(report: Any) -> None:
    """The automatic calibration a write ran (a gallery.app.answers.Calibration), if any."""
    if report is None:
        return
    hint(f"calibrated the match threshold automatically: {report.threshold:.4f} with runner-up weight "
         f"{report.rule['weight']:g} (FPIR {report.fpir:.2%}, FNIR {report.fnir:.2%}, {report.identities} "
         "identities); see `gallery info`")
