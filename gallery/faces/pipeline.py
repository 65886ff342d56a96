"""Photos → embedded faces: detect (MTCNN) → align (5-point similarity) → embed, for one model.

This is the only composition of the face stages: ingestion, search, verification, calibration and
every benchmark embed through it, so gallery and query vectors are computed by the same code.
Photos are processed in batches (detection batches by size bucket, one embedding pass for all faces
of a batch, halved and retried on a CUDA out-of-memory error).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gallery.device import resolve_device
from gallery.faces.align import align_faces
from gallery.faces.decode import MAX_FILE_BYTES, DecodedPhoto, decode_photo
from gallery.faces.detect import Detections, FaceDetector, main_face_index
from gallery.faces.models import ModelSpec
from gallery.faces.quality import FaceQuality, chip_masks, measure_faces, sharpness

# Where MTCNN's five landmarks (eyes, nose, mouth corners) fall inside its box, as fractions of the box's
# width and height: the mean over the faces of 300 seeded LFW A-J photos (benchmarks/xmp_region_match.py).
LANDMARKS_IN_BOX = np.array([[0.2819, 0.3854], [0.7323, 0.3779], [0.5042, 0.5806], [0.3201, 0.7610], [0.7116, 0.7556]],
                            np.float32)


@dataclass
class EmbeddedFace:
    """One face of a photo: where it is, how sure the detector was, and its unit embedding."""

    index: int  # position among the photo's detections
    box: list[float]  # x1 y1 x2 y2 in original photo pixels
    det_score: float
    landmarks: list[list[float]]
    embedding: np.ndarray  # (D,) float32, L2-normalised
    is_main: bool


@dataclass
class PhotoFaces:
    """The faces of one photo (arrays in detection order), or why there are none."""

    path: str
    width: int = 0
    height: int = 0
    error: str | None = None  # a decode reason (unreadable, not_an_image, ...) or "no_face"
    detail: str | None = None
    main: int = -1  # index of the main face among the detections
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # detections embedded
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    sharpness: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))  # of each aligned chip

    @property
    def ok(self) -> bool:
        return self.error is None

    def quality(self, spec: ModelSpec) -> list[FaceQuality]:
        """The quality measures and gate verdict of each embedded face (gallery.faces.quality)."""
        return measure_faces(self.boxes, self.scores, self.landmarks, self.width, self.height, spec.template_array(),
                             spec.input_size, self.sharpness if len(self.sharpness) == len(self.scores) else None)

    @property
    def faces(self) -> list[EmbeddedFace]:
        """The embedded faces, rounded for display and JSON (the arrays keep full precision)."""
        return [
            EmbeddedFace(
                index=int(i),
                box=[round(float(v), 1) for v in self.boxes[j]],
                det_score=round(float(self.scores[j]), 4),
                landmarks=[[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks[j]],
                embedding=self.embeddings[j],
                is_main=int(i) == self.main,
            )
            for j, i in enumerate(self.indices)
        ]


class FacePipeline:
    """Detector + aligner + embedder for one model, loaded once and reused for many photos."""

    def __init__(
        self,
        spec: ModelSpec,
        device: str = "auto",
        weights: Path | None = None,
        min_face_size: int = 20,
        det_threshold: float = 0.9,
        max_side: int = 2048,
        detect_batch_size: int = 32,
        embed_batch_size: int = 64,
        max_file_bytes: int = MAX_FILE_BYTES,
        detector: str | None = None,
    ) -> None:
        self.spec = spec
        self.device = resolve_device(device)
        self.max_side = max_side
        self.max_file_bytes = max_file_bytes
        self.embed_batch_size = embed_batch_size
        self.seconds: Counter[str] = Counter()  # time per stage: load_models, detect, align_embed
        t0 = time.perf_counter()
        self.embedder = spec.load(self.device, weights)
        self.spec = self.embedder.spec  # bound to its weights file: the stamp of a new gallery
        # detector None: $FACE_GALLERY_DETECTOR or the batched MTCNN (gallery.faces.detect.detector_kind)
        self.detector = FaceDetector(device=self.device.name, min_face_size=min_face_size,
                                     threshold=det_threshold, max_batch=detect_batch_size, kind=detector)
        self.seconds["load_models"] += time.perf_counter() - t0
        self._template = spec.template_array()

    def decode(self, path: Path | str) -> DecodedPhoto:
        path = Path(path)
        try:
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = 0, 0
        return decode_photo(str(path), size, mtime, self.max_side, self.max_file_bytes)

    def faces_of(self, path: Path | str, largest_only: bool = False) -> PhotoFaces:
        """Every face of a photo (or only its main face), embedded with this pipeline's model."""
        return self.embed_photos([self.decode(path)], largest_only)[0]

    def embed_photos(self, photos: Sequence[DecodedPhoto], largest_only: bool = False) -> list[PhotoFaces]:
        """Detect, align and embed the faces of decoded photos, batched. A photo that failed to decode
        or has no face comes back with `.error` set."""
        return self.embed_detected(photos, self.detect(photos), largest_only)

    def detect(self, photos: Sequence[DecodedPhoto]) -> list[Detections | None]:
        """The detections of each decoded photo (None for a photo that failed to decode)."""
        usable = [i for i, p in enumerate(photos) if p.ok]
        t0 = time.perf_counter()
        found = self.detector.detect([photos[i].pixels for i in usable], [photos[i].scale for i in usable])
        self.seconds["detect"] += time.perf_counter() - t0
        out: list[Detections | None] = [None] * len(photos)
        for i, det in zip(usable, found):
            out[i] = det
        return out

    def embed_detected(
        self, photos: Sequence[DecodedPhoto], detections: Sequence[Detections | None], largest_only: bool = False
    ) -> list[PhotoFaces]:
        """Align and embed detected faces (all, or each photo's main face), one embedding pass."""
        results = [PhotoFaces(p.path, p.width, p.height, p.reason, p.detail) for p in photos]
        t0 = time.perf_counter()
        chips: list[torch.Tensor] = []
        masks: list[np.ndarray] = []
        counts: list[int] = []
        for photo, det, result in zip(photos, detections, results):
            if det is None:
                counts.append(0)
                continue
            if len(det) == 0:
                result.error, result.detail = "no_face", "no face found by the detector"
                counts.append(0)
                continue
            result.main = main_face_index(det.boxes, photo.width, photo.height)
            keep = np.array([result.main] if largest_only else range(len(det)), dtype=np.int64)
            result.indices = keep
            result.boxes, result.scores, result.landmarks = det.boxes[keep], det.scores[keep], det.landmarks[keep]
            pixels = torch.from_numpy(photo.pixels).permute(2, 0, 1)
            chips.append(align_faces(pixels, result.landmarks * photo.scale, self._template, self.spec.input_size))
            masks.append(chip_masks(result.landmarks * photo.scale, self._template, self.spec.input_size,
                                    photo.pixels.shape[1], photo.pixels.shape[0]))
            counts.append(len(keep))
        size = self.spec.input_size
        all_chips = torch.cat(chips) if chips else torch.empty((0, 3, size, size), dtype=torch.uint8)
        embeddings = self.embed_chips(all_chips)
        sharp = sharpness(all_chips, np.concatenate(masks) if masks else None)
        offset = 0
        for result, n in zip(results, counts):
            result.embeddings = embeddings[offset : offset + n]
            result.sharpness = sharp[offset : offset + n]
            offset += n
        self.seconds["align_embed"] += time.perf_counter() - t0
        return results

    def embed_boxes(self, photo: DecodedPhoto, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(landmarks, embeddings, sharpness) of faces given only as boxes (original photo pixels), such
        as a named XMP region where the detector found no face: the five landmarks are put where the
        detector's fall inside its box on average (LANDMARKS_IN_BOX), then aligned and embedded as any
        detected face."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        size = self.spec.input_size
        if len(boxes) == 0:
            return np.zeros((0, 5, 2), np.float32), np.zeros((0, self.spec.dim), np.float32), np.zeros(0)
        t0 = time.perf_counter()
        wh = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
        landmarks = (boxes[:, None, :2] + LANDMARKS_IN_BOX[None] * wh).astype(np.float32)
        pixels = torch.from_numpy(photo.pixels).permute(2, 0, 1)
        chips = align_faces(pixels, landmarks * photo.scale, self._template, size)
        masks = chip_masks(landmarks * photo.scale, self._template, size, photo.pixels.shape[1], photo.pixels.shape[0])
        embeddings = self.embed_chips(chips)
        sharp = sharpness(chips, masks)
        self.seconds["align_embed"] += time.perf_counter() - t0
        return landmarks, embeddings, sharp

    def embed_chips(self, chips: torch.Tensor) -> np.ndarray:
        """Embed aligned chips in batches; on a CUDA out-of-memory error halve the batch and go on.
        With the model's flip setting (part of the gallery's stamp), each chip's embedding is the
        renormalised mean of the chip's and its mirror image's."""
        if not self.spec.flip or len(chips) == 0:
            return self._embed_batches(chips)
        both = self._embed_batches(chips) + self._embed_batches(chips.flip(-1))
        return (both / np.maximum(np.linalg.norm(both, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def _embed_batches(self, chips: torch.Tensor) -> np.ndarray:
        out: list[np.ndarray] = []
        size = self.embed_batch_size
        start = 0
        while start < len(chips):
            part = chips[start : start + size]
            if self.device.is_cuda:
                part = part.pin_memory()
            try:
                out.append(self.embedder.embed(part).numpy())
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                size = max(1, size // 2)
                torch.cuda.empty_cache()
                continue
            start += len(part)
        return np.concatenate(out) if out else np.zeros((0, self.spec.dim), np.float32)
