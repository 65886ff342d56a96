"""`gallery labels export --xmp`: the names the gallery holds, written as MWG face regions into `.xmp`
sidecars next to the photos, so digiKam, Lightroom and darktable see what was named here.

Photo files are never rewritten. A photo's existing sidecar is merged (every other field kept; a face
region on the same face replaced; regions of other faces and types kept); a new sidecar is named
`NAME.EXT.xmp`. A malformed existing sidecar is reported and left untouched. A dry run computes the
same changes and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gallery.faces.xmp import Region, SidecarChange, XmpError, merge_regions, sidecar_for
from gallery.fsutil import atomic_write
from gallery.store import Gallery


@dataclass
class XmpExportSummary:
    photos: int = 0  # photos with named faces
    changes: list[SidecarChange] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "path: why" for photos left alone
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "unchanged": 0}
        for change in self.changes:
            out[change.action] += 1
        return out

    def as_dict(self) -> dict:
        return {"photos": self.photos, "dry_run": self.dry_run, **self.counts(), "problems": self.problems,
                "changes": [{"sidecar": c.sidecar, "action": c.action, "added": c.added, "replaced": c.replaced,
                             "kept": c.kept} for c in self.changes]}


def export_xmp(gallery_dir: Path | str, dry_run: bool = False) -> XmpExportSummary:
    """Write (or with `dry_run` only compute) the sidecar of every photo with a named face."""
    with Gallery.open(gallery_dir) as gallery:
        photos = gallery.named_faces_by_photo()
    summary = XmpExportSummary(photos=len(photos), dry_run=dry_run)
    for path, (width, height, faces) in photos.items():
        photo = Path(path)
        if not photo.is_file():
            summary.problems.append(f"{path}: the photo is not on disk (run `gallery sync` first)")
            continue
        if width <= 0 or height <= 0:
            summary.problems.append(f"{path}: no recorded size")
            continue
        regions = [Region(name, max(0.0, x1 / width), max(0.0, y1 / height), min(1.0, x2 / width),
                          min(1.0, y2 / height), "mwg") for name, (x1, y1, x2, y2) in faces]
        sidecar = sidecar_for(photo)
        try:
            existing = sidecar.read_bytes() if sidecar.is_file() else None
            change = merge_regions(existing, regions, width, height, str(sidecar))
        except (XmpError, OSError) as exc:
            summary.problems.append(f"{sidecar}: not changed, the existing sidecar is not readable XMP ({exc})")
            continue
        summary.changes.append(change)
        if not dry_run and change.content is not None:
            atomic_write(sidecar, change.content)
    return summary
