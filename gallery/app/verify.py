"""1:1 verification, for `gallery verify` and POST /v1/verify alike: is the main face of photo A the
same person as the main face of photo B, or as a gallery identity (`identity`: the identity's
best-matching live face)?

A 1:1 question gets the 1:1 threshold (search.threshold.resolve_one_to_one): the gallery's, calibrated on
its genuine and impostor pairs at a target false match rate, or the model's default. It is lower than a
1:K search's threshold, which must keep the false positive rate over every enrolled identity at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gallery.app.answers import VerifyAnswer, check_threshold
from gallery.errors import GalleryError, NotInGallery, VerifyError
from gallery.store import Gallery

if TYPE_CHECKING:
    from search.searcher import Searcher


def _main_face(faces_of: Any, spec: Any, photo: Path | str, name: str) -> tuple[Any, dict[str, Any]]:
    found = faces_of(photo, largest_only=True)
    if not found.ok:
        raise VerifyError(f"{name}: {found.error} ({found.detail})", reason=found.error, file=name)
    return found.faces[0], found.quality(spec)[0].as_dict()


def _compare(faces_of: Any, spec: Any, gallery: Gallery | None, value: float, source: str, photo_a: Path | str,
             photo_b: Path | str | None, identity: str | None, names: tuple[str | None, str | None]) -> VerifyAnswer:
    name_a = names[0] or str(photo_a)
    a, quality_a = _main_face(faces_of, spec, photo_a, name_a)
    common = dict(photo_a=name_a, threshold=float(value), threshold_source=source, model=spec.name,
                  box_a=a.box, quality_a=quality_a)
    if identity is not None:
        assert gallery is not None
        ids = [f.face_id for f in gallery.identity_faces(identity) if not f.deleted]
        if not ids:
            raise NotInGallery(f"Identity '{identity}' has no live faces.")
        scores = gallery.read_embeddings(ids) @ a.embedding
        best = int(np.argmax(scores))
        score = float(scores[best])
        return VerifyAnswer(**common, identity=identity, score=score, same=score >= value, face_id=ids[best],
                            faces_compared=len(ids))
    assert photo_b is not None
    name_b = names[1] or str(photo_b)
    b, quality_b = _main_face(faces_of, spec, photo_b, name_b)
    score = float(np.dot(a.embedding, b.embedding))
    return VerifyAnswer(**common, photo_b=name_b, score=score, same=score >= value, box_b=b.box, quality_b=quality_b)


def verify(
    photo_a: Path | str,
    photo_b: Path | str | None = None,
    gallery_dir: Path | str | None = None,
    model: str | None = None,
    threshold: float | None = None,
    device: str = "auto",
    weights: Path | None = None,
    preset: str | None = None,
    identity: str | None = None,
    names: tuple[str | None, str | None] = (None, None),
    searcher: Searcher | None = None,
) -> VerifyAnswer:
    """Cosine similarity of photo A's main face with photo B's (or with `identity`'s faces), against the
    1:1 threshold: `threshold` when given, else the gallery's (or, without a gallery, `model`'s default).

    `searcher`: an open searcher of the gallery (a server's) lends its loaded models and the gallery;
    `names`: how the photos are named in the answer (an upload's file name), default their paths."""
    check_threshold(threshold)
    if (photo_b is None) == (identity is None):
        raise GalleryError("Give a second photo or an identity (--identity NAME, with --gallery), not both.")
    if searcher is not None:
        value, source = searcher.decision_threshold(threshold, faces_mode=True)
        return _compare(searcher.faces_of, searcher.spec, searcher.gallery, value, source, photo_a, photo_b,
                        identity, names)
    from gallery.faces.models import model_for_gallery
    from gallery.faces.pipeline import FacePipeline
    from search.threshold import resolve_one_to_one

    if gallery_dir is None:
        if identity is not None:
            raise GalleryError("--identity needs the gallery the person is in: add --gallery.")
        spec = model_for_gallery(None, model, preset)
        value, source = resolve_one_to_one(None, threshold, spec)
        if value is None:
            raise GalleryError(f"No threshold to decide with: {source}. Pass --threshold.")
        return _compare(FacePipeline(spec, device, weights).faces_of, spec, None, value, source, photo_a, photo_b,
                        identity, names)
    with Gallery.open(gallery_dir) as gallery:
        stamp = gallery.model_stamp
        if stamp is None:
            raise GalleryError(f"Gallery '{gallery_dir}' has no model yet; leave out --gallery.")
        spec = model_for_gallery(stamp, model, preset)
        value, source = resolve_one_to_one(gallery, threshold)
        if value is None:
            raise GalleryError(f"No threshold to decide with: {source}. Pass --threshold.")
        return _compare(FacePipeline(spec, device, weights).faces_of, spec, gallery, value, source, photo_a, photo_b,
                        identity, names)
