"""Embedding the faces of a damaged shard again from their photos, for `gallery repair`.

A face whose vector has no intact copy (its shard damaged, the index holding compressed codes only,
or gone) can still be recomputed: SQLite keeps its photo (content hash and every path that held it)
and its box. The photo is read again with the gallery's own model and the settings of the ingest
that read it first, the faces are detected again, and each stored face takes the vector of the
re-detected face whose box matches its own (intersection over union at least MIN_IOU): the face id
stays, and with it the label, ignore mark, clusters and rejections. A photo that is gone, changed
(another content hash) or no longer shows a face where the stored box is restores nothing; the
reason is returned per face.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np
from sqlalchemy import select

from gallery.faces.decode import decode_photo
from gallery.faces.models import model_for_gallery
from gallery.ingest.runner import IngestOptions
from gallery.store import Gallery
from gallery.store.restore import LostFace, Recovered
from gallery.store.schema import Image, Run

MIN_IOU = 0.5  # a re-detected box and a stored box are the same face


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of x1 y1 x2 y2 boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_boxes(stored: np.ndarray, found: np.ndarray, min_iou: float = MIN_IOU) -> dict[int, int]:
    """Stored box index -> found box index, greedily by highest overlap, each used once."""
    if len(stored) == 0 or len(found) == 0:
        return {}
    iou = box_iou(stored, found)
    out: dict[int, int] = {}
    for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < min_iou:
            break
        if i in out or j in out.values():
            continue
        out[int(i)] = int(j)
    return out


def _ingest_options(gallery: Gallery, image_ids: set[int]) -> IngestOptions:
    """The options of the ingest that read these photos (the latest run among theirs), else defaults."""
    known = {f.name for f in fields(IngestOptions)}
    with gallery.session() as s:
        args = s.scalar(select(Run.args).join(Image, Image.run_id == Run.run_id)
                        .where(Image.image_id.in_(image_ids)).order_by(Run.run_id.desc()).limit(1))
    try:
        recorded = json.loads(args) if args else {}
    except ValueError:
        recorded = {}
    kept = {k: v for k, v in recorded.items() if k in known and k not in ("model", "preset", "flip", "labels")}
    if kept.get("weights"):
        kept["weights"] = Path(kept["weights"])
    return IngestOptions(**{**kept, "workers": 0})


def reembed_faces(gallery: Gallery, faces: Sequence[LostFace], recovered: Recovered,
                  device: str = "auto") -> None:
    """Embed each face of `faces` again from its photo into `recovered` (or say in recovered.reasons
    why not). The networks are loaded only when there is a face to embed."""
    if not faces:
        return
    by_image: dict[int, list[LostFace]] = defaultdict(list)
    for face in faces:
        by_image[face.image_id].append(face)
    options = _ingest_options(gallery, set(by_image))
    photos = {}
    for image_id, group in by_image.items():
        for path in group[0].photo_paths:
            try:
                st = Path(path).stat()
            except OSError:
                continue
            candidate = decode_photo(path, st.st_size, st.st_mtime_ns, options.max_side, options.max_file_size)
            if candidate.ok and candidate.sha256 == group[0].photo_sha256:
                photos[image_id] = candidate
                break
        else:
            why = ("its photo is gone or changed since it was read (no file holds its content: "
                   + ", ".join(group[0].photo_paths[:3]) + ")")
            for face in group:
                recovered.reasons[face.face_id] = why
    if not photos:
        return  # nothing to read: the networks are not loaded
    from gallery.faces.pipeline import FacePipeline

    spec = model_for_gallery(gallery.model_stamp)
    pipeline = FacePipeline(spec, device if device != "auto" else options.device, options.weights,
                            options.min_face_size, options.det_threshold, options.max_side,
                            options.detect_batch_size, options.embed_batch_size)
    order = list(photos)
    for start in range(0, len(order), options.detect_batch_size):
        part = order[start:start + options.detect_batch_size]
        for image_id, result in zip(part, pipeline.embed_photos([photos[i] for i in part])):
            group = by_image[image_id]
            stored = np.asarray([f.box for f in group], np.float32)
            pairs = match_boxes(stored, result.boxes) if result.ok else {}
            for i, face in enumerate(group):
                j = pairs.get(i)
                if j is None:
                    recovered.reasons[face.face_id] = (f"no face found again in {photos[image_id].path} where "
                                                       f"its stored box {[round(v, 1) for v in face.box]} is")
                    continue
                recovered.add(face.face_id, result.embeddings[j], "photo", result.landmarks[j])
