"""1:1 verification: are the main faces of two photos the same person?"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gallery.errors import GalleryError, VerifyError
from gallery.faces.models import model_for_gallery
from gallery.faces.pipeline import FacePipeline
from gallery.store import Gallery
from search.threshold import resolve_threshold


@dataclass
class VerifyResult:
    photo_a: str
    photo_b: str
    score: float
    threshold: float
    threshold_source: str
    same: bool
    model: str
    box_a: list[float]
    box_b: list[float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(
    photo_a: Path | str,
    photo_b: Path | str,
    gallery_dir: Path | str | None = None,
    model: str | None = None,
    threshold: float | None = None,
    device: str = "auto",
    weights: Path | None = None,
    preset: str | None = None,
) -> VerifyResult:
    """Cosine similarity of the two photos' main faces, against the gallery's (or model's) threshold.

    With a gallery, its model and threshold are used; without one, `model` (default: the default
    model) and its default threshold.
    """
    if gallery_dir is not None:
        with Gallery.open(gallery_dir) as gallery:
            stamp = gallery.model_stamp
            if stamp is None:
                raise GalleryError(f"Gallery '{gallery_dir}' has no model yet; leave out --gallery.")
            spec = model_for_gallery(stamp, model, preset)
            value, source = resolve_threshold(gallery, threshold)
    else:
        spec = model_for_gallery(None, model, preset)
        value, source = resolve_threshold(None, threshold, spec)
    if value is None:
        raise GalleryError(f"No threshold to decide with: {source}. Pass --threshold.")
    pipeline = FacePipeline(spec, device, weights)
    faces = []
    for photo in (photo_a, photo_b):
        found = pipeline.faces_of(photo, largest_only=True)
        if not found.ok:
            raise VerifyError(f"{photo}: {found.error} ({found.detail})")
        faces.append(found.faces[0])
    score = float(np.dot(faces[0].embedding, faces[1].embedding))
    return VerifyResult(str(photo_a), str(photo_b), round(score, 4), float(value), source,
                        score >= float(value), spec.name, faces[0].box, faces[1].box)
