"""Query latency on a real gallery: end to end for one photo, and k-NN + lookup from an embedding.

Builds (or reuses) a labeled gallery from LFW photos with the offline dlib-resnet model, builds
its index, calibrates it (threshold at FPIR 1%, FNIR and rank-1 reported), then measures:

- open: `Searcher(...)` plus loading the detector and embedder;
- end to end per query photo: decode + detect + align + embed + k-NN + identity lookup (p50/p95);
- k-NN + lookup alone from a stored embedding (p50/p95);
- rank-1 of held-out photos (one per identity with 3+ photos, never ingested).

    python benchmarks/query_latency.py ../shared/data/lfw-aj/images --photos 2000 --output results/query.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gallery.device import apply_process_defaults  # noqa: E402

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

from gallery.ingest import IngestOptions, ingest  # noqa: E402
from gallery.store import is_gallery  # noqa: E402
from indexer import build_index  # noqa: E402
from search import Searcher  # noqa: E402
from search.calibrate import calibrate  # noqa: E402


def split_photos(root: Path, limit: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Gallery photos (whole identities, about `limit` photos) and one held-out query per identity
    with 3+ photos."""
    people = sorted(p for p in root.iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    gallery, queries = [], []
    for i in rng.permutation(len(people)):
        photos = sorted(people[i].glob("*.jpg"))
        if len(photos) >= 3:
            queries.append(photos[-1])
            photos = photos[:-1]
        gallery.extend(photos[:20])  # cap very frequent people so the gallery spans many identities
        if len(gallery) >= limit:
            break
    return gallery, queries


def pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)), "n": len(a)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos_root", type=Path)
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gallery", type=Path, help="reuse or create the gallery here (default: temporary)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if not args.photos_root.is_dir():
        sys.exit(f"No photo folder at {args.photos_root}")
    gallery_photos, query_photos = split_photos(args.photos_root, args.photos, args.seed)
    query_photos = query_photos[: args.queries]
    tmp = tempfile.TemporaryDirectory()
    gdir = args.gallery or Path(tmp.name) / "gallery"
    report: dict = {}
    if not is_gallery(gdir):
        archive = Path(tmp.name) / "archive"
        for p in gallery_photos:
            (archive / p.parent.name).mkdir(parents=True, exist_ok=True)
            (archive / p.parent.name / p.name).symlink_to(p.resolve())
        summary = ingest(archive, gdir, IngestOptions(model="dlib-resnet", device="cpu"))
        report["ingest"] = {k: summary.as_dict()[k] for k in ("photos", "faces", "failed", "photos_per_s")}
        report["index"] = {k: v for k, v in build_index(gdir).items() if k in ("factory", "ntotal", "reason")}

    t0 = time.perf_counter()
    searcher = Searcher(gdir, k=5, device="cpu")
    cal = calibrate(searcher, target_fpir=0.01)
    report["calibration"] = cal.as_dict()
    searcher.close()

    t0 = time.perf_counter()
    searcher = Searcher(gdir, k=5, device="cpu")
    searcher.pipeline  # noqa: B018 - load detector and embedder now, as the first query would
    report["open_s"] = time.perf_counter() - t0

    searcher.search(query_photos[0], largest_only=True)  # warm-up
    e2e, knn, embeddings, hits = [], [], [], 0
    for photo in query_photos:
        t = time.perf_counter()
        found, answers = searcher.search(photo, largest_only=True)
        e2e.append(time.perf_counter() - t)
        if found.ok:
            embeddings.append(found.faces[0].embedding)
            hits += int(answers[0].candidates[0].identity == photo.parent.name) if answers[0].candidates else 0
    for emb in embeddings:
        t = time.perf_counter()
        searcher.search_embeddings(emb[None])
        knn.append(time.perf_counter() - t)
    report["end_to_end"] = pct(e2e)
    report["knn_and_lookup"] = pct(knn)
    report["held_out_rank1"] = hits / max(1, len(embeddings))
    report["threshold"] = searcher.threshold
    searcher.close()
    print(json.dumps(report, indent=2, default=str))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
