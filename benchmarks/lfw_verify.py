"""LFW verification accuracy: the product's own ingest path vs dlib's own pipeline, side by side.

Pairs come from `pairs.txt` (LFW View 2 lines whose identities fall in A–J): `NAME i j` is a
same-person pair, `NAME1 i NAME2 j` a different-person pair (1-based image numbers; files
images/NAME/NAME_%04d.jpg). The official file lists 10 sets, each its same pairs then its different
pairs; the A–J subset keeps that order, so the 10 LFW folds are recovered as the runs "same lines,
then different lines". Protocol: for each fold, the threshold with the best accuracy on the other
9 folds is applied to it; we report the mean ± sample std of the 10 fold accuracies and, as the
recommended default, the best threshold on all pairs. Scores are cosine similarities between
L2-normalised descriptors.

Pipelines:
  product  THE PRODUCT PATH, nothing copied: `gallery.ingest.ingest` (--model, default dlib-resnet, labels
           none, device cpu) over a temporary folder of symlinks to exactly the photos the pairs
           reference; each photo's MAIN face embedding is then read back from the gallery through
           the store (`Gallery.read_embeddings`). Photos are matched to images by content hash
           (identical files are one image in a gallery). Fallback: a photo where the product found
           no face (or that failed) has no embedding, and every pair that uses it gets score -1.0,
           the lowest cosine, i.e. it is called "different" at every threshold. Such photos and
           pairs are counted and reported, never dropped.
  dlib     dlib's own pipeline: frontal HOG detector (1 upsample; largest face) + shape_predictor_5 +
           get_face_chip(150, 0.25) + dlib.face_recognition_model_v1.compute_face_descriptor. Photos
           where dlib finds no face fall back to the mean dlib box of the other photos (counted).
           The row "dlib, no-face → -1" applies the product's fallback rule to the same descriptors
           instead, for a like-for-like comparison.

Speed is measured by benchmarks/ingest_throughput.py, the torch port's exactness by
tests/test_dlib_resnet.py; neither is repeated here.

    python benchmarks/lfw_verify.py --output lfw_verify.json
    python benchmarks/lfw_verify.py --limit-pairs 20          # every 20th pair: a quick end-to-end run
    python benchmarks/lfw_verify.py --detector facenet-mtcnn --skip-dlib   # the product with the other detector
    python benchmarks/lfw_verify.py --model vggface2-senet50 --weights rcmalli_vggface_tf_notop_senet50.h5
    python benchmarks/lfw_verify.py --model onnx --preset arcface-112 --weights w600k_r50.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gallery.device import apply_process_defaults  # noqa: E402

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

DEFAULT_DATA = REPO.parent / "shared" / "data" / "lfw-aj"
FALLBACK_SCORE = -1.0  # score of a pair with a photo that has no embedding: "different" at any threshold

Key = tuple[str, int]  # (identity name, 1-based image number)


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
    return pairs, np.array(same, dtype=bool), np.array(folds, dtype=np.int64)


def image_path(root: Path, name: str, number: int) -> Path:
    return root / "images" / name / f"{name}_{number:04d}.jpg"


def pair_keys(pairs: list[tuple[str, int, str, int]]) -> list[Key]:
    """The distinct photos the pairs reference, sorted."""
    return sorted({(a, i) for a, i, _, _ in pairs} | {(b, j) for _, _, b, j in pairs})


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
        "accuracy_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
        "fold_accuracies": accs,
        "fold_thresholds": thresholds,
        "threshold_all_pairs": t_all,
        "accuracy_at_threshold_all_pairs": acc_all,
        "threshold_balanced_accuracy": t_bal,
        "balanced_accuracy": float(bal.max()),
    }


def pair_scores(emb: dict[Key, np.ndarray], pairs: list) -> tuple[np.ndarray, int]:
    """Cosine score of every pair (descriptors are unit length) and the number of fallback pairs.

    A pair with a photo missing from `emb` (no face found) scores FALLBACK_SCORE, i.e. it is called
    "different" at every threshold: it is counted, never dropped.
    """
    scores = np.empty(len(pairs), dtype=np.float64)
    fallbacks = 0
    for n, (a, i, b, j) in enumerate(pairs):
        u, v = emb.get((a, i)), emb.get((b, j))
        if u is None or v is None:
            scores[n] = FALLBACK_SCORE
            fallbacks += 1
        else:
            scores[n] = float(np.dot(u, v))
    return scores, fallbacks


def l2n(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def file_sha256(path: Path) -> str:
    """The content hash the product keys images by (sha256 of the file's bytes)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------ the product's own path
def stage_photos(root: Path, keys: list[Key], dest: Path) -> None:
    """dest/NAME/NAME_NNNN.jpg → symlinks to exactly the photos the pairs reference."""
    for key in keys:
        src = image_path(root, *key).resolve()
        if not src.is_file():
            raise FileNotFoundError(f"pairs.txt references a missing photo: {src}")
        target = dest / key[0] / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(src)


def main_face_embeddings(gallery_dir: Path, sha_of: dict[Key, str]) -> tuple[dict[Key, np.ndarray], dict]:
    """Each photo's MAIN face embedding, read back from the gallery; plus what happened to the rest.

    Photos are matched to gallery images by content hash: identical files are one image.
    """
    from gallery.store import Gallery

    wanted = sorted(set(sha_of.values()))
    with Gallery.open(gallery_dir) as g:
        photos = g.photos_by_content(wanted)
        status = {sha: (st, reason) for sha, (_, st, reason) in photos.items()}
        shas = sorted(sha for sha, (face_id, _, _) in photos.items() if face_id is not None)
        vectors = g.read_embeddings([photos[sha][0] for sha in shas]) if shas else np.zeros((0, 128))
    by_sha = dict(zip(shas, vectors.astype(np.float64)))
    norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.ones(1)
    emb = {key: by_sha[sha] for key, sha in sha_of.items() if sha in by_sha}
    missing = sorted(key for key in sha_of if key not in emb)
    reasons: dict[str, int] = {}
    for key in missing:
        st, reason = status.get(sha_of[key], ("absent", None))
        label = reason or st
        reasons[label] = reasons.get(label, 0) + 1
    info = {
        "images": len(wanted),
        "images_with_main_face": len(shas),
        "photos_without_embedding": [f"{n}_{i:04d}" for n, i in missing],
        "fallback_reasons": reasons,
        "embedding_norm_range": [float(norms.min()), float(norms.max())],
    }
    return emb, info


def product_embeddings(root: Path, keys: list[Key], work: Path, model: str = "dlib-resnet",
                       weights: Path | None = None, preset: str | None = None) -> tuple[dict[Key, np.ndarray], dict]:
    """Run the product's real ingest on exactly these photos; read back the main face per photo."""
    from gallery.faces.detect import detector_kind
    from gallery.ingest import IngestOptions, ingest
    from gallery.progress import Progress

    photos_dir, gallery_dir = work / "photos", work / "gallery"
    stage_photos(root, keys, photos_dir)
    sha_of = {key: file_sha256(image_path(root, *key)) for key in keys}
    last = [0.0]

    def on_progress(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= 30:
            last[0] = now
            print(f"  ingest: {p.done}/{len(keys)} photos · {p.message}", flush=True)

    options = IngestOptions(model=model, weights=weights, preset=preset, labels="none", device="cpu")
    summary = ingest(photos_dir, gallery_dir, options, on_progress=on_progress)
    emb, info = main_face_embeddings(gallery_dir, sha_of)
    info["ingest_options"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()}
    info["ingest_summary"] = summary.as_dict()
    info["detector"] = detector_kind()
    return emb, info


# ------------------------------------------------------------------------ dlib's own pipeline (A)
def dlib_chips(root: Path, keys: list) -> tuple[dict, int]:
    """dlib's detection and chips: {key: (150,150,3) uint8}, the photos where dlib found no face."""
    import dlib
    from PIL import Image

    from gallery.faces.models.dlib_resnet import SHAPE_PREDICTOR_5, packaged_weights

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
    return chips, missing


def dlib_descriptors(chips: dict, batch: int = 64) -> dict:
    import dlib

    from gallery.faces.models.dlib_resnet import packaged_weights

    rec = dlib.face_recognition_model_v1(str(packaged_weights()))
    keys = list(chips)
    out = {}
    for start in range(0, len(keys), batch):
        part = keys[start : start + batch]
        descs = rec.compute_face_descriptor([chips[k] for k in part])
        for k, d in zip(part, descs):
            out[k] = l2n(np.array(d, dtype=np.float64))
    return out


# ----------------------------------------------------------------------------------------- main
def make_work_dir(work: Path | None) -> tuple[Path, bool]:
    """(work folder, created by us). Never inside the repository; photos/ and gallery/ must be new."""
    if work is None:
        return Path(tempfile.mkdtemp(prefix="lfw_verify_")), True
    work = work.resolve()
    if work == REPO or REPO in work.parents:
        sys.exit(f"--work {work} is inside the repository; choose a folder outside it")
    for sub in ("photos", "gallery"):
        if (work / sub).exists():
            sys.exit(f"{work / sub} already exists; choose another --work or remove it")
    created = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    return work, created


def row(name: str, r: dict, fallbacks: str) -> str:
    acc = f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}%"
    return (
        f"{name:<24} {acc:>18} {r['threshold_all_pairs']:>9.4f} "
        f"{100 * r['accuracy_at_threshold_all_pairs']:>8.2f}% {fallbacks:>22}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the lfw-aj folder (pairs.txt, images/)")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--limit-pairs", type=int, default=0, metavar="N",
                        help="use only every N-th pair (quick runs; keeps all folds)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the staged photo links and the temporary gallery (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the staged photos and gallery at the end")
    parser.add_argument("--batch", type=int, default=64, help="chips per dlib descriptor call")
    parser.add_argument("--detector", choices=["mtcnn-batched", "facenet-mtcnn"], default=None,
                        help="the product's face detector (default: the product's default)")
    parser.add_argument("--skip-dlib", action="store_true", help="run the product path only")
    parser.add_argument("--model", default="dlib-resnet",
                        help="the product's embedding model (see `gallery models`); dlib's own pipeline is run "
                             "beside it for dlib-resnet only")
    parser.add_argument("--weights", type=Path, default=None, help="the model's weights file (as `gallery ingest`)")
    parser.add_argument("--preset", default=None, help="with --model onnx: the model family's input convention")
    args = parser.parse_args()
    if args.model != "dlib-resnet":
        args.skip_dlib = True
    if args.detector:
        from gallery.faces.detect import DETECTOR_ENV

        os.environ[DETECTOR_ENV] = args.detector  # the ingest's FacePipeline reads it
    if not (args.data / "pairs.txt").is_file():
        sys.exit(f"no LFW data at {args.data} (expected pairs.txt and images/)")
    pairs, same, folds = read_pairs(args.data / "pairs.txt")
    if args.limit_pairs > 1:
        pairs, same, folds = pairs[:: args.limit_pairs], same[:: args.limit_pairs], folds[:: args.limit_pairs]
    keys = pair_keys(pairs)
    n_folds = len(np.unique(folds))
    print(
        f"{len(pairs)} pairs ({same.sum()} same, {(~same).sum()} different), {len(keys)} photos, {n_folds} folds",
        flush=True,
    )
    result: dict = {
        "data": str(args.data),
        "pairs": len(pairs),
        "same": int(same.sum()),
        "different": int((~same).sum()),
        "photos": len(keys),
        "folds": n_folds,
        "limit_pairs": args.limit_pairs,
        "fallback_score": FALLBACK_SCORE,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "pipelines": {},
    }
    timings: dict[str, float] = {}

    work, created = make_work_dir(args.work)
    print(f"work folder: {work}", flush=True)
    try:
        t0 = time.perf_counter()
        p_emb, p_info = product_embeddings(args.data, keys, work, args.model, args.weights, args.preset)
        timings["product_ingest_and_read_s"] = time.perf_counter() - t0
    finally:
        if args.keep:
            print(f"kept the staged photos and gallery in {work}", flush=True)
        else:
            for sub in ("photos", "gallery"):
                shutil.rmtree(work / sub, ignore_errors=True)
            if created:
                shutil.rmtree(work, ignore_errors=True)
    p_scores, p_fallback_pairs = pair_scores(p_emb, pairs)
    result["pipelines"]["product_ingest"] = {
        "fallback_photos": len(keys) - len(p_emb),
        "fallback_pairs": p_fallback_pairs,
        "fallback_rule": f"pairs with a photo without a main face score {FALLBACK_SCORE}",
        **evaluate(p_scores, same, folds),
        **p_info,
    }
    print(f"product done: {100 * result['pipelines']['product_ingest']['accuracy_mean']:.2f}% "
          f"({len(keys) - len(p_emb)} photos without a face)", flush=True)

    if args.skip_dlib:
        product = result["pipelines"]["product_ingest"]
        print(row(f"product ({p_info['detector']})", product, str(product["fallback_photos"])))
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(result, indent=2))
            print(f"wrote {args.output}")
        return
    t0 = time.perf_counter()
    chips, a_missing = dlib_chips(args.data, keys)
    a_emb = dlib_descriptors(chips, args.batch)
    timings["dlib_s"] = time.perf_counter() - t0
    a_scores, _ = pair_scores(a_emb, pairs)
    missing = set(a_missing)
    a_fallback_pairs = sum(1 for a, i, b, j in pairs if (a, i) in missing or (b, j) in missing)
    result["pipelines"]["dlib"] = {
        "fallback_photos": len(a_missing),
        "fallback_pairs": a_fallback_pairs,
        "fallback_rule": "photos without a dlib face use the mean dlib box of the others",
        "photos_without_face": [f"{n}_{i:04d}" for n, i in sorted(a_missing)],
        **evaluate(a_scores, same, folds),
    }
    strict_scores, strict_fallback_pairs = pair_scores({k: v for k, v in a_emb.items() if k not in missing}, pairs)
    result["pipelines"]["dlib_no_face_as_different"] = {
        "fallback_photos": len(a_missing),
        "fallback_pairs": strict_fallback_pairs,
        "fallback_rule": f"pairs with a photo without a dlib face score {FALLBACK_SCORE} (the product's rule)",
        **evaluate(strict_scores, same, folds),
    }
    print(f"dlib done: {100 * result['pipelines']['dlib']['accuracy_mean']:.2f}%", flush=True)
    result["timings_s"] = {k: round(v, 1) for k, v in timings.items()}

    names = {
        "product_ingest": "product (gallery.ingest)",
        "dlib": "dlib own (mean box)",
        "dlib_no_face_as_different": "dlib own, no-face → -1",
    }
    print()
    print(f"{len(pairs)} pairs ({result['same']} same, {result['different']} different), "
          f"{len(keys)} photos, {n_folds} folds")
    print(f"{'pipeline':<24} {'accuracy (10-fold)':>18} {'thr(all)':>9} {'acc(all)':>9} "
          f"{'fallbacks photos/pairs':>22}")
    for key, r in result["pipelines"].items():
        print(row(names[key], r, f"{r['fallback_photos']} / {r['fallback_pairs']}"))
    reasons = result["pipelines"]["product_ingest"]["fallback_reasons"]
    if reasons:
        print(f"product fallbacks by reason: {reasons}")
    print(f"timings (shared machine, noisy): {result['timings_s']}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
