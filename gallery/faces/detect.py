"""Face detection: MTCNN over batches of decoded photos, results in original-photo pixels.

Two detectors, one interface (`FaceDetector(kind=...)`):

- `mtcnn-batched` (the default): gallery.faces.mtcnn_batched, the same P/R/O-Net weights and
  arithmetic as facenet-pytorch's MTCNN but the whole batch in a few network calls (no loop over
  boxes); photos of any sizes share a batch, each with its own pyramid.
- `facenet-mtcnn`: facenet-pytorch's own `MTCNN.detect`, kept for comparison (and as the earlier
  behaviour): it only batches images of equal size, so photos are zero-padded at the bottom/right to
  the next multiple of `BUCKET_STEP` pixels and photos of similar size share a batch.

Either way boxes and landmarks are mapped back to the original photo by the decode scale, and faces
under the product's score threshold or minimum size (in original pixels) are dropped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gallery.errors import GalleryError
from gallery.settings import settings, source_of

BUCKET_STEP = 32
DETECTORS = ("mtcnn-batched", "facenet-mtcnn")
DEFAULT_DETECTOR = "mtcnn-batched"
# lets a benchmark or a user pick the detector of every pipeline (gallery.settings; formerly GALLERY_DETECTOR)
DETECTOR_ENV = "FACE_GALLERY_DETECTOR"


def detector_kind(kind: str | None = None) -> str:
    """The detector to use: `kind`, else $FACE_GALLERY_DETECTOR, else the default; unknown names are a
    GalleryError (shown as a message by the CLI)."""
    name = kind or settings().detector or DEFAULT_DETECTOR
    if name not in DETECTORS:
        variable = source_of("detector")
        source = f"${variable}" if not kind else "detector"
        raise GalleryError(f"Unknown face detector '{name}' (from {source}): use one of {', '.join(DETECTORS)}"
                           f"{'' if kind else f', or unset {variable}'}.")
    return name


@dataclass
class Detections:
    """Faces of one photo in original-photo pixels."""

    boxes: np.ndarray  # (n, 4) float32 x1 y1 x2 y2, clipped to the photo
    scores: np.ndarray  # (n,) float32
    landmarks: np.ndarray  # (n, 5, 2) float32: left eye, right eye, nose, mouth left, mouth right

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


def bucket_shape(height: int, width: int, step: int = BUCKET_STEP) -> tuple[int, int]:
    return (math.ceil(height / step) * step, math.ceil(width / step) * step)


def main_face_index(boxes: np.ndarray, width: float, height: float) -> int:
    """The photo's main face: largest box area, discounted by distance from the photo centre.

    score = area × (1 − d), with d the distance from the box centre to the photo centre divided by
    half the photo diagonal (0 at the centre, 1 in a corner). A big face slightly off-centre beats a
    small central one; of two similar faces, the central one wins.
    """
    if len(boxes) == 0:
        raise ValueError("no faces")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 - width / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2
    d = np.sqrt(cx**2 + cy**2) / max(1e-6, math.hypot(width, height) / 2)
    return int(np.argmax(area * (1 - np.clip(d, 0, 1))))


class FaceDetector:
    """MTCNN over batches of decoded photos; one instance per process (it holds the networks)."""

    def __init__(
        self,
        device: str = "cpu",
        min_face_size: int = 20,
        threshold: float = 0.9,
        stage_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        max_batch: int = 32,
        kind: str | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.min_face_size = int(min_face_size)
        self.threshold = float(threshold)
        self.max_batch = max_batch
        self.kind = detector_kind(kind)
        if self.kind == "mtcnn-batched":
            from gallery.faces.mtcnn_batched import BatchedMTCNN

            self.batched = BatchedMTCNN(self.device, stage_thresholds)
        else:
            from facenet_pytorch import MTCNN

            self.mtcnn = MTCNN(
                keep_all=True,
                min_face_size=max(12, self.min_face_size),
                thresholds=list(stage_thresholds),
                post_process=False,
                device=self.device,
            )

    def detect(self, images: Sequence[np.ndarray], scales: Sequence[float] | None = None) -> list[Detections]:
        """images: (h, w, 3) uint8 arrays; scales: decode scale of each (pixels = original × scale)."""
        scales = list(scales) if scales is not None else [1.0] * len(images)
        if self.kind == "mtcnn-batched":
            return self._detect_batched(images, scales)
        results: list[Detections | None] = [None] * len(images)
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            buckets[bucket_shape(img.shape[0], img.shape[1])].append(i)
        for (bh, bw), members in buckets.items():
            for start in range(0, len(members), self.max_batch):
                chunk = members[start : start + self.max_batch]
                batch = np.zeros((len(chunk), bh, bw, 3), dtype=np.uint8)
                for j, i in enumerate(chunk):
                    h, w = images[i].shape[:2]
                    batch[j, :h, :w] = images[i]
                for i, det in zip(chunk, self._detect_batch(batch, [scales[i] for i in chunk])):
                    h, w = images[i].shape[:2]
                    results[i] = self._to_original(det, scales[i], w, h)
        return [r if r is not None else Detections.empty() for r in results]

    def _detect_batched(self, images: Sequence[np.ndarray], scales: list[float]) -> list[Detections]:
        """Any sizes in one batch; each photo's pyramid starts at min_face_size in its own pixels."""
        out: list[Detections] = []
        for start in range(0, len(images), self.max_batch):
            part = range(start, min(len(images), start + self.max_batch))
            found = self.batched.detect([images[i] for i in part],
                                        [max(12, int(self.min_face_size * scales[i])) for i in part])
            out.extend(self._to_original((f.boxes, f.probs, f.points), scales[i], images[i].shape[1],
                                         images[i].shape[0]) for i, f in zip(part, found))
        return out

    def _detect_batch(self, batch: np.ndarray, scales: list[float]) -> list[tuple]:
        # MTCNN's pyramid starts at min_face_size in *detection* pixels: shrink it for downsized photos.
        self.mtcnn.min_face_size = max(12, int(self.min_face_size * min(scales)))
        boxes, probs, points = self.mtcnn.detect(torch.from_numpy(batch).to(self.device), landmarks=True)
        return list(zip(boxes, probs, points))

    def _to_original(self, det: tuple, scale: float, width: int, height: int) -> Detections:
        boxes, probs, points = det
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        boxes = np.array(boxes, dtype=np.float32)
        probs = np.asarray(probs, dtype=np.float32)
        points = np.array(points, dtype=np.float32)
        # Clip to the photo's own area first (not the padded bucket), then back to original pixels.
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        boxes /= scale
        points /= scale
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = (probs >= self.threshold) & (side >= self.min_face_size)
        return Detections(boxes[keep], probs[keep], points[keep])
