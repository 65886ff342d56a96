"""Keep photos out of a gallery's future ingests and syncs by their files, or let them in again.

An erasure keeps its photos out by itself (gallery.store.keep_out); these are for photos the gallery
does not hold: erased without it, or never to be read in. Only a keyed fingerprint of each file's
content is recorded (see gallery.store.keep_out), never its path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gallery.errors import GalleryError
from gallery.faces.decode import content_sha256
from gallery.ingest.scan import expand_photo_args
from gallery.store import Gallery
from gallery.store.keep_out import admit_content, keep_out_content


@dataclass
class KeepOutResult:
    photos: int  # photo files read
    changed: int  # newly kept out (keep_out) or let in again (admit)
    in_gallery: list[str] = field(default_factory=list)  # keep_out: files whose content the gallery holds
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> why it was not read

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hashes(paths: list[Path]) -> tuple[dict[str, str], dict[str, str]]:
    photos = expand_photo_args(paths)
    if not photos:
        raise GalleryError(f"No photos in {', '.join(map(str, paths))}.")
    hashes, unreadable = {}, {}
    for photo in photos:
        sha256, why = content_sha256(str(photo))
        if sha256 is None:
            unreadable[str(photo)] = why or "unreadable"
        else:
            hashes[str(photo)] = sha256
    return hashes, unreadable


def keep_out_photos(gallery_dir: Path | str, paths: list[Path]) -> KeepOutResult:
    """Ingest and sync will not read these photos (files, or folders of them) in again. Photos the
    gallery holds stay until erased: they are named in `in_gallery`."""
    hashes, unreadable = _hashes(paths)
    with Gallery.open(gallery_dir) as g, g.writer_lock():
        held = set(g.photos_by_content(sorted(set(hashes.values()))))
        with g.session() as s, s.begin():
            changed = keep_out_content(s, hashes.values())
    return KeepOutResult(len(hashes), changed, sorted(p for p, h in hashes.items() if h in held), unreadable)


def admit_photos(gallery_dir: Path | str, paths: list[Path]) -> KeepOutResult:
    """Let kept-out photos in again: the next ingest or sync of their folder reads them."""
    hashes, unreadable = _hashes(paths)
    with Gallery.open(gallery_dir) as g, g.writer_lock():
        with g.session() as s, s.begin():
            changed = admit_content(s, hashes.values())
    return KeepOutResult(len(hashes), changed, [], unreadable)
