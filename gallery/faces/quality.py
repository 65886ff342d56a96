"""Face quality: five measures per face and the one gate that decides whether a face is usable.

Measures (all from what detection and alignment already produce):
- `size`: the shorter side of the detection box, in original photo pixels;
- `det_score`: MTCNN's confidence;
- `inside`: the share of the aligned face chip (the model's input square, mapped back into the photo)
  that lies inside the photo. The detector clips its boxes to the photo, so a cut-off face shows in
  the chip, which is zero-padded where it leaves the photo; this is computable from the stored
  landmarks, so galleries from before quality existed get it too;
- `sharpness`: the variance of the Laplacian of the aligned chip in grey levels, over the part of the
  chip inside the photo (a blurred or upscaled face has little high-frequency energy); needs the photo;
- `pose`: how far the nose sits off the axis from the eyes' midpoint to the mouth's midpoint, over the
  eye distance (0 frontal; about 0.5 and beyond for a profile).

A face below the gate (`QUALITY_GATE`, measured on LFW A–J by benchmarks/quality_gate.py; see its
docstring and docs/quality.md) is stored and shown with its reason, but never enrols into its identity's
template, is left out of calibration and clustering, and as a query is answered "too poor to
identify" instead of a guess.

Importing this module imports no torch; `sharpness` takes torch tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gallery.faces.geometry import similarity_transform

if TYPE_CHECKING:
    import torch

GRID = 24  # sample points per chip side for the inside share (resolution 1/576)


@dataclass(frozen=True)
class QualityGate:
    """A face passes when every measure it has is on the good side of its bound (None: not measured,
    which never fails a face)."""

    min_size: float
    min_det_score: float
    min_inside: float
    min_sharpness: float
    max_pose: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# Measured on LFW A–J with dlib-resnet (benchmarks/quality_gate.py and docs/quality.md), for the
# two harms of a poor face: it is named less often (made-worse photos: chips under 90% inside the photo were
# named 4-55% of the time against 68%, detection scores under 0.99 7-20%, pose over 0.6 19% against 65%), and
# it joins different people into one group (the LFW background faces that made mixed clusters: cut off,
# unsure, blurred under 6). Faces under 20 px are not detected by default. The gate flags 34 of the 7,311
# intact labeled LFW A–J faces (0.5%).
QUALITY_GATE = QualityGate(min_size=20.0, min_det_score=0.99, min_inside=0.9, min_sharpness=6.0, max_pose=0.6)


@dataclass(frozen=True)
class FaceQuality:
    size: float
    det_score: float
    inside: float
    sharpness: float | None
    pose: float
    issue: str | None  # the gate's reason, None when the face passes

    def columns(self) -> dict[str, Any]:
        """The store's columns for this face (faces.q_*, faces.quality_issue)."""
        return {"q_size": self.size, "q_inside": self.inside, "q_sharpness": self.sharpness, "q_pose": self.pose,
                "quality_issue": self.issue}

    def as_dict(self) -> dict[str, Any]:
        return {"size": round(self.size, 1), "det_score": round(self.det_score, 4), "inside": round(self.inside, 3),
                "sharpness": None if self.sharpness is None else round(self.sharpness, 1),
                "pose": round(self.pose, 3), "ok": self.issue is None, "issue": self.issue}


def face_sizes(boxes: np.ndarray) -> np.ndarray:
    """(n,) shorter box side of (n, 4) x1 y1 x2 y2 boxes."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def pose_offsets(landmarks: np.ndarray) -> np.ndarray:
    """(n,) |nose offset from the eye-mid to mouth-mid axis| / eye distance, for (n, 5, 2) landmarks
    (left eye, right eye, nose, mouth left, mouth right)."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    eyes = (lm[:, 0] + lm[:, 1]) / 2
    mouth = (lm[:, 3] + lm[:, 4]) / 2
    axis = mouth - eyes
    length = np.maximum(np.linalg.norm(axis, axis=1), 1e-6)
    rel = lm[:, 2] - eyes
    offset = np.abs(axis[:, 0] * rel[:, 1] - axis[:, 1] * rel[:, 0]) / length  # distance from the axis line
    eye_distance = np.maximum(np.linalg.norm(lm[:, 1] - lm[:, 0], axis=1), 1e-6)
    return offset / eye_distance


def inside_shares(landmarks: np.ndarray, template: np.ndarray, chip_size: int, width: float, height: float
                  ) -> np.ndarray:
    """(n,) share of each face's aligned chip that lies inside a width x height photo."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    out = np.ones(len(lm))
    if chip_size <= 0 or width <= 0 or height <= 0:
        return out
    step = chip_size / GRID
    g = (np.arange(GRID) + 0.5) * step
    grid = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)  # chip pixel coordinates
    homogeneous = np.hstack([grid, np.ones((grid.shape[0], 1))])
    for i, points in enumerate(lm):
        m = similarity_transform(points, template)  # photo -> chip
        inverse = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]  # chip -> photo
        photo = homogeneous @ inverse.T
        inside = (photo[:, 0] >= 0) & (photo[:, 0] <= width) & (photo[:, 1] >= 0) & (photo[:, 1] <= height)
        out[i] = float(inside.mean())
    return out


def chip_masks(landmarks: np.ndarray, template: np.ndarray, chip_size: int, width: float, height: float
               ) -> np.ndarray:
    """(n, S, S) bool: which pixels of each aligned chip come from inside a width x height photo (the
    rest is the warp's zero padding)."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    g = np.arange(chip_size) + 0.5
    grid = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    homogeneous = np.hstack([grid, np.ones((grid.shape[0], 1))])
    out = np.ones((len(lm), chip_size, chip_size), bool)
    for i, points in enumerate(lm):
        inverse = np.linalg.inv(np.vstack([similarity_transform(points, template), [0, 0, 1]]))[:2]
        photo = homogeneous @ inverse.T
        inside = (photo[:, 0] >= 0) & (photo[:, 0] <= width) & (photo[:, 1] >= 0) & (photo[:, 1] <= height)
        out[i] = inside.reshape(chip_size, chip_size)
    return out


def sharpness(chips: torch.Tensor, masks: np.ndarray | None = None) -> np.ndarray:
    """(n,) variance of the 4-neighbour Laplacian of (n, 3, S, S) uint8 chips in grey levels (0-255), over
    the pixels whose whole neighbourhood lies inside the photo (`masks`, from chip_masks): the edge of a
    cut-off face's zero padding is not detail of the face. 0 when too little of the chip is inside."""
    import torch
    import torch.nn.functional as F

    if chips.shape[0] == 0:
        return np.zeros(0, np.float64)
    grey = chips.float().mul(torch.tensor([0.299, 0.587, 0.114], device=chips.device).view(1, 3, 1, 1)).sum(1, True)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=chips.device).view(1, 1, 3, 3)
    lap = F.conv2d(grey, kernel).squeeze(1).double().cpu().numpy()  # valid region: (n, S-2, S-2)
    if masks is None:
        return lap.reshape(len(lap), -1).var(axis=1)
    m = np.asarray(masks, bool)
    # a Laplacian value counts when its pixel and 4 neighbours are inside (the conv's valid region aligned)
    valid = m[:, 1:-1, 1:-1] & m[:, :-2, 1:-1] & m[:, 2:, 1:-1] & m[:, 1:-1, :-2] & m[:, 1:-1, 2:]
    out = np.zeros(len(lap))
    for i in range(len(lap)):
        values = lap[i][valid[i]]
        out[i] = float(values.var()) if values.size >= 0.1 * valid[i].size else 0.0
    return out


def gate_issue(size: float | None, det_score: float | None, inside: float | None, sharp: float | None,
               pose: float | None, gate: QualityGate = QUALITY_GATE) -> str | None:
    """Why a face is below the gate (all reasons, most decisive first), or None when it passes."""
    reasons = []
    if inside is not None and inside < gate.min_inside:
        reasons.append(f"cut off: {inside:.0%} of the face inside the photo (< {gate.min_inside:.0%})")
    if size is not None and size < gate.min_size:
        reasons.append(f"too small: {size:.0f} px (< {gate.min_size:.0f})")
    if sharp is not None and sharp < gate.min_sharpness:
        reasons.append(f"blurred: sharpness {sharp:.0f} (< {gate.min_sharpness:.0f})")
    if pose is not None and pose > gate.max_pose:
        reasons.append(f"turned away: pose {pose:.2f} (> {gate.max_pose:.2f})")
    if det_score is not None and det_score < gate.min_det_score:
        reasons.append(f"unsure detection: score {det_score:.3f} (< {gate.min_det_score:.2f})")
    return "; ".join(reasons) or None


def measure_faces(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, width: float, height: float,
                  template: np.ndarray, chip_size: int, sharp: np.ndarray | None,
                  gate: QualityGate = QUALITY_GATE) -> list[FaceQuality]:
    """The quality of each face of one photo (`sharp` None or NaN: sharpness not measured)."""
    sizes = face_sizes(boxes)
    poses = pose_offsets(landmarks)
    inside = inside_shares(landmarks, template, chip_size, width, height)
    out = []
    for j in range(len(sizes)):
        s = None if sharp is None or not np.isfinite(sharp[j]) else float(sharp[j])
        det = float(scores[j])
        out.append(FaceQuality(float(sizes[j]), det, float(inside[j]), s, float(poses[j]),
                               gate_issue(float(sizes[j]), det, float(inside[j]), s, float(poses[j]), gate)))
    return out
