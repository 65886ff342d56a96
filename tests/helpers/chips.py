"""Aligned face chips for the equivalence tests: LFW photos through the product's own detector and
alignment to a model's template (seeded random photos when the LFW folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

LFW = Path(__file__).resolve().parents[3] / "shared" / "data" / "lfw-aj"


def lfw_photos(n: int, seed: int = 0) -> list[Path]:
    files = sorted((LFW / "images").rglob("*.jpg")) if (LFW / "images").is_dir() else []
    if not files:
        return []
    rng = np.random.default_rng(seed)
    return [files[i] for i in sorted(rng.choice(len(files), min(n, len(files)), replace=False))]


def aligned_chips(template: np.ndarray, size: int, n: int = 6) -> tuple[torch.Tensor, str]:
    """(chips (n, 3, size, size) uint8 RGB, where they came from)."""
    photos = lfw_photos(2 * n)
    if photos:
        from gallery.faces.align import align_faces
        from gallery.faces.decode import decode_photo
        from gallery.faces.detect import FaceDetector, main_face_index

        decoded = [decode_photo(str(p), p.stat().st_size, 0) for p in photos]
        decoded = [d for d in decoded if d.ok]
        detector = FaceDetector(device="cpu")
        chips = []
        for photo, det in zip(decoded, detector.detect([d.pixels for d in decoded], [d.scale for d in decoded])):
            if len(det) == 0:
                continue
            i = main_face_index(det.boxes, photo.width, photo.height)
            pixels = torch.from_numpy(photo.pixels).permute(2, 0, 1)
            chips.append(align_faces(pixels, det.landmarks[i : i + 1] * photo.scale, template, size))
            if len(chips) == n:
                return torch.cat(chips), f"{n} LFW faces aligned by the product"
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand((n, 3, 8, 8), generator=generator) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return smooth.round().clamp(0, 255).to(torch.uint8), f"{n} smooth random images (LFW absent)"
