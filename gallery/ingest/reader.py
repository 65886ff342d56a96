"""The reading side of an ingest: which files to read (the resume filter) and their decoding in
worker processes, overlapping the detection of earlier batches."""

from __future__ import annotations

import ctypes
import itertools
import os
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from gallery.faces.decode import MAX_FILE_BYTES, DecodedPhoto, decode_photo, timed_decode
from gallery.ingest.scan import FoundFile, PhotoCount, scan_photos

PR_SET_PDEATHSIG = 1  # linux/prctl.h
RESUME_CHUNK = 500  # files looked up in SQLite at once by the resume filter


def _worker_init(parent_pid: int) -> None:
    """In each decode worker: die with the parent whatever kills it (Linux PR_SET_PDEATHSIG), and leave
    Ctrl-C to the parent, which stops the run cleanly (no traceback from every worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class PhotoReader:
    """Scans a source, drops files already ingested unchanged, and decodes the rest.

    `known_files(paths)` answers path → (size, mtime_ns) for files recorded by earlier runs.
    """

    def __init__(
        self,
        source: Path,
        known_files: Callable[[list[str]], dict[str, tuple[int, int]]],
        workers: int | None,
        max_side: int,
        window: int,
        max_file_bytes: int = MAX_FILE_BYTES,
        scanned: list[FoundFile] | None = None,
        count_in_background: bool = True,
    ) -> None:
        self.source = source
        self.known_files = known_files
        self.workers = default_workers() if workers is None else workers
        self.max_side = max_side
        self.max_file_bytes = max_file_bytes
        self.scanned = scanned  # files a caller already found (sync): not scanned again
        self.window = max(window, 4 * self.workers)
        self.files_seen = 0
        self.skipped = 0
        self.count_in_background = count_in_background and scanned is None
        self._count: PhotoCount | None = None
        self._scan_done = False
        self.seconds: Counter[str] = Counter()  # decode (summed over workers), wait_decode

    @property
    def total(self) -> int | None:
        """Photo files in the source, once known: from the files a caller scanned, the end of this
        scan, or the count running beside it (None until then)."""
        if self.scanned is not None:
            return len(self.scanned)
        if self._scan_done:
            return self.files_seen
        return self._count.total if self._count is not None else None

    def new_files(self) -> Iterator[FoundFile]:
        """Scanned files not already recorded with the same size and mtime (a resume skips them)."""
        if self.count_in_background:
            self._count = PhotoCount(self.source)
        try:
            yield from self._new_files()
            self._scan_done = True
        finally:
            if self._count is not None:
                self._count.stop()

    def _new_files(self) -> Iterator[FoundFile]:
        chunk: list[FoundFile] = []

        def flush() -> Iterator[FoundFile]:
            known = self.known_files([str(f.path) for f in chunk])
            for f in chunk:
                if known.get(str(f.path)) == (f.size, f.mtime_ns):
                    self.skipped += 1
                else:
                    yield f

        for found in self.scanned if self.scanned is not None else scan_photos(self.source):
            self.files_seen += 1
            chunk.append(found)
            if len(chunk) >= RESUME_CHUNK:
                yield from flush()
                chunk = []
        if chunk:
            yield from flush()

    def decoded(self) -> Iterator[DecodedPhoto]:
        """Decode the new files in worker processes with a bounded window, so decoding overlaps
        detection and memory holds only a few batches of pixels however large the archive."""
        files = self.new_files()
        if self.workers <= 0:
            for f in files:
                t0 = time.perf_counter()
                photo = decode_photo(str(f.path), f.size, f.mtime_ns, self.max_side, self.max_file_bytes,
                                     videos=True)
                self.seconds["decode"] += time.perf_counter() - t0
                yield photo
            return
        first = next(files, None)
        if first is None:  # nothing new: no worker processes at all
            return
        # spawn: forking a process that already runs torch's thread pools can deadlock.
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"),
                                   initializer=_worker_init, initargs=(os.getpid(),))
        try:
            queue: deque[Future] = deque()
            for f in itertools.chain([first], files):
                queue.append(pool.submit(timed_decode, str(f.path), f.size, f.mtime_ns, self.max_side,
                                         self.max_file_bytes))
                if len(queue) >= self.window:
                    yield self._take(queue.popleft())
            while queue:
                yield self._take(queue.popleft())
        finally:
            # interrupted or done: queued decodes are dropped, running ones end in a moment
            pool.shutdown(wait=True, cancel_futures=True)

    def _take(self, future: Future) -> DecodedPhoto:
        t0 = time.perf_counter()
        photo, seconds = future.result()
        self.seconds["decode"] += seconds
        self.seconds["wait_decode"] += time.perf_counter() - t0
        return photo
