"""Derive the MTCNN-landmark template for dlib's ResNet face descriptor chips from LFW.

dlib's face descriptor was trained on 150 px chips cut by `get_face_chip(img, shape, 150, 0.25)`
from its 5-point shape predictor (eye corners and the base of the nose) on dlib's own detections.
Our pipeline detects with MTCNN, whose 5 points are different (eye centres, nose tip, mouth
corners). So for each sampled photo this script

1. finds the subject with MTCNN (largest face) and the dlib frontal-detector box that overlaps it
   most (photos where dlib finds no matching face are skipped and counted);
2. runs shape_predictor_5 on that box and asks dlib for the chip: `get_face_chip_details(shape,
   150, 0.25)` (a rotated rectangle in the photo);
3. maps MTCNN's 5 landmarks into that chip's pixel coordinates with the same image→chip affine
   transform dlib uses (`get_mapping_to_chip`: chip corners (0,0), (cols-1,0), (0,rows-1) go to the
   rectangle's corners rotated by the chip angle about its centre);

and averages the chip positions. A similarity transform from a face's MTCNN landmarks to this
mean then reproduces, on average, dlib's own chip geometry. `--check N` also warps N faces with
`gallery.faces.align.warp_chips` using dlib's transform and compares them with `dlib.get_face_chip`, to
confirm the mapping (mean absolute pixel difference, 0..255).

    python benchmarks/derive_dlib_template.py ../shared/data/lfw-aj/images --limit 2000
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image

CHIP = 150
PADDING = 0.25


def image_to_chip_matrix(details) -> np.ndarray:
    """2x3 affine matrix taking photo pixels to chip pixels for a dlib `chip_details`."""
    rect, angle = details.rect, details.angle
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    cos, sin = math.cos(angle), math.sin(angle)

    def rotate(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - cx, y - cy
        return cx + cos * dx - sin * dy, cy + sin * dx + cos * dy

    chip_pts = np.array([[0, 0], [details.cols - 1, 0], [0, details.rows - 1]], dtype=np.float64)
    img_pts = np.array(
        [
            rotate(rect.left(), rect.top()),
            rotate(rect.right(), rect.top()),
            rotate(rect.left(), rect.bottom()),
        ]
    )
    # Solve chip = A @ [img, 1] exactly from the three corner correspondences.
    src = np.hstack([img_pts, np.ones((3, 1))])
    return np.linalg.solve(src, chip_pts).T


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def main() -> None:
    import dlib

    from gallery.faces.models.dlib_resnet import SHAPE_PREDICTOR_5, packaged_weights

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("images", type=Path)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--check", type=int, default=20, help="faces to re-warp and compare with dlib")
    args = parser.parse_args()
    torch.manual_seed(0)
    files = sorted(args.images.rglob("*.jpg"))
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.choice(len(files), min(args.limit, len(files)), replace=False))]
    mtcnn = MTCNN(keep_all=True, device="cpu")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(packaged_weights(SHAPE_PREDICTOR_5)))
    points, check_errors = [], []
    no_mtcnn = no_dlib = 0
    for start in range(0, len(files), 64):
        images = [np.asarray(Image.open(f).convert("RGB")) for f in files[start : start + 64]]
        boxes, _, landmarks = mtcnn.detect(np.stack(images), landmarks=True)
        for img, b, lm in zip(images, boxes, landmarks):
            if b is None:
                no_mtcnn += 1
                continue
            i = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))  # the LFW subject: largest face
            rects = detector(img, 1)
            overlaps = [iou(b[i], np.array([r.left(), r.top(), r.right(), r.bottom()])) for r in rects]
            if not overlaps or max(overlaps) < 0.3:
                no_dlib += 1
                continue
            shape = predictor(img, rects[int(np.argmax(overlaps))])
            details = dlib.get_face_chip_details(shape, CHIP, PADDING)
            m = image_to_chip_matrix(details)
            points.append(lm[i] @ m[:, :2].T + m[:, 2])
            if len(check_errors) < args.check:
                from gallery.faces.align import warp_chips

                ours = warp_chips(torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous(), m[None], CHIP)
                theirs = dlib.get_face_chip(img, shape, CHIP, PADDING)
                diff = ours[0].permute(1, 2, 0).numpy().astype(np.float32) - theirs.astype(np.float32)
                check_errors.append(float(np.abs(diff).mean()))
    pts = np.stack(points)
    result = {
        "photos": len(files),
        "faces": len(pts),
        "skipped_no_mtcnn_face": no_mtcnn,
        "skipped_no_matching_dlib_face": no_dlib,
        "template": np.round(pts.mean(axis=0), 2).tolist(),
        "std": np.round(pts.std(axis=0), 2).tolist(),
    }
    if check_errors:
        result["check_mean_abs_pixel_diff_vs_dlib_get_face_chip"] = round(float(np.mean(check_errors)), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
