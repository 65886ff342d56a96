"""Distributed ingest (Ray Data) against the local ingest, and the single commit that bounds it.

1. throughput: the same photos ingested by the local engine and by `--engine ray` on a local Ray
   started by the product for the run, in paired, interleaved runs (local, ray, local, ray, ...), each
   into a new gallery; photos/s per run and Ray's overhead (ray seconds / local seconds - 1). The Ray
   figure includes starting Ray and its actor (the cost a user pays per run in local mode).
2. commit: the driver's commit rate from staged files alone (faces/s), at a million synthetic faces:
   staged files are written first (untimed; embeddings from benchmarks/synthetic.py's generator, one
   face per photo, identities by folder as LFW), then the product's driver (`RayIngestor`) takes and
   commits them as it takes the files a killed run left: read, triage, shard + SQLite commit. Every
   face of every cluster passes through this one process, so this rate bounds the whole cluster.

    python benchmarks/ray_ingest.py throughput ../shared/data/lfw-aj/images --photos 500 --pairs 2
    python benchmarks/ray_ingest.py commit /tmp/commit-bench --faces 1000000 --per-file 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from gallery.device import apply_process_defaults  # noqa: E402

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

from benchmarks.synthetic import SyntheticFaces, fitted_spec  # noqa: E402
from gallery.faces.models import get_model_spec  # noqa: E402
from gallery.ingest import IngestOptions, ingest  # noqa: E402
from gallery.ingest.distributed import RayIngestor, RayOptions  # noqa: E402
from gallery.ingest.scan import FoundFile  # noqa: E402
from gallery.store import Gallery  # noqa: E402
from gallery.store.staging import StagedPhoto, staging_dir, write_staged  # noqa: E402


def pick_photos(root: Path, n: int, seed: int) -> list[Path]:
    files = sorted(root.rglob("*.jpg"))
    rng = np.random.default_rng(seed)
    return [files[i] for i in sorted(rng.choice(len(files), min(n, len(files)), replace=False))]


def throughput(args: argparse.Namespace) -> dict:
    photos = pick_photos(args.photos_root, args.photos, args.seed)
    options = IngestOptions(model=args.model, device="cpu")
    runs: dict[str, list[dict]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        src = Path(tmp) / "photos"
        for p in photos:
            (src / p.parent.name).mkdir(parents=True, exist_ok=True)
            (src / p.parent.name / p.name).symlink_to(p.resolve())
        for pair in range(args.pairs):
            for engine in ("local", "ray"):
                gallery = Path(tmp) / f"g-{engine}-{pair}"
                t0 = time.perf_counter()
                summary = ingest(src, gallery, options, engine=engine)
                seconds = time.perf_counter() - t0
                shutil.rmtree(gallery)
                runs[engine].append({"seconds": round(seconds, 2), "photos": summary.photos,
                                     "faces": summary.faces, "photos_per_s": round(summary.photos / seconds, 2),
                                     "device": summary.device, "stage_seconds": summary.stage_seconds})
                print(f"pair {pair} {engine:<5} {seconds:7.1f} s  {summary.photos / seconds:6.2f} photos/s  "
                      f"{summary.faces} faces  {summary.stage_seconds}", flush=True)
    med = {e: statistics.median(r["seconds"] for r in rs) for e, rs in runs.items()}
    ratios = [r["seconds"] / lo["seconds"] for lo, r in zip(runs["local"], runs["ray"])]
    return {
        "photos": len(photos), "model": args.model, "pairs": args.pairs, "runs": runs,
        "median_seconds": med,
        "median_photos_per_s": {e: round(len(photos) / s, 2) for e, s in med.items()},
        "ray_over_local": {"min": round(min(ratios), 3), "median": round(statistics.median(ratios), 3),
                           "max": round(max(ratios), 3)},
    }


def stage_synthetic(root: Path, source: Path, faces: int, per_file: int, model: str) -> list[FoundFile]:
    """A new gallery stamped with `model` and `faces` synthetic photos (one face each) staged in files of
    `per_file` photos, as the cluster leaves them; returns the 'scanned' files they stand for."""
    spec = get_model_spec(model)
    gen = SyntheticFaces(fitted_spec(faces, spec.dim))
    folder = staging_dir(root)
    found: list[FoundFile] = []
    box = np.array([[60.0, 70.0, 180.0, 200.0]], np.float32)
    landmarks = np.full((1, 5, 2), 100.0, np.float32)
    with Gallery.open_or_create(root) as g:
        g.stamp_model(spec.stamp())
    for identities, emb in gen.gallery_chunks(100_000):
        for offset in range(0, len(emb), per_file):
            photos = []
            for ident, vec in zip(identities[offset : offset + per_file], emb[offset : offset + per_file]):
                i = len(found)
                path = f"{source}/person_{int(ident):07d}/photo_{i:08d}.jpg"
                found.append(FoundFile(Path(path), 20_000 + i % 1000, 1_700_000_000_000_000_000 + i))
                photos.append(StagedPhoto(path=path, size=found[-1].size, mtime_ns=found[-1].mtime_ns,
                                          sha256=f"{i:064x}", width=250, height=250, main=0, boxes=box,
                                          scores=np.ones(1, np.float32), landmarks=landmarks,
                                          embeddings=vec[None, :]))
            write_staged(folder, f"staged-{len(found):012d}.parquet", photos, spec.stamp())
    return found


def commit(args: argparse.Namespace) -> dict:
    if args.gallery.exists():
        sys.exit(f"{args.gallery} exists: give a new folder (it is deleted afterwards unless --keep)")
    source = args.gallery.parent / "synthetic-photos"  # never read: the staged rows stand for its files
    source.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    found = stage_synthetic(args.gallery, source, args.faces, args.per_file, args.model)
    staged_s = time.perf_counter() - t0
    print(f"staged {len(found):,} photos in {len(found) // args.per_file:,} files ({staged_s:.0f} s, untimed)",
          flush=True)
    try:
        with Gallery.open(args.gallery) as g:
            runner = RayIngestor(source, g, IngestOptions(model=args.model), RayOptions(), scanned=found)
            t0 = time.perf_counter()
            summary = runner.run()
            seconds = time.perf_counter() - t0
            info = g.info()
    finally:
        if not args.keep:
            shutil.rmtree(args.gallery, ignore_errors=True)
        shutil.rmtree(source, ignore_errors=True)
    assert summary.faces == args.faces and runner.staged_reused == args.faces and info.faces == args.faces
    return {
        "faces": summary.faces, "photos_per_staged_file": args.per_file, "model": args.model,
        "identities": info.identities, "shards": info.shards, "commit_seconds": round(seconds, 1),
        "faces_per_s": round(summary.faces / seconds), "stage_seconds": summary.stage_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    t = sub.add_parser("throughput", help="local vs --engine ray (local mode), paired runs")
    t.add_argument("photos_root", type=Path)
    t.add_argument("--photos", type=int, default=500)
    t.add_argument("--pairs", type=int, default=2)
    t.add_argument("--model", default="dlib-resnet")
    t.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("commit", help="the driver's commit rate from staged files")
    c.add_argument("gallery", type=Path, help="a new folder for the benchmark gallery")
    c.add_argument("--faces", type=int, default=1_000_000)
    c.add_argument("--per-file", type=int, default=32,
                   help="photos per staged file: the actor batch, --batch-size (default 32)")
    c.add_argument("--model", default="dlib-resnet")
    c.add_argument("--keep", action="store_true")
    for p in (t, c):
        p.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.part == "throughput" and not args.photos_root.is_dir():
        sys.exit(f"No photo folder at {args.photos_root} (expected e.g. ../shared/data/lfw-aj/images).")
    result = throughput(args) if args.part == "throughput" else commit(args)
    result["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                         "note": "shared with other jobs while measured"}
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
