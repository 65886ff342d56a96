"""Memory probes: the process RSS (psutil), a peak-RSS sampler for builds, and available memory.

`resource.getrusage(RUSAGE_SELF).ru_maxrss` is the high-water mark of the whole process lifetime, so it
cannot isolate a build that runs after other work in the same process; the sampler records the RSS
before the build and the highest RSS during it (every 20 ms, so a spike shorter than that can be
missed). Both are reported.
"""

from __future__ import annotations

import resource
import sys
import threading

import psutil


def current_rss() -> int:
    return int(psutil.Process().memory_info().rss)


def memory_available() -> int:
    """Bytes the kernel says are available now: decides what fits in RAM."""
    return int(psutil.virtual_memory().available)


def maxrss() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(usage if sys.platform == "darwin" else usage * 1024)


class PeakMemory:
    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.start_rss = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, int(process.memory_info().rss))

    def __enter__(self) -> PeakMemory:
        self.start_rss = self.peak_rss = current_rss()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss = max(self.peak_rss, current_rss())

    def report(self) -> dict:
        return {
            "method": "RSS sampled with psutil every 20 ms during the build; "
            "ru_maxrss = getrusage high-water mark of the whole process",
            "rss_before_bytes": self.start_rss,
            "peak_rss_bytes": self.peak_rss,
            "peak_rss_delta_bytes": max(0, self.peak_rss - self.start_rss),
            "ru_maxrss_bytes": maxrss(),
        }
