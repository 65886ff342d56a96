"""Measure how a face region drawn by another tool overlaps the product's detection of the same face, to
choose the IoU threshold that matches XMP face regions to detected faces (gallery.faces.xmp).

Another tool's face boxes stand in for XMP regions: dlib's HOG frontal face detector (what digiKam's
older face engine and many scripts use), whose box convention differs from MTCNN's. For each seeded
LFW photo the product's detector (FacePipeline.detect) finds the faces; each dlib box is paired with
the MTCNN face it overlaps most. Reported: the IoU of true pairs (dlib's box and MTCNN's box of the
same face: the centre of one inside the other) and of every other pair in the same photo (a region
against the wrong face), as percentiles. It also measures where MTCNN's five landmarks fall inside its
box on average: the landmarks a region with no detected face is aligned with.

    python benchmarks/xmp_region_match.py ../shared/data/lfw-aj/images --limit 1000
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", type=Path)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import dlib

    from gallery.faces.decode import decode_photo
    from gallery.faces.models import model_for_gallery
    from gallery.faces.pipeline import FacePipeline
    from gallery.faces.xmp import iou

    paths = sorted(args.images.rglob("*.jpg"))
    random.Random(args.seed).shuffle(paths)
    paths = paths[: args.limit]
    pipeline = FacePipeline(model_for_gallery(None), "cpu")
    hog = dlib.get_frontal_face_detector()
    true_iou: list[float] = []
    wrong_iou: list[float] = []
    rel_landmarks: list[np.ndarray] = []
    for start in range(0, len(paths), 32):
        photos = [decode_photo(str(p), 0, 0) for p in paths[start : start + 32]]
        for photo, det in zip(photos, pipeline.detect(photos)):
            if det is None or len(det) == 0:
                continue
            for box, lm in zip(det.boxes, det.landmarks):
                w, h = box[2] - box[0], box[3] - box[1]
                rel_landmarks.append(np.stack([(lm[:, 0] - box[0]) / w, (lm[:, 1] - box[1]) / h], axis=1))
            for rect in hog(photo.pixels, 1):
                region = tuple(v / photo.scale for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
                cx, cy = (region[0] + region[2]) / 2, (region[1] + region[3]) / 2
                for box in det.boxes:
                    same = box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
                    (true_iou if same else wrong_iou).append(iou(region, tuple(float(v) for v in box)))
    pct = [1, 5, 10, 50, 90, 95, 99]
    report = {
        "photos": len(paths),
        "true_pairs": len(true_iou),
        "true_iou_percentiles": dict(zip(pct, np.percentile(true_iou, pct).round(3).tolist())) if true_iou else {},
        "wrong_pairs": len(wrong_iou),
        "wrong_iou_max": round(max(wrong_iou), 3) if wrong_iou else None,
        "wrong_iou_percentiles": dict(zip(pct, np.percentile(wrong_iou, pct).round(3).tolist())) if wrong_iou else {},
        "mean_landmarks_in_box": np.mean(rel_landmarks, axis=0).round(4).tolist(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
