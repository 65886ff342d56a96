"""One progress protocol for every long operation (ingest, index build/update, benchmarks).

A long operation takes an optional `on_progress: ProgressFn` and calls it with a `Progress` event
whenever something worth showing happened; the CLI draws them, the Python API may ignore them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    stage: str  # what is running: "ingest", "sample", "train", "add", "ground truth", ...
    done: int = 0  # units finished so far in this stage
    total: int | None = None  # units in this stage, when known
    message: str = ""  # one line for a person (rates, the setting being measured, ...)


ProgressFn = Callable[[Progress], None]


def report(on_progress: ProgressFn | None, stage: str, done: int = 0, total: int | None = None,
           message: str = "") -> None:
    """Call `on_progress` when one was given (the common case in library code is none)."""
    if on_progress is not None:
        on_progress(Progress(stage, done, total, message))
