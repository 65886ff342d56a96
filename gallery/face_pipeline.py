"""Photo → faces with embeddings, for one photo at a time: the query side of the pipeline.

Ingestion batches many photos (gallery.ingest); search and verify need the same detection,
alignment and embedding for a few photos, with the gallery's own model and settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gallery.align import align_faces
from gallery.decode import DecodedPhoto, decode_photo
from gallery.detect import FaceDetector, main_face_index
from gallery.device import resolve_device
from gallery.models import ModelSpec


@dataclass
class EmbeddedFace:
    """One face of a photo: where it is, how sure the detector was, and its unit embedding."""

    index: int  # position among the photo's faces, largest-main-first order is not implied
    box: list[float]  # x1 y1 x2 y2 in original photo pixels
    det_score: float
    landmarks: list[list[float]]
    embedding: np.ndarray  # (D,) float32, L2-normalised
    is_main: bool


@dataclass
class PhotoFaces:
    path: str
    faces: list[EmbeddedFace]
    width: int = 0
    height: int = 0
    error: str | None = None  # a decode reason (unreadable, not_an_image, ...) or "no_face"
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class FacePipeline:
    """Detector + aligner + embedder for one model, loaded once and reused for many photos."""

    def __init__(
        self,
        spec: ModelSpec,
        weights: Path | None = None,
        device: str = "auto",
        min_face_size: int = 20,
        det_threshold: float = 0.9,
        max_side: int = 2048,
    ) -> None:
        self.spec = spec
        self.device = resolve_device(device)
        self.embedder = spec.load(weights, device=self.device, half=self.device == "cuda")
        self.detector = FaceDetector(device=self.device, min_face_size=min_face_size, threshold=det_threshold)
        self.max_side = max_side

    def decode(self, path: Path | str) -> DecodedPhoto:
        path = Path(path)
        try:
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = 0, 0
        return decode_photo(str(path), size, mtime, self.max_side)

    def faces_of(self, path: Path | str, largest_only: bool = False) -> PhotoFaces:
        """Every face of a photo (or only its main face), embedded with this pipeline's model."""
        photo = self.decode(path)
        if not photo.ok:
            return PhotoFaces(str(path), [], error=photo.reason, detail=photo.detail)
        return self.faces_of_decoded(photo, largest_only)

    def faces_of_decoded(self, photo: DecodedPhoto, largest_only: bool = False) -> PhotoFaces:
        assert photo.pixels is not None
        det = self.detector.detect([photo.pixels], [photo.scale])[0]
        if len(det) == 0:
            return PhotoFaces(photo.path, [], photo.width, photo.height, "no_face", "no face found by the detector")
        main = main_face_index(det.boxes, photo.width, photo.height)
        order = [main] if largest_only else list(range(len(det)))
        pixels = torch.from_numpy(photo.pixels).permute(2, 0, 1)
        chips = align_faces(
            pixels, det.landmarks[order] * photo.scale, self.spec.template_array(), self.spec.input_size
        )
        embeddings = self.embedder.embed(chips).numpy()
        faces = [
            EmbeddedFace(
                index=i,
                box=[round(float(v), 1) for v in det.boxes[i]],
                det_score=round(float(det.scores[i]), 4),
                landmarks=[[round(float(x), 1), round(float(y), 1)] for x, y in det.landmarks[i]],
                embedding=embeddings[j],
                is_main=i == main,
            )
            for j, i in enumerate(order)
        ]
        return PhotoFaces(photo.path, faces, photo.width, photo.height)
