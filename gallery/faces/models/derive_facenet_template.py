"""Derive the MTCNN-landmark template for facenet-pytorch's InceptionResnetV1 chips from LFW.

facenet-pytorch's models were trained (by David Sandberg's facenet) on MTCNN crops: the detection
box plus a 44 px margin at 182 px, centre-cropped to 160 px, i.e. the box spans 138/160 of the
chip with 11 px on each side. This script measures where MTCNN's 5 landmarks fall, on average,
inside that chip over LFW photos, which gives a similarity-transform template with the same
geometry the model saw in training.

    python -m gallery.faces.models.derive_facenet_template ../shared/data/lfw-aj/images --limit 2000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image

CHIP = 160.0
BOX_SPAN = 138.0
BOX_OFFSET = (CHIP - BOX_SPAN) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("images", type=Path)
    parser.add_argument("--limit", type=int, default=2000)
    args = parser.parse_args()
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
            x1, y1, x2, y2 = b[i]
            u = (lm[i][:, 0] - x1) / (x2 - x1)
            v = (lm[i][:, 1] - y1) / (y2 - y1)
            points.append(np.stack([BOX_OFFSET + u * BOX_SPAN, BOX_OFFSET + v * BOX_SPAN], axis=1))
    pts = np.stack(points)
    template = np.round(pts.mean(axis=0), 2).tolist()
    print(json.dumps({"faces": len(pts), "template": template, "std": np.round(pts.std(axis=0), 2).tolist()}))


if __name__ == "__main__":
    main()
