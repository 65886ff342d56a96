"""1:1 verification: are the main faces of two photos the same person?

A 1:1 question gets the 1:1 threshold (search.threshold.resolve_one_to_one): the gallery's, calibrated on
its genuine and impostor pairs at a target false match rate, or the model's default. It is lower than a
1:K search's threshold, which must keep the false positive rate over every enrolled identity at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gallery.errors import GalleryError, VerifyError
from gallery.faces.models import model_for_gallery
from gallery.faces.pipeline import FacePipeline
from gallery.store import Gallery
from search.threshold import resolve_one_to_one


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
    question: str = "1:1"  # the threshold is a 1:1 (two faces) threshold, not the 1:K search one
    quality_a: dict | None = None
    quality_b: dict | None = None

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
            value, source = resolve_one_to_one(gallery, threshold)
    else:
        spec = model_for_gallery(None, model, preset)
        value, source = resolve_one_to_one(None, threshold, spec)
    if value is None:
        raise GalleryError(f"No threshold to decide with: {source}. Pass --threshold.")
    pipeline = FacePipeline(spec, device, weights)
    faces, quality = [], []
    for photo in (photo_a, photo_b):
        found = pipeline.faces_of(photo, largest_only=True)
        if not found.ok:
            raise VerifyError(f"{photo}: {found.error} ({found.detail})")
        faces.append(found.faces[0])
        quality.append(found.quality(spec)[0].as_dict())
    score = float(np.dot(faces[0].embedding, faces[1].embedding))
    return VerifyResult(str(photo_a), str(photo_b), score, float(value), source,
                        score >= float(value), spec.name, faces[0].box, faces[1].box,
                        quality_a=quality[0], quality_b=quality[1])
