"""Throughput of the new formats through the product's own ingest: HEIC photos against the same photos
as JPEG, and videos (seconds of video ingested per second, faces and tracks found).

Photos: N seeded LFW photos, written once as JPEG (copies of the originals) and once as HEIC (by
pillow-heif, quality 90), each set ingested end to end into a fresh gallery (`gallery.ingest.ingest`,
default workers), interleaved over `--runs`, after a warm-up ingest; the rate leaves out the model
load. A decode-only figure (`decode_photo` in this process, one core) separates the decoder's cost
from detection and embedding.

Videos: made-up videos of LFW faces (tests/helpers/videos.py: faces drifting over a background, one
scene cut between two people), `--videos` of them, `--seconds` long each, ingested into a fresh gallery.

    python benchmarks/formats_throughput.py ../shared/data/lfw-aj/images --photos 200 --videos 3 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gallery.device import apply_process_defaults

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

from gallery.faces.decode import decode_photo  # noqa: E402
from gallery.faces.formats import heif_available  # noqa: E402
from gallery.ingest import ingest  # noqa: E402


def _photo_sets(images: Path, n: int, seed: int, work: Path) -> dict[str, Path]:
    from PIL import Image

    paths = sorted(images.rglob("*.jpg"))
    random.Random(seed).shuffle(paths)
    heif_available()
    sets = {"jpeg": work / "jpeg", "heic": work / "heic"}
    for folder in sets.values():
        folder.mkdir(parents=True)
    for p in paths[:n]:
        (sets["jpeg"] / p.parent.name).mkdir(exist_ok=True)
        (sets["heic"] / p.parent.name).mkdir(exist_ok=True)
        shutil.copyfile(p, sets["jpeg"] / p.parent.name / p.name)
        Image.open(p).save(sets["heic"] / p.parent.name / (p.stem + ".heic"), format="HEIF", quality=90)
    return sets


def _decode_rate(folder: Path) -> float:
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    t0 = time.perf_counter()
    for f in files:
        assert decode_photo(str(f), 0, 0).ok
    return len(files) / (time.perf_counter() - t0)


def _videos(images: Path, n: int, seconds: float, seed: int, work: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.videos import write_video

    people = sorted(p for p in images.iterdir() if p.is_dir())
    rng = random.Random(seed)
    folder = work / "videos"
    for i in range(n):
        a, b = rng.sample(people, 2)
        (folder / a.name).mkdir(parents=True, exist_ok=True)
        first = seconds * 0.6
        write_video(folder / a.name / f"clip{i}.mp4", [(sorted(a.glob("*.jpg"))[0], first, (40, 80, 40)),
                                                       (sorted(b.glob("*.jpg"))[0], seconds - first, (80, 40, 120))])
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", type=Path)
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    report: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = _photo_sets(args.images, args.photos, args.seed, work)
        report["bytes"] = {k: sum(f.stat().st_size for f in v.rglob("*") if f.is_file()) for k, v in sets.items()}
        report["decode_photos_per_s_one_core"] = {k: round(_decode_rate(v), 1) for k, v in sets.items()}
        warm = work / "warm"
        warm.mkdir()
        for f in sorted(sets["jpeg"].rglob("*.jpg"))[:2]:
            shutil.copyfile(f, warm / f.name)
        ingest(warm, work / "g-warm", labels="none")  # imports, weights from disk into the page cache
        rates: dict[str, list[float]] = {"jpeg": [], "heic": []}
        faces: dict[str, int] = {}
        for run in range(args.runs):
            for kind, folder in sets.items():
                gallery = work / f"g-{kind}-{run}"
                s = ingest(folder, gallery, labels="folder")
                # the model load (the same for both, a second or two) is left out of the rate
                rates[kind].append(s.photos / (s.seconds - s.stage_seconds.get("load_models", 0.0)))
                faces[kind] = s.faces
                shutil.rmtree(gallery)
        report["ingest_photos_per_s"] = {k: {"runs": [round(r, 2) for r in v], "median": round(statistics.median(v), 2)}
                                         for k, v in rates.items()}
        report["faces"] = faces
        videos = _videos(args.images, args.videos, args.seconds, args.seed, work)
        t0 = time.perf_counter()
        s = ingest(videos, work / "g-video", labels="folder")
        wall = time.perf_counter() - t0
        report["video"] = {"videos": s.videos, "video_seconds": s.video_seconds, "wall_s": round(wall, 2),
                           "video_seconds_per_s": round(s.video_seconds / wall, 2), "sampled_frames": s.video_frames,
                           "frames_per_s": round(s.video_frames / wall, 2), "tracks": s.video_tracks,
                           "faces_stored": s.faces, "labeled_faces": s.labeled_faces}
    report["load_after"] = os.getloadavg()
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
