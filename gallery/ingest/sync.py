"""`gallery sync`: make the gallery follow the archive as it is on disk now.

- files gone from disk: their photos' faces are deleted (a photo still held by another file stays);
- files whose size or mtime changed: read again; new content replaces the old photo's faces (labels
  as in ingest), the same content changes nothing;
- a renamed file or folder: the same content under a new path keeps its faces, takes the new path,
  and with folder/CSV labels the label the new path gives;
- files that failed: read again when their size or mtime changed, or always with `retry_failed`;
- new files: ingested. Unchanged files are not read at all (the resume filter compares size/mtime).

The diff (the photos the sync started from, the files it retires) is recorded in SQLite in the
transaction of its first change and deleted at its end: the same command after an interruption (Ctrl-C,
a kill, a crash) picks it up and ends exactly where an uninterrupted sync would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gallery.ingest.labels import make_label_fn
from gallery.ingest.reembed import match_boxes
from gallery.ingest.runner import IngestOptions, Ingestor, IngestSummary
from gallery.ingest.scan import scan_photos
from gallery.progress import ProgressFn
from gallery.store import Gallery


@dataclass
class SyncSummary:
    added: int = 0  # new files
    changed: int = 0  # files whose size/mtime changed, read again
    removed: int = 0  # files gone from disk
    retried: int = 0  # files that had failed, read again
    moved: int = 0  # files holding a photo the gallery had under another path (renamed file or folder)
    unchanged: int = 0
    faces_removed: int = 0  # faces of photos no file holds any more
    relabeled: int = 0  # main faces given the label of their new path
    curation_kept: int = 0  # faces of photos read again that took their old face's label or ignore mark
    kept_out: int = 0  # new or changed files whose content is kept out (erased earlier): not read in
    ingest: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _same_faces(gallery: Gallery, old_image: int, record: tuple | None) -> list[tuple[int, int]]:
    """(old face, new face) pairs of a photo read again: boxes matched relative to the photo's size."""
    new_image = record[2] if record else None
    if new_image is None or new_image == old_image:
        return []
    old_ids, old_boxes = gallery.photo_faces(old_image)
    new_ids, new_boxes = gallery.photo_faces(new_image)
    pairs = match_boxes(np.asarray(old_boxes, np.float32), np.asarray(new_boxes, np.float32))
    return [(old_ids[i], new_ids[j]) for i, j in pairs.items()]


def sync(
    source: Path | str,
    gallery_dir: Path | str,
    options: IngestOptions | None = None,
    retry_failed: bool = False,
    on_progress: ProgressFn | None = None,
    **overrides: Any,
) -> SyncSummary:
    """Bring the gallery in line with `source` as it is now (see the module docstring)."""
    opts = replace(options or IngestOptions(), **overrides)
    root = Path(source).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"Photo folder '{root}' does not exist (sync takes the folder that was ingested).")
    summary = SyncSummary()
    gallery = Gallery.open_or_create(gallery_dir)
    try:
        scanned = list(scan_photos(root))  # one scan serves the diff and the ingest
        on_disk = {str(f.path): (f.size, f.mtime_ns) for f in scanned}
        with gallery.writer_lock():
            known = gallery.files_under(str(root))
            # an interrupted sync of this folder: its diff (what it had already retired) carries on
            earlier = gallery.sync_plan(str(root)) or {"before_images": [], "gone": {}}
            before_images = {image for _, _, image, _ in known.values() if image is not None}
            before_images |= set(earlier["before_images"])
            gone = [p for p in known if p not in on_disk]
            changed = [p for p, (size, mtime, _, _) in known.items() if p in on_disk and on_disk[p] != (size, mtime)]
            failed = [p for p, (_, _, _, status) in known.items() if status == "failed" and p in on_disk]
            retry = [p for p in failed if retry_failed or p in changed]
            gone_images = {**earlier["gone"], **{p: known[p][2] for p in gone}}
            reread = {**earlier.get("changed", {}), **{p: known[p][2] for p in changed if known[p][2] is not None}}
            # the diff is recorded durably in the transaction of the first change
            gallery.forget_files(gone + retry, str(root), {"before_images": sorted(before_images), "gone": gone_images,
                                                            "changed": reread})
        new_paths = [p for p in on_disk if p not in known and p not in earlier["gone"]]
        summary.retried = len(retry)
        summary.changed = len([p for p in changed if p not in retry])
        summary.unchanged = len(on_disk) - len(new_paths) - summary.changed - summary.retried
        ingested: IngestSummary = Ingestor(root, gallery, opts, scanned).run(on_progress)
        summary.ingest = ingested.as_dict()
        # a new path holding content the gallery had before is a move (or a copy), not a new photo;
        # a vanished path whose photo is still held elsewhere was moved, not removed
        after = gallery.files_under(str(root))
        held = {image for _, _, image, _ in after.values() if image is not None}
        summary.moved = sum(1 for p in new_paths if after.get(p, (0, 0, None, ""))[2] in before_images)
        summary.added = sum(1 for p in new_paths if p in after) - summary.moved  # kept out: not recorded
        summary.kept_out = ingested.kept_out
        summary.removed = sum(1 for image in gone_images.values() if image not in held)
        label_fn = make_label_fn(opts.labels, root)
        for image_id, path, main in gallery.moved_photos(before_images):
            gallery.move_photo(image_id, path)
            label = label_fn(Path(path))
            record = gallery.face_records([main]).get(main) if main is not None else None
            if label and record is not None and record.identity != label:
                gallery.relabel_faces([record.face_id], label)
                summary.relabeled += 1
        summary.curation_kept = gallery.carry_curation(
            [pair for path, old in reread.items() for pair in _same_faces(gallery, old, after.get(path))])
        summary.faces_removed = gallery.retire_photos_without_files(before_images)
        gallery.finish_sync(str(root))  # every step above is idempotent: a rerun before this line is harmless
        return summary
    finally:
        gallery.close()
