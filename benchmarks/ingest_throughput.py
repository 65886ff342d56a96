"""Ingest throughput: end to end, and each stage run alone (decode, detect, align+embed, write).

The end-to-end figure should be close to the slowest stage alone: the stages overlap (decoding in
worker processes while the main process detects and embeds) instead of queueing.

    python benchmarks/ingest_throughput.py ../shared/data/lfw-aj/images --photos 500 \
        --model facenet-untrained --model dlib-resnet --output results/ingest.json

Photos are linked (not copied) into a temporary folder. `--compare-dlib` adds dlib's own
`compute_face_descriptor` on the same aligned chips, for the dlib-resnet port.

Detectors side by side: `--detector facenet-mtcnn --detector mtcnn-batched --runs 3` measures each
stage alone with each detector, then runs the whole ingest `--runs` times per detector, interleaved
(A B A B ...), and reports end-to-end photos/s as min/median/max. The ingest picks its detector from
$FACE_GALLERY_DETECTOR (gallery.settings), which is set around each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gallery.device import resolve_device  # noqa: E402
from gallery.faces.decode import decode_photo  # noqa: E402
from gallery.faces.detect import DETECTOR_ENV, detector_kind  # noqa: E402
from gallery.faces.models import model_for_gallery  # noqa: E402
from gallery.faces.pipeline import FacePipeline  # noqa: E402
from gallery.ingest import IngestOptions, ingest  # noqa: E402
from gallery.ingest.reader import default_workers  # noqa: E402
from gallery.store import FileRecord, Gallery, GalleryWriter  # noqa: E402


def pick_photos(root: Path, n: int, seed: int) -> list[Path]:
    files = sorted(root.rglob("*.jpg"))
    rng = np.random.default_rng(seed)
    return [files[i] for i in sorted(rng.choice(len(files), min(n, len(files)), replace=False))]


def link_archive(photos: list[Path], dest: Path) -> None:
    for p in photos:
        (dest / p.parent.name).mkdir(parents=True, exist_ok=True)
        os.symlink(p.resolve(), dest / p.parent.name / p.name)


@contextmanager
def detector_env(kind: str) -> Iterator[None]:
    """Every FacePipeline made inside (the ingest's too) uses this detector."""
    before = os.environ.get(DETECTOR_ENV)
    os.environ[DETECTOR_ENV] = kind
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DETECTOR_ENV, None)
        else:
            os.environ[DETECTOR_ENV] = before


def bench_model(photos: list[Path], model: str, device: str, batch: int, workers: int, compare_dlib: bool,
                detector: str | None = None, end_to_end: bool = True, weights: Path | None = None,
                preset: str | None = None) -> dict:
    """Each stage alone through the product's own code (FacePipeline's detect and embed_detected, the
    store's writer), then (unless end_to_end is False) the real ingest end to end."""
    spec = model_for_gallery(None, model, preset)
    detector = detector_kind(detector)
    pipeline = FacePipeline(spec, device, weights, detect_batch_size=batch, detector=detector)
    result: dict = {"model": model, "detector": detector, "dim": pipeline.spec.dim, "device": pipeline.device.name,
                    "photos": len(photos)}

    # Stage 1: decode alone, through the same worker function the pipeline uses.
    t0 = time.perf_counter()
    if workers > 0:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for f in [pool.submit(time.sleep, 0.5) for _ in range(workers)]:  # start every worker first
                f.result()
            t0 = time.perf_counter()
            decoded = list(
                pool.map(decode_photo, [str(p) for p in photos], [0] * len(photos), [0] * len(photos), chunksize=8)
            )
    else:
        decoded = [decode_photo(str(p), 0, 0) for p in photos]
    decode_s = time.perf_counter() - t0
    batches = [decoded[i : i + batch] for i in range(0, len(decoded), batch)]

    # Stage 2: detect alone on decoded pixels (one warm-up batch first).
    pipeline.detect(batches[0])
    t0 = time.perf_counter()
    detections = [pipeline.detect(part) for part in batches]
    detect_s = time.perf_counter() - t0

    # Stage 3: align + embed alone (one warm-up batch first).
    pipeline.embed_detected(batches[0], detections[0])
    t0 = time.perf_counter()
    found = [f for part, det in zip(batches, detections) for f in pipeline.embed_detected(part, det)]
    embed_s = time.perf_counter() - t0
    faces = sum(len(f.boxes) for f in found)

    # Stage 4: write alone: the store's commit (one Parquet shard plus the SQLite rows).
    with tempfile.TemporaryDirectory() as tmp, Gallery.open_or_create(Path(tmp) / "g") as gallery:
        writer = GalleryWriter(gallery, pipeline.spec.stamp(), tmp, {})
        t0 = time.perf_counter()
        for image_id, (photo, f) in enumerate(zip(decoded, found), start=1):
            if f.ok:
                file = FileRecord(photo.path, photo.size, photo.mtime_ns, photo.sha256)
                writer.add_photo(file, image_id, photo.width, photo.height, None, f.main, f.boxes, f.scores,
                                 f.landmarks, f.embeddings)
        writer.commit({"photos": len(photos), "faces": faces})
        write_s = time.perf_counter() - t0

    stages = {
        "decode": {"seconds": decode_s, "photos_per_s": len(photos) / decode_s},
        "detect": {"seconds": detect_s, "photos_per_s": len(photos) / detect_s},
        "align_embed": {"seconds": embed_s, "photos_per_s": len(photos) / embed_s, "faces_per_s": faces / embed_s},
        "write": {"seconds": write_s, "photos_per_s": len(photos) / write_s},
    }
    result["faces"] = faces
    result["stages_alone"] = stages

    if compare_dlib and model == "dlib-resnet":
        result["dlib_native"] = dlib_native_throughput(decoded, detections, pipeline)
    if end_to_end:
        e2e = end_to_end_run(photos, model, device, batch, workers, detector, weights, preset)
        slowest = min(s["photos_per_s"] for s in stages.values())
        e2e["fraction_of_slowest_stage"] = e2e["photos_per_s"] / slowest
        result["end_to_end"] = e2e
    return result


def end_to_end_run(photos: list[Path], model: str, device: str, batch: int, workers: int, detector: str,
                   weights: Path | None = None, preset: str | None = None, flip: bool | None = None) -> dict:
    """The real ingest, end to end, on a fresh gallery (the whole run, model loading included)."""
    with tempfile.TemporaryDirectory() as tmp, detector_env(detector):
        archive = Path(tmp) / "archive"
        link_archive(photos, archive)
        opts = IngestOptions(model=model, device=device, detect_batch_size=batch, workers=workers, weights=weights,
                             preset=preset, flip=flip)
        summary = ingest(archive, Path(tmp) / "gallery", opts)
    return {
        "seconds": summary.seconds,
        "photos_per_s": summary.photos_per_s,
        "faces_per_s": summary.faces_per_s,
        "stage_seconds": summary.stage_seconds,
        "faces": summary.faces,
    }


def compare_detectors(photos: list[Path], model: str, device: str, batch: int, workers: int, detectors: list[str],
                      runs: int) -> dict:
    """Stages alone per detector, then `runs` whole ingests per detector, interleaved A B A B."""
    per = {d: bench_model(photos, model, device, batch, workers, False, d, end_to_end=False) for d in detectors}
    for d in detectors:
        per[d]["end_to_end_runs"] = []
    for _ in range(runs):
        for d in detectors:
            per[d]["end_to_end_runs"].append(end_to_end_run(photos, model, device, batch, workers, d))
    for d in detectors:
        rates = [r["photos_per_s"] for r in per[d]["end_to_end_runs"]]
        per[d]["end_to_end_photos_per_s"] = {"min": min(rates), "median": statistics.median(rates), "max": max(rates)}
        per[d]["end_to_end"] = min(per[d]["end_to_end_runs"], key=lambda r: abs(r["photos_per_s"] - statistics.median(
            rates)))
        slowest = min(s["photos_per_s"] for s in per[d]["stages_alone"].values())
        per[d]["end_to_end"]["fraction_of_slowest_stage"] = per[d]["end_to_end"]["photos_per_s"] / slowest
    return {"model": model, "runs": runs, "detectors": per}


def compare_flip(photos: list[Path], model: str, device: str, batch: int, workers: int, runs: int) -> dict:
    """Whole ingests without and with flip averaging, interleaved (off on off on ...): what flipping costs."""
    per: dict[str, list[dict]] = {"no flip": [], "flip": []}
    for _ in range(runs):
        for name, flip in (("no flip", False), ("flip", True)):
            per[name].append(end_to_end_run(photos, model, device, batch, workers, detector_kind(None), flip=flip))
            print(f"{name}: {per[name][-1]['photos_per_s']} photos/s, align+embed "
                  f"{per[name][-1]['stage_seconds'].get('align_embed')} s", flush=True)
    out: dict = {"model": model, "runs": runs}
    for name, rows in per.items():
        out[name] = {"photos_per_s": [r["photos_per_s"] for r in rows],
                     "align_embed_seconds": [r["stage_seconds"].get("align_embed") for r in rows],
                     "seconds": [r["seconds"] for r in rows]}
    ratio = [f / n for f, n in zip(out["flip"]["align_embed_seconds"], out["no flip"]["align_embed_seconds"])]
    out["align_embed_ratio_flip_over_no_flip"] = [round(r, 2) for r in ratio]
    out["end_to_end_ratio_flip_over_no_flip"] = [round(n / f, 3) for f, n in zip(
        out["flip"]["photos_per_s"], out["no flip"]["photos_per_s"])]
    return out


def dlib_native_throughput(decoded: list, detections: list, pipeline: FacePipeline, limit: int = 256) -> dict:
    """dlib's own compute_face_descriptor on the product's aligned 150 px chips, batched, this CPU."""
    import dlib

    from gallery.faces.align import align_faces
    from gallery.faces.models.dlib_resnet import packaged_weights

    net = dlib.face_recognition_model_v1(str(packaged_weights()))
    template, size = pipeline.spec.template_array(), pipeline.spec.input_size
    chips = [
        c
        for part, dets in zip(decoded, [d for batch in detections for d in batch])
        if dets is not None and len(dets)
        for c in align_faces(
            torch.from_numpy(part.pixels).permute(2, 0, 1), dets.landmarks * part.scale, template, size
        )
    ]
    batch = [np.ascontiguousarray(c.permute(1, 2, 0).numpy()) for c in chips[:limit]]
    net.compute_face_descriptor(batch[:4])
    t0 = time.perf_counter()
    net.compute_face_descriptor(batch)
    seconds = time.perf_counter() - t0
    return {"faces": len(batch), "seconds": seconds, "faces_per_s": len(batch) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos_root", type=Path)
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--model", action="append", help="repeatable; default facenet-untrained")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--compare-dlib", action="store_true")
    parser.add_argument("--detector", action="append", help="repeatable: mtcnn-batched, facenet-mtcnn (default: "
                        "the product's); two or more are compared in interleaved whole-ingest runs")
    parser.add_argument("--runs", type=int, default=1, help="whole-ingest runs per detector when comparing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip-compare", action="store_true",
                        help="whole ingests without and with flip averaging, interleaved --runs times each")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--weights", type=Path, default=None, help="weights file of the (single) --model")
    parser.add_argument("--preset", default=None, help="with --model onnx: the model family's input convention")
    args = parser.parse_args()
    if args.weights is not None and len(args.model or []) != 1:
        sys.exit("--weights goes with exactly one --model")
    if not args.photos_root.is_dir():
        sys.exit(f"No photo folder at {args.photos_root} (expected e.g. ../shared/data/lfw-aj/images).")
    device = resolve_device(args.device).name
    workers = default_workers() if args.workers is None else args.workers
    photos = pick_photos(args.photos_root, args.photos, args.seed)
    if args.flip_compare:
        report = compare_flip(photos, (args.model or ["dlib-resnet"])[0], device, args.batch_size, workers, args.runs)
        print(json.dumps(report, indent=2))
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=2))
        return
    detectors = [detector_kind(d) for d in (args.detector or [None])]
    if len(detectors) > 1:
        comparisons = [compare_detectors(photos, m, device, args.batch_size, workers, detectors, args.runs)
                       for m in (args.model or ["facenet-untrained"])]
        runs = [r for c in comparisons for r in c["detectors"].values()]
    else:
        comparisons = []
        runs = [
            bench_model(photos, m, device, args.batch_size, workers, args.compare_dlib, detectors[0],
                        weights=args.weights, preset=args.preset)
            for m in (args.model or ["facenet-untrained"])
        ]
    report = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        },
        "workers": workers,
        "runs": runs,
        "note": "shared machine: other jobs ran at the same time",
    }
    print(f"{'model':<18} {'detector':<14} {'stage':<12} {'photos/s':>9} {'faces/s':>9} {'seconds':>8}")
    for r in runs:
        label = f"{r['model']:<18} {r['detector']:<14}"
        for name, st in r["stages_alone"].items():
            faces_s = st.get("faces_per_s", float("nan"))
            print(f"{label} {name:<12} {st['photos_per_s']:>9.1f} {faces_s:>9.1f} {st['seconds']:>8.2f}")
        e = r["end_to_end"]
        print(
            f"{label} {'END-TO-END':<12} {e['photos_per_s']:>9.1f} {e['faces_per_s']:>9.1f} "
            f"{e['seconds']:>8.2f}  ({e['fraction_of_slowest_stage']:.0%} of slowest stage)"
        )
        if "end_to_end_photos_per_s" in r:
            m = r["end_to_end_photos_per_s"]
            print(f"{label} {'END-TO-END':<12} photos/s min/median/max {m['min']:.1f}/{m['median']:.1f}/"
                  f"{m['max']:.1f} over {len(r['end_to_end_runs'])} interleaved runs")
        if "dlib_native" in r:
            d = r["dlib_native"]
            print(f"{'dlib (native)':<18} {'embed':<12} {'':>9} {d['faces_per_s']:>9.1f} {d['seconds']:>8.2f}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
