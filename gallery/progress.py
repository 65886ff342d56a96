"""One progress protocol for every long operation (ingest, index build/update, benchmarks).

A long operation takes an optional `on_progress: ProgressFn` and calls it with a `Progress` event
whenever something worth showing happened; the CLI draws them, the server's jobs record them, the
Python API may ignore them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    stage: str  # what is running: "ingest", "sample", "train", "add", "ground truth", ...
    done: int = 0  # units finished so far in this stage
    total: int | None = None  # units in this stage, when known
    message: str = ""  # one line for a person (rates, the setting being measured, ...)
    rate: float | None = None  # units per second lately, when measured
    eta_seconds: float | None = None  # time left at that rate, when the total is known

    def as_dict(self) -> dict:
        return {"stage": self.stage, "done": self.done, "total": self.total, "message": self.message,
                "rate": None if self.rate is None else round(self.rate, 3),
                "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1)}


ProgressFn = Callable[[Progress], None]


def report(on_progress: ProgressFn | None, stage: str, done: int = 0, total: int | None = None,
           message: str = "", rate: float | None = None, eta_seconds: float | None = None) -> None:
    """Call `on_progress` when one was given (the common case in library code is none)."""
    if on_progress is not None:
        on_progress(Progress(stage, done, total, message, rate, eta_seconds))


class RateMeter:
    """The rate of recent work and the time left at that rate.

    The rate is measured over the last `window` seconds (at least `min_span` of them), not since the
    start: model loading, a resume's skipped files or a slow first batch must not bend the estimate
    for hours. Work that cost nothing (files skipped unread) is left out of the rate by the caller
    passing only the work that was really done.
    """

    def __init__(self, window: float = 60.0, min_span: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.min_span = min_span
        self.clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, worked: int, remaining: int | None) -> tuple[float | None, float | None]:
        """`worked`: units really processed so far; `remaining`: units still to do (None: unknown).
        Returns (units per second, seconds left), each None until it can be measured."""
        now = self.clock()
        self._samples.append((now, worked))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        t0, w0 = self._samples[0]
        span = now - t0
        if span < self.min_span or worked <= w0:
            return None, None
        rate = (worked - w0) / span
        return rate, (None if remaining is None else max(0, remaining) / rate)


def format_seconds(seconds: float | None) -> str:
    """A duration for a person: 45 s, 12 min, 3 h 05 min."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
