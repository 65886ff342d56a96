"""Crash-safe file writes, shared by every module that writes a file another process may read.

`atomic_write` writes to a temporary name in the same folder, fsyncs it, renames it over the target
and fsyncs the folder: a reader sees the old file or the new one, never a part, and a crash leaves at
most a temporary file (named `.NAME.PID.tmp`) that the owner's clean-up removes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def clean_name(filename: str | None, fallback: str = "upload") -> str:
    """A file name safe to put in a folder (no path, no odd characters), keeping the extension."""
    name = _UNSAFE.sub("_", Path(filename or "").name).strip("._") or fallback
    return name[-120:]


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: Path, content: bytes | Callable[[Path], None], mode: int | None = None) -> int:
    """Write `content` (bytes, or a function that writes the file at the path it is given) to `path`
    atomically; returns the new file's size in bytes."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        if callable(content):
            content(tmp)
        else:
            with open(tmp, "wb") as fh:
                fh.write(content)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path.stat().st_size


def lock_held(path: Path) -> bool:
    """True when some process holds the lock file at `path` (a writer, a build, a running server):
    tried without waiting, and released at once when free."""
    from filelock import FileLock, Timeout

    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False

