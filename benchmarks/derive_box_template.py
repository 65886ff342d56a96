"""Derive the MTCNN-landmark template of a model family that was trained on crops of the detection box.

Such a model never saw landmark-aligned faces: it saw the box cut out in a fixed way. Where MTCNN's
5 landmarks fall, on average, inside that crop gives a similarity-transform template with the same
geometry the model saw in training. The script measures it over seeded LFW photos.

Families (the crop each was trained on):

- `facenet` (facenet-pytorch's InceptionResnetV1, David Sandberg's facenet): the MTCNN box plus a
  44 px margin at 182 px, centre-cropped to 160 px, i.e. the box spans 138/160 of the chip with 11 px
  on each side (each axis scaled on its own);
- `vggface` (VGGFace2's ResNet-50/SE-ResNet-50, and VGG-Face): the MTCNN box extended by a factor
  0.3 (1.3x its width and height about its centre), resized so that its shorter side is 256 px, and
  the centre 224x224 crop (ox-vgg/vgg_face2's README: pre-processing and the crop its models are
  evaluated on).

    python benchmarks/derive_box_template.py ../shared/data/lfw-aj/images --family vggface --limit 2000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image


def facenet_chip(lm: np.ndarray, box: np.ndarray) -> np.ndarray:
    chip, span = 160.0, 138.0
    x1, y1, x2, y2 = box
    u = (lm[:, 0] - x1) / (x2 - x1)
    v = (lm[:, 1] - y1) / (y2 - y1)
    offset = (chip - span) / 2
    return np.stack([offset + u * span, offset + v * span], axis=1)


def vggface_chip(lm: np.ndarray, box: np.ndarray) -> np.ndarray:
    extend, short_side, crop = 1.3, 256.0, 224.0
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    scale = short_side / (extend * min(x2 - x1, y2 - y1))
    return np.stack([crop / 2 + (lm[:, 0] - cx) * scale, crop / 2 + (lm[:, 1] - cy) * scale], axis=1)


FAMILIES = {"facenet": facenet_chip, "vggface": vggface_chip}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("images", type=Path)
    parser.add_argument("--family", choices=sorted(FAMILIES), required=True)
    parser.add_argument("--limit", type=int, default=2000)
    args = parser.parse_args()
    to_chip = FAMILIES[args.family]
    torch.manual_seed(0)
    files = sorted(args.images.rglob("*.jpg"))
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.choice(len(files), min(args.limit, len(files)), replace=False))]
    mtcnn = MTCNN(keep_all=True, device="cpu")
    points = []
    for start in range(0, len(files), 64):
        batch = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files[start : start + 64]])
        boxes, probs, landmarks = mtcnn.detect(batch, landmarks=True)
        for b, lm in zip(boxes, landmarks):
            if b is None:
                continue
            i = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))  # the LFW subject: largest face
            points.append(to_chip(lm[i], b[i]))
    pts = np.stack(points)
    template = np.round(pts.mean(axis=0).astype(np.float64), 2).tolist()
    print(json.dumps({"family": args.family, "faces": len(pts), "template": template,
                      "std": np.round(pts.std(axis=0).astype(np.float64), 2).tolist()}))


if __name__ == "__main__":
    main()
