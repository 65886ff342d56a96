"""Face alignment: a similarity transform from 5 landmarks to a model's template, then a batched warp.

The transform is the least-squares similarity (rotation, uniform scale, translation) of Umeyama
(1991); the warp is one `grid_sample` call for all faces of an image, on the same device as the
model, so alignment costs little next to the embedding itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gallery.faces.geometry import invert_affine, similarity_transform

__all__ = ["align_faces", "invert_affine", "similarity_transform", "warp_chips"]


def warp_chips(image: torch.Tensor, matrices: np.ndarray, size: int) -> torch.Tensor:
    """Cut aligned square chips out of one image.

    image: (3, H, W) uint8 (any device). matrices: (n, 2, 3) image→chip transforms.
    Returns (n, 3, size, size) uint8 on the image's device, bilinear, zero outside the image.
    """
    n = len(matrices)
    _, height, width = image.shape
    if n == 0:
        return torch.empty((0, 3, size, size), dtype=torch.uint8, device=image.device)
    inverse = np.stack([invert_affine(m) for m in matrices])  # chip pixel -> image pixel
    # grid_sample works in normalised [-1, 1] coordinates with align_corners=False: pixel centres at
    # (2i + 1) / size - 1. Compose chip-normalised -> chip-pixel -> image-pixel -> image-normalised.
    to_chip_px = np.array([[size / 2, 0, size / 2 - 0.5], [0, size / 2, size / 2 - 0.5], [0, 0, 1]])
    to_img_norm = np.array([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]])
    theta = np.stack(
        [(to_img_norm @ np.vstack([inv, [0, 0, 1]]) @ to_chip_px)[:2] for inv in inverse]
    ).astype(np.float32)
    theta_t = torch.from_numpy(theta).to(image.device)
    grid = F.affine_grid(theta_t, [n, 3, size, size], align_corners=False)
    src = image.unsqueeze(0).float().expand(n, -1, -1, -1)
    chips = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return chips.round_().clamp_(0, 255).to(torch.uint8)


def align_faces(
    image: torch.Tensor, landmarks: np.ndarray, template: np.ndarray, size: int
) -> torch.Tensor:
    """Aligned chips for all faces of one image. landmarks: (n, 5, 2) in image pixels."""
    matrices = np.stack([similarity_transform(lm, template) for lm in landmarks]) if len(landmarks) else []
    return warp_chips(image, np.asarray(matrices), size)
