"""The batched MTCNN against facenet-pytorch's `MTCNN.detect`: equivalence and speed, side by side.

Equivalence. Reference: facenet-pytorch's `MTCNN.detect` (keep_all, the product's minimum face size
20 px, stage thresholds 0.6/0.7/0.7, factor 0.709), run on photos of one size at a time, unpadded
(what it computes for each photo alone). New: gallery.faces.mtcnn_batched.BatchedMTCNN on batches of
mixed photos. Both see the pixels the product's decode gives. Per photo the faces are matched one to
one (greedy by IoU, a match needs IoU >= 0.5): a photo has "the same faces" when every face on both
sides is matched. Per matched face: box IoU and the largest landmark distance (px). Reported for
every face MTCNN returns and for the faces the product keeps (score >= 0.9, side >= 20 px).
Photos: LFW A–J (all, or a seeded random sample) plus made-up multi-face and large photos (2×2 and
3×3 grids of LFW photos, LFW photos upscaled to 1000×1000, and 1920×1080 frames: a 4×7 mosaic of
270 px LFW photos, or one LFW photo upscaled to 1080 px on grey).

Speed: the detector alone through the product's own `FaceDetector` (decoded pixels in, detections in
original pixels out), `mtcnn-batched` vs `facenet-mtcnn`, batches of --batch photos, runs interleaved
(A B A B ...), photos/s as min/median/max over runs, wall clock and process CPU time (on a shared
machine CPU time is the steadier figure).

    python benchmarks/detector_compare.py --photos all --output results/detector_compare.json
    python benchmarks/detector_compare.py --photos 500 --speed-photos 256 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gallery.device import apply_process_defaults  # noqa: E402

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "lfw-aj" / "images"
MIN_FACE, THRESHOLDS, FACTOR = 20, (0.6, 0.7, 0.7), 0.709
PRODUCT_SCORE = 0.9
TARGETS = {"same_faces_photos": 0.995, "iou_0.95_faces": 0.99, "landmarks_1.5px_faces": 0.99}

Faces = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (n, 4), probs (n,), points (n, 5, 2)


# ------------------------------------------------------------------------------------ comparing
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of x1 y1 x2 y2 boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def match_faces(ref: Faces, new: Faces, min_iou: float = 0.5) -> dict:
    """One-to-one matching by IoU (greedy, best pair first): matched pairs' IoU and landmark error."""
    iou = box_iou(ref[0], new[0])
    pairs = []
    if iou.size:
        work = iou.copy()
        while True:
            i, j = np.unravel_index(np.argmax(work), work.shape)
            if work[i, j] < min_iou:
                break
            pairs.append((int(i), int(j)))
            work[i, :], work[:, j] = -1, -1
    ious = [float(iou[i, j]) for i, j in pairs]
    landmark = [float(np.linalg.norm(ref[2][i] - new[2][j], axis=1).max()) for i, j in pairs]
    same = len(pairs) == len(ref[0]) == len(new[0])
    return {"ref": len(ref[0]), "new": len(new[0]), "matched": len(pairs), "same": same, "iou": ious,
            "landmark_px": landmark}


def product_faces(f: Faces, score: float = PRODUCT_SCORE, min_side: float = MIN_FACE) -> Faces:
    """The faces the product keeps (its score threshold and minimum side; scale 1 photos)."""
    boxes, probs, points = f
    side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.zeros(0)
    keep = (probs >= score) & (side >= min_side)
    return boxes[keep], probs[keep], points[keep]


def summarize(matches: Sequence[dict], names: Sequence[str]) -> dict:
    ious = np.array([v for m in matches for v in m["iou"]])
    marks = np.array([v for m in matches for v in m["landmark_px"]])
    faces = max(1, len(ious))
    differ = [{"photo": n, "ref_faces": m["ref"], "new_faces": m["new"], "matched": m["matched"]}
              for n, m in zip(names, matches) if not m["same"]]
    outside = [{"photo": n, "iou": round(i, 4), "landmark_px": round(d, 2)}
               for n, m in zip(names, matches) for i, d in zip(m["iou"], m["landmark_px"]) if i < 0.95 or d > 1.5]
    out = {
        "photos": len(matches),
        "same_faces_photos": sum(m["same"] for m in matches) / max(1, len(matches)),
        "faces_ref": sum(m["ref"] for m in matches),
        "faces_new": sum(m["new"] for m in matches),
        "faces_matched": int(len(ious)),
        "iou_0.95_faces": float((ious >= 0.95).sum() / faces),
        "landmarks_1.5px_faces": float((marks <= 1.5).sum() / faces),
        "iou_min": float(ious.min()) if len(ious) else None,
        "landmark_px_max": float(marks.max()) if len(marks) else None,
        "photos_that_differ": differ[:25],
        "faces_outside_tolerance": outside[:25],
    }
    out["meets_targets"] = all(out[k] >= v for k, v in TARGETS.items())
    return out


# ------------------------------------------------------------------------------------ detecting
def reference_detect(images: Sequence[np.ndarray], mtcnn=None) -> list[Faces]:
    """facenet-pytorch's MTCNN.detect, photos of one size batched together (no padding)."""
    import torch
    from facenet_pytorch import MTCNN

    mtcnn = mtcnn or MTCNN(keep_all=True, min_face_size=MIN_FACE, thresholds=list(THRESHOLDS), factor=FACTOR,
                           post_process=False)
    out: list[Faces | None] = [None] * len(images)
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    for members in groups.values():
        for start in range(0, len(members), 32):
            chunk = members[start : start + 32]
            boxes, probs, points = mtcnn.detect(torch.from_numpy(np.stack([images[i] for i in chunk])), landmarks=True)
            for i, b, p, q in zip(chunk, boxes, probs, points):
                out[i] = ((np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
                          if b is None else (b.astype(np.float32), p.astype(np.float32), q.astype(np.float32)))
    return out  # type: ignore[return-value]


def batched_detect(images: Sequence[np.ndarray], detector=None, batch: int = 32) -> list[Faces]:
    from gallery.faces.mtcnn_batched import BatchedMTCNN

    detector = detector or BatchedMTCNN("cpu", THRESHOLDS, FACTOR)
    out = []
    for start in range(0, len(images), batch):
        part = images[start : start + batch]
        out += [(f.boxes, f.probs, f.points) for f in detector.detect(part, [MIN_FACE] * len(part))]
    return out


# ------------------------------------------------------------------------------------ photos
def decode(path: Path) -> np.ndarray:
    """The pixels the product's decode gives (scale 1 for photos up to its 2048 px default)."""
    from gallery.faces.decode import decode_photo

    photo = decode_photo(str(path), 0, 0)
    if not photo.ok:
        raise SystemExit(f"{path}: {photo.reason} ({photo.detail})")
    return photo.pixels


def made_up_photos(sources: Sequence[np.ndarray], seed: int, per_kind: int) -> tuple[list[np.ndarray], list[str]]:
    """Multi-face grids and large photos built from LFW photos (see the module docstring)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pick = lambda k: [sources[i] for i in rng.choice(len(sources), k, replace=False)]  # noqa: E731
    resize = lambda a, s: np.asarray(Image.fromarray(a).resize((s, s), Image.Resampling.BICUBIC))  # noqa: E731
    images, names = [], []
    for n in range(per_kind):
        for grid in (2, 3):
            tiles = pick(grid * grid)
            images.append(np.concatenate([np.concatenate(tiles[r * grid : (r + 1) * grid], axis=1)
                                          for r in range(grid)], axis=0))
            names.append(f"grid{grid}x{grid}-{n}")
        images.append(resize(pick(1)[0], 1000))
        names.append(f"upscaled1000-{n}")
        frame = np.full((1080, 1920, 3), 128, np.uint8)
        tiles = [resize(t, 270) for t in pick(28)]
        mosaic = np.concatenate([np.concatenate(tiles[r * 7 : (r + 1) * 7], axis=1) for r in range(4)], axis=0)
        frame[:, 15 : 15 + 1890] = mosaic
        images.append(frame)
        names.append(f"1080p-mosaic4x7-{n}")
        frame = np.full((1080, 1920, 3), 128, np.uint8)
        frame[:, 420:1500] = resize(pick(1)[0], 1080)
        images.append(frame)
        names.append(f"1080p-one-face-{n}")
    return images, names


# ------------------------------------------------------------------------------------ speed
def speed(images: Sequence[np.ndarray], batch: int, runs: int) -> dict:
    """The product's FaceDetector alone, both kinds, interleaved runs: photos/s min/median/max."""
    from gallery.faces.detect import FaceDetector

    detectors = {kind: FaceDetector("cpu", MIN_FACE, PRODUCT_SCORE, THRESHOLDS, batch, kind=kind)
                 for kind in ("facenet-mtcnn", "mtcnn-batched")}
    for det in detectors.values():  # warm-up
        det.detect(images[:batch])
    wall: dict[str, list[float]] = {k: [] for k in detectors}
    cpu: dict[str, list[float]] = {k: [] for k in detectors}
    for _ in range(runs):
        for kind, det in detectors.items():
            w0, c0 = time.perf_counter(), time.process_time()
            for start in range(0, len(images), batch):
                det.detect(images[start : start + batch])
            wall[kind].append(len(images) / (time.perf_counter() - w0))
            cpu[kind].append(len(images) / (time.process_time() - c0))
    stats = lambda v: {"min": min(v), "median": statistics.median(v), "max": max(v)}  # noqa: E731
    out = {k: {"photos_per_s_wall": stats(wall[k]), "photos_per_cpu_s": stats(cpu[k])} for k in detectors}
    out["speedup_median_wall"] = (out["mtcnn-batched"]["photos_per_s_wall"]["median"]
                                  / out["facenet-mtcnn"]["photos_per_s_wall"]["median"])
    out["speedup_median_cpu"] = (out["mtcnn-batched"]["photos_per_cpu_s"]["median"]
                                 / out["facenet-mtcnn"]["photos_per_cpu_s"]["median"])
    out.update(photos=len(images), batch=batch, runs=runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="LFW A–J images folder")
    parser.add_argument("--photos", default="all", help="'all' or a number (a seeded random sample)")
    parser.add_argument("--made-up", type=int, default=4, help="made-up photos of each of 5 kinds")
    parser.add_argument("--speed-photos", type=int, default=256, help="LFW photos per speed run (0: skip)")
    parser.add_argument("--speed-large", type=int, default=16, help="1080p photos per speed run (0: skip)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if not args.images.is_dir():
        sys.exit(f"No photo folder at {args.images}: pass --images ../shared/data/lfw-aj/images.")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    files = sorted(args.images.rglob("*.jpg"))
    rng = np.random.default_rng(args.seed)
    if args.photos != "all":
        files = [files[i] for i in sorted(rng.choice(len(files), min(int(args.photos), len(files)), replace=False))]
    t0 = time.perf_counter()
    images = [decode(f) for f in files]
    names = [f"{f.parent.name}/{f.name}" for f in files]
    print(f"{len(images)} LFW photos decoded in {time.perf_counter() - t0:.1f} s", flush=True)

    report: dict = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                "platform": platform.platform(), "torch": torch.__version__,
                                "note": "shared machine: other jobs ran at the same time"},
                    "settings": {"min_face_size": MIN_FACE, "thresholds": THRESHOLDS, "factor": FACTOR,
                                 "batch": args.batch, "targets": TARGETS}}
    extra, extra_names = made_up_photos(images, args.seed, args.made_up) if args.made_up else ([], [])
    for label, imgs, nms in (("lfw", images, names), ("made_up", extra, extra_names)):
        if not imgs:
            continue
        t0 = time.perf_counter()
        ref = reference_detect(imgs)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        new = batched_detect(imgs, batch=args.batch)
        t_new = time.perf_counter() - t0
        report[label] = {
            "all_mtcnn_faces": summarize([match_faces(r, n) for r, n in zip(ref, new)], nms),
            "product_faces": summarize([match_faces(product_faces(r), product_faces(n)) for r, n in zip(ref, new)],
                                       nms),
            "seconds": {"facenet": t_ref, "batched": t_new},
        }
        for scope in ("all_mtcnn_faces", "product_faces"):
            s = report[label][scope]
            print(f"{label:<8} {scope:<16} photos {s['photos']:>5}  same faces {s['same_faces_photos']:.4f}  "
                  f"faces {s['faces_ref']}/{s['faces_new']}  IoU>=0.95 {s['iou_0.95_faces']:.4f}  "
                  f"landmarks<=1.5px {s['landmarks_1.5px_faces']:.4f}  worst IoU {s['iou_min']}  "
                  f"worst landmark {s['landmark_px_max']}  {'PASS' if s['meets_targets'] else 'FAIL'}", flush=True)
    if args.speed_photos:
        report["speed_lfw"] = speed(images[: args.speed_photos], args.batch, args.runs)
    if args.speed_large and extra:
        large = [im for im, n in zip(extra, extra_names) if n.startswith("1080p")]
        large = (large * (args.speed_large // max(1, len(large)) + 1))[: args.speed_large]
        report["speed_1080p"] = speed(large, min(args.batch, 8), args.runs)
    for key in ("speed_lfw", "speed_1080p"):
        if key in report:
            s = report[key]
            for kind in ("facenet-mtcnn", "mtcnn-batched"):
                w, c = s[kind]["photos_per_s_wall"], s[kind]["photos_per_cpu_s"]
                print(f"{key:<12} {kind:<14} photos/s wall {w['min']:.1f}/{w['median']:.1f}/{w['max']:.1f}  "
                      f"per CPU-s {c['min']:.1f}/{c['median']:.1f}/{c['max']:.1f} (min/median/max, {s['runs']} runs)")
            print(f"{key:<12} speedup (median) wall {s['speedup_median_wall']:.2f}x  "
                  f"CPU {s['speedup_median_cpu']:.2f}x")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
