"""Clustering quality on real faces and clustering time at scale, through the product's own code.

quality: an LFW A–J gallery ingested by the product (labels are not used: the truth is each photo's
    folder), its faces clustered with every method and setting on the product's k-NN graph
    (search.cluster.graph / methods, the functions `gallery cluster` runs), scored on the main faces
    (the labeled person of each photo) with pairwise and BCubed precision/recall/F. References: exact
    average linkage over all pairs (scipy) and dlib's Chinese whispers (face_recognition's recipe).
    Then one end-to-end `cluster_gallery` run at the default setting on a copy of the gallery, scored
    the same way (what a user gets).

    python benchmarks/cluster_quality.py quality --gallery /tmp/lfwg --output cluster_quality.json

scale: synthetic galleries (benchmarks/synthetic.py, labeled by their identities) of 100k and 1M
    faces, each clustered from scratch by `cluster_gallery` in a child process (wall time, peak RSS),
    then 1% new faces of the same people appended and clustered incrementally (the gallery's index
    built first, as `gallery index build` would leave it).

    python benchmarks/cluster_quality.py scale --sizes 100000,1000000 --work /tmp/clbench --output cluster_scale.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gallery.store import Gallery  # noqa: E402
from search.cluster.graph import knn_graph  # noqa: E402
from search.cluster.methods import average_link, core_points, single_link  # noqa: E402
from search.cluster.metrics import score_clustering  # noqa: E402
from search.cluster.run import cluster_gallery, vectors_of  # noqa: E402
from search.cluster.settings import MODEL_DEFAULTS  # noqa: E402

AVERAGE_THRESHOLDS = [0.92, 0.925, 0.93, 0.935, 0.94, 0.945, 0.95]
FLOORS = [None, 0.91, 0.915, 0.92, 0.925, 0.93]
LINK_THRESHOLDS = [0.93, 0.94, 0.945, 0.95, 0.955, 0.96, 0.97]


def _truth(g: Gallery) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Live face ids (sorted), each face's person (its photo's folder) and whether it is the main face."""
    from sqlalchemy import select

    from gallery.store.schema import Face

    faces = g.clustering_faces().face_ids
    records = g.face_records(faces.tolist())
    with g.session() as s:
        main = dict(s.execute(select(Face.face_id, Face.is_main)).all())
    person = np.array([Path(records[int(f)].photo).parent.name for f in faces])
    is_main = np.array([bool(main[int(f)]) for f in faces])
    return faces, person, is_main


def _row(method: str, setting: dict, labels: np.ndarray, truth: np.ndarray, main: np.ndarray,
         seconds: float) -> dict[str, Any]:
    scores = score_clustering(labels[main], truth[main]).as_dict()
    return {"method": method, **setting, **scores, "seconds": round(seconds, 3)}


def _print(row: dict[str, Any]) -> None:
    setting = " ".join(f"{k}={row[k]}" for k in ("threshold", "floor", "min_neighbours") if row.get(k) is not None)
    print(f"{row['method']:18s} {setting:32s} pP {row['pairwise_precision']:.3f} pR {row['pairwise_recall']:.3f} "
          f"pF {row['pairwise_f']:.3f} | bP {row['bcubed_precision']:.3f} bR {row['bcubed_recall']:.3f} "
          f"bF {row['bcubed_f']:.3f} | clusters {row['clusters']} single {row['singleton_rate']:.3f}", flush=True)


def quality(gallery: Path, k: int, faces_scope: str, work: Path) -> dict[str, Any]:
    with Gallery.open(gallery) as g:
        model = (g.model_stamp or {}).get("name")
        dim = int((g.model_stamp or {})["dim"])
        face_ids, truth, main = _truth(g)
        x = vectors_of(g, face_ids, dim)
    if faces_scope == "main":
        face_ids, truth, x, main = face_ids[main], truth[main], x[main], np.ones(int(main.sum()), bool)
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        _print(row)

    t = time.perf_counter()
    graph = knn_graph(x, k)
    graph_seconds = time.perf_counter() - t
    for th in AVERAGE_THRESHOLDS:
        for fl in FLOORS:
            if fl is not None and fl >= th:
                continue
            t = time.perf_counter()
            labels = average_link(x, graph, th, floor=fl)
            name = "average (k-NN)" if fl is None else "average size-aware"
            add(_row(name, {"threshold": th, "floor": fl}, labels, truth, main, time.perf_counter() - t))
    for th in LINK_THRESHOLDS:
        t = time.perf_counter()
        add(_row("single-link", {"threshold": th}, single_link(graph, th), truth, main, time.perf_counter() - t))
        for mp in (2, 3, 5):
            t = time.perf_counter()
            add(_row("core points", {"threshold": th, "min_neighbours": mp}, core_points(graph, th, mp), truth,
                     main, time.perf_counter() - t))
    # references
    from scipy.cluster.hierarchy import fcluster, linkage

    t = time.perf_counter()
    tree = linkage(x.astype(np.float64), "average", metric="cosine")
    tree_seconds = time.perf_counter() - t
    for th in AVERAGE_THRESHOLDS:
        add(_row("exact average", {"threshold": th}, fcluster(tree, 1 - th, "distance"), truth, main, tree_seconds))
    try:
        import dlib

        vectors = [dlib.vector(v.astype(np.float64).tolist()) for v in x]
        for th in LINK_THRESHOLDS:
            t = time.perf_counter()
            labels = np.asarray(dlib.chinese_whispers_clustering(vectors, float(np.sqrt(2 - 2 * th))))
            add(_row("chinese whispers", {"threshold": th}, labels, truth, main, time.perf_counter() - t))
    except ImportError:
        print("dlib is not installed: Chinese whispers not measured (pip install dlib-bin)")
    # what a user gets: the product command end to end, default setting, on a copy of the gallery
    copy = work / "gallery"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(gallery, copy)
    report = cluster_gallery(copy, rebuild=True, include_labeled=True)
    with Gallery.open(copy) as g:
        state = g.clustering_faces()
        ids, person, is_main = _truth(g)
    labels = np.where(state.cluster_ids >= 0, state.cluster_ids, -1 - np.arange(state.cluster_ids.size))
    product = _row("gallery cluster", {"threshold": report.threshold, "floor": report.floor}, labels, person,
                   is_main, report.seconds)
    _print(product)
    shutil.rmtree(copy)

    def best(method: str, key: str) -> dict[str, Any]:
        return max((r for r in rows if r["method"] == method), key=lambda r: r[key])

    return {
        "gallery": str(gallery), "model": model, "k": k, "faces_clustered": int(face_ids.size),
        "faces_scored": int(main.sum()), "people": int(np.unique(truth[main]).size),
        "graph_seconds": round(graph_seconds, 3), "default": MODEL_DEFAULTS[model].as_dict() if model in MODEL_DEFAULTS
        else None, "product": product,
        "best": {m: {"pairwise_f": best(m, "pairwise_f"), "bcubed_f": best(m, "bcubed_f")}
                 for m in sorted({r["method"] for r in rows})},
        "rows": rows,
    }


# --- scale ---------------------------------------------------------------------------------------

def _child(argv: list[str]) -> dict[str, Any]:
    """Run one step in a child process: its own peak RSS is then measured alone."""
    cmd = [sys.executable, __file__, "_step", *argv]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"step {argv} failed:\n{done.stdout}\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    return result


def _step(argv: list[str]) -> None:
    import resource

    what, root = argv[0], Path(argv[1])
    if what == "full":
        threshold, floor = float(argv[2]), float(argv[3])
        report = cluster_gallery(root, rebuild=True, include_labeled=True, threshold=threshold, floor=floor).as_dict()
    elif what == "incremental":
        report = cluster_gallery(root).as_dict()
    else:
        raise SystemExit(f"unknown step {what}")
    report["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    print(json.dumps(report))


def _score_synthetic(root: Path) -> dict[str, Any]:
    with Gallery.open(root) as g:
        state = g.clustering_faces()
        faces = g.live_faces()
    assert np.array_equal(faces.face_ids, state.face_ids)
    labels = np.where(state.cluster_ids >= 0, state.cluster_ids, -1 - np.arange(state.cluster_ids.size))
    return score_clustering(labels, np.asarray(faces.identities)).as_dict()


def scale(sizes: list[int], work: Path, dim: int, threshold: float, floor_gap: float,
          keep: bool = False) -> dict[str, Any]:
    from benchmarks.synthetic import (
        SyntheticFaces,
        append_embedded_faces,
        ensure_synthetic_gallery,
        fitted_spec,
        identity_name,
    )
    from indexer.build import build_index

    runs = []
    for n in sizes:
        spec = fitted_spec(n, dim)
        root = work / f"synthetic-{n}-{dim}"
        if root.exists():
            shutil.rmtree(root)  # the incremental step changed it: start from the generator again
        made = ensure_synthetic_gallery(root, spec)
        th = threshold
        print(f"{n:,} faces: generated in {made.get('seconds')} s; clustering at threshold {th}", flush=True)
        full = _child(["full", str(root), str(th), str(th - floor_gap)])
        full["scores"] = _score_synthetic(root)
        print(f"  full: {full['seconds']} s, peak RSS {full['peak_rss_gb']} GB, {full['clusters']:,} clusters, "
              f"scores {full['scores']}", flush=True)
        t = time.perf_counter()
        with Gallery.open(root) as g:
            build_index(g)
        index_seconds = round(time.perf_counter() - t, 1)
        new = max(1, n // 100)
        ids, x = SyntheticFaces(spec).queries(new, seed=777)
        with Gallery.open(root) as g:
            append_embedded_faces(g, spec.stamp(), x, identities=[identity_name(int(i)) for i in ids],
                                  photo_prefix="incremental")
        inc = _child(["incremental", str(root)])
        inc["scores"] = _score_synthetic(root)
        print(f"  +{new:,} faces incremental: {inc['seconds']} s ({100 * inc['seconds'] / full['seconds']:.1f}% of "
              f"full), peak RSS {inc['peak_rss_gb']} GB, joined {inc['joined']:,}", flush=True)
        runs.append({"faces": n, "dim": dim, "threshold": th, "floor": th - floor_gap, "full": full,
                     "index_build_seconds": index_seconds, "incremental": inc,
                     "incremental_share": round(inc["seconds"] / full["seconds"], 4)})
        if not keep:
            shutil.rmtree(root)
    return {"runs": runs}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_step":
        _step(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality", help="methods and settings scored on a labeled real gallery")
    q.add_argument("--gallery", type=Path, required=True, help="an LFW A–J gallery ingested by the product")
    q.add_argument("--k", type=int, default=30)
    q.add_argument("--faces", choices=("all", "main"), default="all",
                   help="cluster every face (as the product does) or only the main ones; main faces are scored")
    q.add_argument("--work", type=Path, default=Path("/tmp/cluster_quality"))
    s = sub.add_parser("scale", help="time and memory on synthetic galleries, full and incremental")
    s.add_argument("--sizes", default="100000,1000000")
    s.add_argument("--dim", type=int, default=128)
    s.add_argument("--threshold", type=float, default=MODEL_DEFAULTS["dlib-resnet"].threshold,
                   help="default: the product's setting for dlib-resnet, the model the 128-d generator is fitted to")
    s.add_argument("--floor-gap", type=float, default=round(MODEL_DEFAULTS["dlib-resnet"].threshold
                                                            - MODEL_DEFAULTS["dlib-resnet"].floor, 4),
                   help="floor = threshold - this")
    s.add_argument("--work", type=Path, default=Path("/tmp/cluster_scale"))
    s.add_argument("--keep", action="store_true", help="keep the last synthetic gallery (to look at it)")
    for p in (q, s):
        p.add_argument("--output", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.what == "quality":
        result = quality(args.gallery, args.k, args.faces, args.work)
    else:
        result = scale([int(v) for v in args.sizes.split(",")], args.work, args.dim, args.threshold, args.floor_gap,
                       args.keep)
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
