"""LFW verification accuracy of the dlib ResNet face descriptor: dlib's own pipeline vs ours.

Pairs come from `pairs.txt` (LFW View 2 lines whose identities fall in A–J): `NAME i j` is a
same-person pair, `NAME1 i NAME2 j` a different-person pair (1-based image numbers; files
images/NAME/NAME_%04d.jpg). The official file lists 10 sets, each its same pairs then its different
pairs; the A–J subset keeps that order, so the 10 LFW folds are recovered as the runs "same lines,
then different lines". Protocol: for each fold, the threshold with the best accuracy on the other
9 folds is applied to it; we report the mean ± sample std of the 10 fold accuracies and, as the
recommended default, the best threshold on all pairs. Scores are cosine similarities between
L2-normalised descriptors.

Pipelines:
  A  dlib's own: frontal HOG detector (1 upsample; largest face) + shape_predictor_5 +
     get_face_chip(150, 0.25) + dlib.face_recognition_model_v1.compute_face_descriptor. Photos where
     dlib finds no face fall back to the mean dlib box of the other photos (counted).
  A' the same dlib chips through our torch port (checks the port at LFW scale).
  B  the project's: facenet-pytorch MTCNN (keep_all, largest face) → least-squares similarity
     from the 5 MTCNN landmarks to DLIB_TEMPLATE (gallery.align) → 150 px chip → torch port.
     Photos without an MTCNN face fall back to the mean landmark positions of the others (counted).

Throughput: faces/s of compute_face_descriptor (batch call) vs the torch port (Embedder.embed) on
the same pre-made chips.

    python benchmarks/lfw_verify.py --output lfw_dlib.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gallery.align import similarity_transform, warp_chips  # noqa: E402
from gallery.models.dlib_resnet import DLIB_TEMPLATE, SHAPE_PREDICTOR_5, packaged_weights  # noqa: E402
from gallery.models.registry import get_model_spec  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "lfw-aj"


# ------------------------------------------------------------------------------------------ pairs
def read_pairs(path: Path) -> tuple[list[tuple[str, int, str, int]], np.ndarray, np.ndarray]:
    """(pairs, same (bool), fold index): folds recovered from the same→different runs."""
    pairs, same, folds = [], [], []
    fold, previous_same = -1, None
    for line in path.read_text().splitlines():
        parts = line.strip().split("\t")
        if len(parts) == 3:
            pair, is_same = (parts[0], int(parts[1]), parts[0], int(parts[2])), True
        elif len(parts) == 4:
            pair, is_same = (parts[0], int(parts[1]), parts[2], int(parts[3])), False
        else:
            continue
        if fold < 0 or (is_same and previous_same is False):
            fold += 1
        pairs.append(pair)
        same.append(is_same)
        folds.append(fold)
        previous_same = is_same
    return pairs, np.array(same), np.array(folds)


def image_path(root: Path, name: str, number: int) -> Path:
    return root / "images" / name / f"{name}_{number:04d}.jpg"


# ----------------------------------------------------------------------------------- evaluation
def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of `score >= threshold` ⇔ same person.

    Candidates are the midpoints between consecutive sorted scores; with several optimal
    candidates the median one is taken (the middle of the best plateau).
    """
    order = np.argsort(scores)
    s, y = scores[order], same[order]
    # Threshold just above s[k-1]: the first k pairs are called different.
    correct_diff = np.concatenate([[0], np.cumsum(~y)])  # different pairs correctly rejected
    correct_same = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])  # same pairs accepted
    acc = (correct_diff + correct_same) / len(s)
    candidates = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    best = np.flatnonzero(acc == acc.max())
    k = best[len(best) // 2]
    return float(candidates[k]), float(acc[k])


def evaluate(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    accs, thresholds = [], []
    for f in np.unique(folds):
        test = folds == f
        t, _ = best_threshold(scores[~test], same[~test])
        accs.append(float(np.mean((scores[test] >= t) == same[test])))
        thresholds.append(t)
    t_all, acc_all = best_threshold(scores, same)
    # Also the threshold that balances the two error rates' mean (the subset has ~2 same : 1 different).
    grid = np.linspace(-1, 1, 4001)
    tpr = (scores[same][None, :] >= grid[:, None]).mean(axis=1)
    tnr = (scores[~same][None, :] < grid[:, None]).mean(axis=1)
    bal = (tpr + tnr) / 2
    best = np.flatnonzero(bal == bal.max())
    t_bal = float(grid[best[len(best) // 2]])
    return {
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs, ddof=1)),
        "fold_accuracies": accs,
        "fold_thresholds": thresholds,
        "threshold_all_pairs": t_all,
        "accuracy_at_threshold_all_pairs": acc_all,
        "threshold_balanced_accuracy": t_bal,
        "balanced_accuracy": float(bal.max()),
    }


def cosine_scores(emb: dict, pairs: list) -> np.ndarray:
    return np.array([float(np.dot(emb[(a, i)], emb[(b, j)])) for a, i, b, j in pairs])


def l2n(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------ pipelines
def dlib_chips(root: Path, keys: list) -> tuple[dict, int]:
    """Pipeline A's detection and chips: {key: (150,150,3) uint8}, number of fallback photos."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(packaged_weights(SHAPE_PREDICTOR_5)))
    found, missing, sizes = {}, [], []
    images = {}
    for key in keys:
        img = np.asarray(Image.open(image_path(root, *key)).convert("RGB"))
        images[key] = img
        rects = detector(img, 1)
        if len(rects) == 0:
            missing.append(key)
            continue
        rect = max(rects, key=lambda r: r.width() * r.height())
        found[key] = rect
        h, w = img.shape[:2]
        sizes.append([rect.left() / w, rect.top() / h, rect.right() / w, rect.bottom() / h])
    mean_box = np.mean(sizes, axis=0)
    chips = {}
    for key in keys:
        img = images[key]
        rect = found.get(key)
        if rect is None:
            h, w = img.shape[:2]
            x1, y1, x2, y2 = (float(v) for v in mean_box * [w, h, w, h])
            rect = dlib.rectangle(round(x1), round(y1), round(x2), round(y2))
        chips[key] = dlib.get_face_chip(img, predictor(img, rect), 150, 0.25)
    return chips, len(missing)


def dlib_descriptors(chips: dict, batch: int = 64) -> dict:
    import dlib

    rec = dlib.face_recognition_model_v1(str(packaged_weights()))
    keys = list(chips)
    out = {}
    for start in range(0, len(keys), batch):
        part = keys[start : start + batch]
        descs = rec.compute_face_descriptor([chips[k] for k in part])
        for k, d in zip(part, descs):
            out[k] = l2n(np.array(d, dtype=np.float64))
    return out


def torch_descriptors(embedder, chips: dict, batch: int = 64) -> dict:
    keys = list(chips)
    out = {}
    for start in range(0, len(keys), batch):
        part = keys[start : start + batch]
        x = torch.from_numpy(np.stack([chips[k] for k in part])).permute(0, 3, 1, 2).contiguous()
        emb = embedder.embed(x).numpy().astype(np.float64)
        out.update(zip(part, emb))
    return out


def mtcnn_chips(root: Path, keys: list, template: np.ndarray, batch: int = 64) -> tuple[dict, int]:
    """Pipeline B's detection and alignment: {key: (150,150,3) uint8}, number of fallback photos."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu")
    landmarks, missing = {}, []
    for start in range(0, len(keys), batch):
        part = keys[start : start + batch]
        imgs = [np.asarray(Image.open(image_path(root, *k)).convert("RGB")) for k in part]
        if len({im.shape for im in imgs}) == 1:
            boxes, _, lms = mtcnn.detect(np.stack(imgs), landmarks=True)
        else:
            res = [mtcnn.detect(im, landmarks=True) for im in imgs]
            boxes, lms = [r[0] for r in res], [r[2] for r in res]
        for k, b, lm in zip(part, boxes, lms):
            if b is None:
                missing.append(k)
                continue
            i = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            landmarks[k] = lm[i]
    mean_lm = np.mean(np.stack(list(landmarks.values())), axis=0)
    chips = {}
    for k in keys:
        img = torch.from_numpy(np.array(Image.open(image_path(root, *k)).convert("RGB"))).permute(2, 0, 1)
        m = similarity_transform(landmarks.get(k, mean_lm), template)
        chips[k] = warp_chips(img.contiguous(), m[None], 150)[0].permute(1, 2, 0).numpy()
    return chips, len(missing)


# ----------------------------------------------------------------------------------- throughput
def throughput(embedder, chips: np.ndarray, repeats: int = 3) -> dict:
    import dlib

    rec = dlib.face_recognition_model_v1(str(packaged_weights()))
    chip_list = list(chips)
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).contiguous()
    embedder.embed(x[:8])  # warm-up
    rec.compute_face_descriptor(chip_list[:2])
    t_torch, t_dlib = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embedder.embed(x)
        t_torch.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rec.compute_face_descriptor(chip_list)
        t_dlib.append(time.perf_counter() - t0)
    n = len(chips)
    return {
        "batch": n,
        "torch_faces_per_s": n / min(t_torch),
        "dlib_faces_per_s": n / min(t_dlib),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }


# ----------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--limit-pairs", type=int, default=0, help="use only every n-th pair (quick runs)")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if not (args.data / "pairs.txt").is_file():
        sys.exit(f"no LFW data at {args.data} (expected pairs.txt and images/)")
    torch.manual_seed(0)
    pairs, same, folds = read_pairs(args.data / "pairs.txt")
    if args.limit_pairs > 1:
        pairs, same, folds = pairs[:: args.limit_pairs], same[:: args.limit_pairs], folds[:: args.limit_pairs]
    keys = sorted({(a, i) for a, i, _, _ in pairs} | {(b, j) for _, _, b, j in pairs})
    print(
        f"{len(pairs)} pairs ({same.sum()} same, {(~same).sum()} different), {len(keys)} photos, "
        f"{len(np.unique(folds))} folds",
        flush=True,
    )
    embedder = get_model_spec("dlib-resnet").load()
    result: dict = {
        "pairs": len(pairs),
        "same": int(same.sum()),
        "different": int((~same).sum()),
        "photos": len(keys),
        "folds": len(np.unique(folds)),
        "pipelines": {},
    }
    timings = {}

    t0 = time.perf_counter()
    a_chips, a_fallback = dlib_chips(args.data, keys)
    timings["A_detect_align_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    a_dlib = dlib_descriptors(a_chips, args.batch)
    timings["A_dlib_descriptors_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    a_torch = torch_descriptors(embedder, a_chips, args.batch)
    timings["A_torch_descriptors_s"] = time.perf_counter() - t0
    port_diff = max(float(np.abs(a_dlib[k] - a_torch[k]).max()) for k in keys)
    result["pipelines"]["A_dlib"] = {
        "fallback_photos": a_fallback,
        **evaluate(cosine_scores(a_dlib, pairs), same, folds),
    }
    result["pipelines"]["A_dlib_chips_torch_port"] = {
        "fallback_photos": a_fallback,
        "max_abs_diff_vs_dlib_normalised": port_diff,
        **evaluate(cosine_scores(a_torch, pairs), same, folds),
    }
    print(f"A done: {result['pipelines']['A_dlib']['accuracy_mean']:.4f}", flush=True)

    t0 = time.perf_counter()
    b_chips, b_fallback = mtcnn_chips(args.data, keys, np.asarray(DLIB_TEMPLATE, dtype=np.float64), args.batch)
    timings["B_detect_align_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    b_torch = torch_descriptors(embedder, b_chips, args.batch)
    timings["B_torch_descriptors_s"] = time.perf_counter() - t0
    result["pipelines"]["B_mtcnn_template_torch"] = {
        "fallback_photos": b_fallback,
        **evaluate(cosine_scores(b_torch, pairs), same, folds),
    }

    sample = np.stack([a_chips[k] for k in keys[: args.batch]])
    result["throughput"] = throughput(embedder, sample)
    result["timings_s"] = timings

    print()
    print(f"{'pipeline':<28} {'accuracy (10-fold)':>20} {'thr(all)':>9} {'thr(bal)':>9} {'fallbacks':>9}")
    for name, r in result["pipelines"].items():
        acc = f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}%"
        print(
            f"{name:<28} {acc:>20} {r['threshold_all_pairs']:>9.4f} "
            f"{r['threshold_balanced_accuracy']:>9.4f} {r['fallback_photos']:>9}"
        )
    tp = result["throughput"]
    print(
        f"\nthroughput on {tp['batch']} chips: torch port {tp['torch_faces_per_s']:.1f} faces/s "
        f"({tp['torch_threads']} threads), dlib {tp['dlib_faces_per_s']:.1f} faces/s"
    )
    print(f"port vs dlib on all LFW chips: max abs diff {port_diff:.2e}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
