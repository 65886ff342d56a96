"""1:1 verification: are the main faces of two photos the same person?"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gallery.face_pipeline import FacePipeline
from gallery.models import get_model_spec
from gallery.store import Gallery, GalleryError


class VerifyError(GalleryError):
    pass


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
    model: str = "dlib-resnet",
    threshold: float | None = None,
    device: str = "auto",
    weights: Path | None = None,
) -> VerifyResult:
    """Cosine similarity of the two photos' main faces, against the gallery's (or model's) threshold."""
    source = "--threshold"
    if gallery_dir is not None:
        with Gallery.open(gallery_dir) as gallery:
            stamp = gallery.model_stamp
            if stamp is None:
                raise VerifyError(f"Gallery '{gallery_dir}' has no model yet; pass --model instead.")
            model = stamp["name"]
            gallery_threshold, gallery_source = gallery.threshold()
        if threshold is None:
            threshold, source = gallery_threshold, gallery_source or "gallery"
    spec = get_model_spec(model)
    if threshold is None:
        threshold, source = spec.default_threshold, f"model default ({spec.threshold_source})"
    pipeline = FacePipeline(spec, weights, device)
    faces = []
    for photo in (photo_a, photo_b):
        found = pipeline.faces_of(photo, largest_only=True)
        if not found.ok:
            raise VerifyError(f"{photo}: {found.error} ({found.detail})")
        faces.append(found.faces[0])
    score = float(np.dot(faces[0].embedding, faces[1].embedding))
    return VerifyResult(str(photo_a), str(photo_b), round(score, 4), float(threshold), source,
                        score >= float(threshold), spec.name, faces[0].box, faces[1].box)
