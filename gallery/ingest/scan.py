"""Find photos under a source folder: recursive, extension-filtered, safe against symlink loops."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gallery.faces.formats import PHOTO_EXTENSIONS, VIDEO_EXTENSIONS

MEDIA_EXTENSIONS = PHOTO_EXTENSIONS | VIDEO_EXTENSIONS  # every format the ingest reads


@dataclass(frozen=True)
class FoundFile:
    path: Path
    size: int
    mtime_ns: int


def is_photo(path: Path) -> bool:
    """A photo or a video the ingest reads (a video is one file, its faces found in sampled frames)."""
    return path.suffix.lower() in MEDIA_EXTENSIONS


def expand_photo_args(paths: list[Path]) -> list[Path]:
    """Photos named on a command line: folders are scanned, anything else is kept as given (a missing
    or special file is answered with an error record by whoever reads it, not dropped here)."""
    photos: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            photos.extend(f.path for f in scan_photos(p))
        else:
            photos.append(p)
    return photos


def _confined(within: Sequence[Path] | None) -> Callable[[str], bool] | None:
    """A test of whether a path's real location (links resolved) lies inside one of `within`."""
    if within is None:
        return None
    roots = [os.path.realpath(r) for r in within]

    def inside(path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)

    return inside


def scan_photos(source: Path, within: Sequence[Path] | None = None,
                on_outside: Callable[[Path], None] | None = None) -> Iterator[FoundFile]:
    """Yield photo files in a stable (sorted) order.

    Symlinked folders are followed once: a folder whose real path was already visited is skipped,
    which breaks loops and avoids reading the same tree twice. A single file is yielded as-is.
    With `within`, every folder and file is resolved to its real path as it is found, and anything
    outside those folders (a link pointing out of them) is skipped and passed to `on_outside`.
    """
    source = Path(source)
    inside = _confined(within)

    def refuse(path: Path) -> None:
        if on_outside is not None:
            on_outside(path)

    if inside is not None and not inside(str(source)):
        refuse(source)
        return
    if source.exists() and not source.is_dir():  # one photo (or a special file, refused when read)
        st = source.stat()
        yield FoundFile(source, st.st_size, st.st_mtime_ns)
        return
    if not source.is_dir():
        raise FileNotFoundError(f"No such photo folder or file: '{source}'")
    visited: set[tuple[int, int]] = set()
    stack = [source]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            continue
        visited.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=True):
                    if inside is not None and not inside(entry.path):
                        refuse(Path(entry.path))
                        continue
                    subfolders.append(Path(entry.path))
                elif is_photo(Path(entry.name)):
                    if inside is not None and not inside(entry.path):
                        refuse(Path(entry.path))
                        continue
                    # Special files (FIFOs, devices, sockets) are yielded too: the reader records them
                    # as not_a_regular_file without opening them for reading.
                    est = entry.stat(follow_symlinks=True)
                    yield FoundFile(Path(entry.path), est.st_size, est.st_mtime_ns)
            except OSError:
                continue  # a dangling symlink or a vanished file: nothing to ingest
        stack.extend(reversed(subfolders))


class PhotoCount:
    """Counts the photo files under a source in a background thread, by the same walk as
    `scan_photos`, so that a progress display has a total (done/total, time left) while the reading
    has already begun. It holds no list of files: an archive of millions costs no memory here.
    `total` is None until the count is finished (or when the walk failed)."""

    def __init__(self, source: Path) -> None:
        self.source = Path(source)
        self.total: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._count, name="photo count", daemon=True)
        self._thread.start()

    def _count(self) -> None:
        n = 0
        try:
            for _ in scan_photos(self.source):
                if self._stop.is_set():
                    return
                n += 1
        except OSError:
            return
        self.total = n

    def stop(self) -> None:
        """Stop counting (the run ended first); the thread ends at its next file."""
        self._stop.set()
