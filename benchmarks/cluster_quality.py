"""Clustering quality on real faces and clustering time at scale, through the product's own code.

quality: an LFW A–J gallery ingested by the product (labels are not used: the truth is each photo's
    folder), its faces clustered with every method and setting on the product's k-NN graph
    (search.cluster.graph / methods, the functions `gallery cluster` runs), scored on the main faces
    (the labeled person of each photo) with pairwise and BCubed precision/recall/F together. References:
    exact average linkage over all pairs (scipy) and dlib's Chinese whispers (face_recognition's recipe).
    Then one end-to-end `cluster_gallery` run at the model's default setting on a copy of the gallery,
    restricted to the same faces through its `exclude` argument, scored the same way (what a user gets).

    The protocol (so that one person with hundreds of photos cannot dominate pairwise scores, and so
    that the setting is checked on people it was not tuned on):
    --cap N     at most N photos per person: a person's photos ranked by sha256("SEED:FILE NAME"), the
                first N kept (every face of a kept photo is clustered; its main face is scored);
    --half H    only the people whose sha256("SEED:FOLDER NAME"), first 8 bytes as a big-endian
                integer, is H modulo 2 (0: the tuning half, 1: the held-out half; all: everyone);
    --seed S    the seed of both (default 0); --photo-seed P redraws only the photos (same halves).
    Faces below the quality gate are left out of every method, as `gallery cluster` leaves them out (a
    main face below it is scored as a face of its own); --include-low-quality clusters them too.

    python benchmarks/cluster_quality.py quality --gallery /tmp/lfwg --cap 6 --half 1 --output q.json

scale: synthetic galleries (benchmarks/synthetic.py, labeled by their identities) of 100k and 1M
    faces, each clustered from scratch by `cluster_gallery` in a child process (wall time, peak RSS),
    then 1% new faces of the same people appended and clustered incrementally (the gallery's index
    built first, as `gallery index build` would leave it).

    python benchmarks/cluster_quality.py scale --sizes 100000,1000000 --work /tmp/clbench --output cluster_scale.json
"""

from __future__ import annotations

import argparse
import hashlib
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

from gallery.device import apply_process_defaults  # noqa: E402

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

from gallery.store import Gallery  # noqa: E402
from search.cluster.graph import knn_graph  # noqa: E402
from search.cluster.methods import core_points, single_link  # noqa: E402
from search.cluster.metrics import score_clustering  # noqa: E402
from search.cluster.run import cluster_gallery, cluster_labels, vectors_of  # noqa: E402
from search.cluster.settings import MODEL_DEFAULTS, ClusterSettings, defaults_key  # noqa: E402


def _grid(values: list[float]) -> list[float]:
    return [round(float(v), 4) for v in values]


AVERAGE_THRESHOLDS = [0.92, 0.925, 0.93, 0.935, 0.94, 0.945, 0.95]
FLOORS = [None, 0.91, 0.915, 0.92, 0.925, 0.93]
LINK_THRESHOLDS = [0.93, 0.94, 0.945, 0.95, 0.955, 0.96, 0.97]
# the size-aware rule with the consistency check: (threshold, floor) x cohesion gap x join gap
CONSISTENT_SETTINGS = [(0.94, 0.93), (0.9425, 0.925), (0.9425, 0.9275), (0.9425, 0.93), (0.945, 0.9275),
                       (0.945, 0.93), (0.9475, 0.9275), (0.9475, 0.93), (0.9475, 0.9325), (0.95, 0.93), (0.95, 0.9325)]
COHESION_GAPS = [0.008, 0.012, 0.016, 0.02]
JOIN_GAPS = [0.018, 0.022, 0.026, 0.03, 0.034]
# the crowd check (second pass): at (threshold, floor), crowd k x single-face margin x large-cluster drop
CROWD_SETTINGS = [(0.945, 0.925)]
CROWD_KS = [3, 5, 7]
CROWD_MARGINS = [0.0075, 0.01, 0.0125]
CROWD_LARGE_DROPS = [0.015, 0.02, 0.025]  # crowd_margin_large = crowd_margin - this
EXACT_THRESHOLDS = _grid(list(np.arange(0.92, 0.9501, 0.0025)))
WHISPERS_THRESHOLDS = [0.94, 0.945, 0.95, 0.955, 0.96]
PREVIOUS_DEFAULT = ClusterSettings(threshold=0.94, floor=0.925)  # the default before the consistency check
# the default before the crowd check (size-aware threshold and consistency check)
BEFORE_CROWD = ClusterSettings(threshold=0.9475, floor=0.93, cohesion_gap=0.016, join_gap=0.026)
SETTING_KEYS = ("threshold", "floor", "cohesion_gap", "join_gap", "crowd_k", "crowd_margin", "crowd_margin_large")


def _truth(g: Gallery) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Live face ids (sorted), each face's person (its photo's folder), whether it is the main face and
    its photo's file name."""
    from sqlalchemy import select

    from gallery.store.schema import Face

    faces = g.clustering_faces().face_ids
    records = g.face_records(faces.tolist())
    with g.session() as s:
        main = dict(s.execute(select(Face.face_id, Face.is_main)).all())
    photos = [Path(records[int(f)].photo) for f in faces]
    person = np.array([p.parent.name for p in photos])
    is_main = np.array([bool(main[int(f)]) for f in faces])
    return faces, person, is_main, np.array([p.name for p in photos])


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def protocol_faces(person: np.ndarray, is_main: np.ndarray, photo: np.ndarray, cap: int | None,
                   half: int | None, seed: int = 0, photo_seed: int | None = None) -> np.ndarray:
    """Boolean mask of the faces a protocol clusters (module docstring: --cap, --half, --seed)."""
    people = {p for p in np.unique(person[is_main]) if half is None or _hash(f"{seed}:{p}") % 2 == half}
    photos: dict[str, set[str]] = {}
    for p, name, main in zip(person.tolist(), photo.tolist(), is_main.tolist()):
        if main and p in people:
            photos.setdefault(p, set()).add(name)
    kept: set[tuple[str, str]] = set()
    for p, names in photos.items():
        ranked = sorted(names, key=lambda name: _hash(f"{seed if photo_seed is None else photo_seed}:{name}"))
        kept.update((p, name) for name in (ranked if cap is None else ranked[:cap]))
    return np.array([(p, name) in kept for p, name in zip(person.tolist(), photo.tolist())], bool)


def _row(method: str, setting: dict, labels: np.ndarray, truth: np.ndarray, main: np.ndarray,
         seconds: float) -> dict[str, Any]:
    scores = score_clustering(labels[main], truth[main]).as_dict()
    return {"method": method, **setting, **scores, "seconds": round(seconds, 3)}


def _print(row: dict[str, Any]) -> None:
    keys = (*SETTING_KEYS, "min_neighbours")
    setting = " ".join(f"{k}={row[k]}" for k in keys if row.get(k) is not None)
    print(f"{row['method']:20s} {setting:110s} pP {row['pairwise_precision']:.3f} pR {row['pairwise_recall']:.3f} "
          f"pF {row['pairwise_f']:.3f} | bP {row['bcubed_precision']:.3f} bR {row['bcubed_recall']:.3f} "
          f"bF {row['bcubed_f']:.3f} | clusters {row['clusters']} single {row['singleton_rate']:.3f}", flush=True)


def _doubtful_marks(x: np.ndarray, graph: Any, truth: np.ndarray, main: np.ndarray,
                    settings: ClusterSettings) -> dict[str, Any]:
    """How well review's marks (search.cluster.outliers, as `clusters show` computes them) find the faces
    that are not their cluster's person (its most common one, among main faces) at `settings`."""
    from collections import Counter

    from search.cluster.outliers import outlyingness

    labels = cluster_labels(x, graph, settings)
    stricter = settings.stricter()
    counts = Counter()
    order = np.argsort(labels, kind="stable")
    for members in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
        scored = main[members]
        if members.size < 2 or not scored.any():
            continue
        found = outlyingness(x[members], stricter)
        person = Counter(truth[members][scored].tolist()).most_common(1)[0][0]
        wrong = scored & (truth[members] != person)
        right = scored & ~wrong
        counts["intruders"] += int(wrong.sum())
        counts["intruders_marked"] += int((wrong & found.doubtful).sum())
        counts["members"] += int(right.sum())
        counts["members_marked"] += int((right & found.doubtful).sum())
        # shown first: of a cluster's k intruders, how many are among its first k faces in review order
        counts["intruders_in_first"] += int(wrong[found.order()[:int(wrong.sum())]].sum())
    result = dict(counts)
    for key in ("intruders", "members"):
        result[f"{key}_marked_share"] = round(counts[f"{key}_marked"] / counts[key], 4) if counts[key] else None
    print(f"review marks at the default: {counts['intruders_marked']} of {counts['intruders']} faces that are not "
          f"their cluster's person marked, {counts['members_marked']} of {counts['members']} that are; "
          f"{counts['intruders_in_first']} intruders among their clusters' first faces", flush=True)
    return result


def quality(gallery: Path, k: int, faces_scope: str, work: Path, cap: int | None = None, half: int | None = None,
            seed: int = 0, sweep: bool = True, include_low_quality: bool = False,
            photo_seed: int | None = None) -> dict[str, Any]:
    with Gallery.open(gallery) as g:
        model = (g.model_stamp or {}).get("name")
        key = defaults_key(g.model_stamp)  # the default `gallery cluster` uses (flip or not)
        dim = int((g.model_stamp or {})["dim"])
        all_ids, all_truth, all_main, all_photo = _truth(g)
        all_x = vectors_of(g, all_ids, dim)
        low = g.clustering_faces().low_quality
    all_low = np.zeros(all_ids.size, bool) if low is None or include_low_quality else np.asarray(low, bool)
    chosen = protocol_faces(all_truth, all_main, all_photo, cap, half, seed, photo_seed)
    if faces_scope == "main":
        chosen &= all_main
    face_ids, truth, main = all_ids[chosen], all_truth[chosen], all_main[chosen]
    # as the product does, faces below the quality gate join no cluster (unless --include-low-quality):
    # every method clusters the gate's faces only; a main face below it is scored as a face of its own
    in_run = ~all_low[chosen]
    x = all_x[chosen][in_run]
    gate = "quality gate off" if include_low_quality else f"{int((~in_run).sum()):,} below the quality gate left out"
    print(f"{int(chosen.sum()):,} faces chosen, {int(in_run.sum()):,} clustered ({gate}"
          f"), {int(main.sum()):,} main faces of {np.unique(truth[main]).size:,} people scored "
          f"({int((main & ~in_run).sum()):,} of them below the gate) (cap {cap}, half {half}, seed {seed})", flush=True)

    def whole(labels: np.ndarray) -> np.ndarray:
        """Labels of the clustered faces spread over all chosen faces; a face left out is alone."""
        labels = np.asarray(labels, np.int64)
        out = np.arange(main.size, dtype=np.int64) + (int(labels.max()) + 1 if labels.size else 0)
        out[in_run] = labels
        return out

    default = MODEL_DEFAULTS.get(key)
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        _print(row)

    t = time.perf_counter()
    graph = knn_graph(x, k)
    graph_seconds = time.perf_counter() - t

    def average(name: str, settings: ClusterSettings) -> None:
        started = time.perf_counter()
        labels = cluster_labels(x, graph, settings)
        add(_row(name, {key: getattr(settings, key) for key in SETTING_KEYS},
                 whole(labels), truth, main, time.perf_counter() - started))

    if default is not None:
        average("default", default)
    average("no crowd check (before)", BEFORE_CROWD)
    average("size-aware (before)", PREVIOUS_DEFAULT)
    if sweep:
        for th in AVERAGE_THRESHOLDS:
            for fl in FLOORS:
                if fl is None or fl < th:
                    average("average (k-NN)" if fl is None else "size-aware",
                            ClusterSettings(threshold=th, floor=th if fl is None else fl))
        for th, fl in CONSISTENT_SETTINGS:
            for gap in COHESION_GAPS:
                for join in JOIN_GAPS:
                    average("consistent", ClusterSettings(threshold=th, floor=fl, cohesion_gap=gap, join_gap=join))
        for th, fl in CROWD_SETTINGS:
            for crowd_k in CROWD_KS:
                for margin in CROWD_MARGINS:
                    for drop in CROWD_LARGE_DROPS:
                        average("crowd", ClusterSettings(threshold=th, floor=fl, cohesion_gap=0.016, join_gap=0.026,
                                                         crowd_k=crowd_k, crowd_margin=margin,
                                                         crowd_margin_large=round(margin - drop, 4)))
        for th in LINK_THRESHOLDS:
            t = time.perf_counter()
            add(_row("single-link", {"threshold": th}, whole(single_link(graph, th)), truth, main,
                     time.perf_counter() - t))
            for mp in (2, 3, 5):
                t = time.perf_counter()
                add(_row("core points", {"threshold": th, "min_neighbours": mp}, whole(core_points(graph, th, mp)),
                         truth, main, time.perf_counter() - t))
    # references
    from scipy.cluster.hierarchy import fcluster, linkage

    t = time.perf_counter()
    tree = linkage(x.astype(np.float64), "average", metric="cosine")
    tree_seconds = time.perf_counter() - t
    for th in EXACT_THRESHOLDS:
        add(_row("exact average", {"threshold": th}, whole(fcluster(tree, 1 - th, "distance")), truth, main,
                 tree_seconds))
    try:
        import dlib

        vectors = [dlib.vector(v.astype(np.float64).tolist()) for v in x]
        for th in WHISPERS_THRESHOLDS:
            t = time.perf_counter()
            labels = np.asarray(dlib.chinese_whispers_clustering(vectors, float(np.sqrt(2 - 2 * th))))
            add(_row("chinese whispers", {"threshold": th}, whole(labels), truth, main, time.perf_counter() - t))
    except ImportError:
        print("dlib is not installed: Chinese whispers not measured (pip install dlib-bin)")
    # what a user gets: the product command end to end, default setting, on a copy of the gallery, the
    # faces outside the protocol left out through cluster_gallery's `exclude`
    copy = work / "gallery"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(gallery, copy)
    left_out = set(all_ids[~chosen].tolist())
    report = cluster_gallery(copy, rebuild=True, include_labeled=True, include_low_quality=include_low_quality,
                             exclude=left_out)
    with Gallery.open(copy) as g:
        state = g.clustering_faces()
        ids, person, is_main, _ = _truth(g)
    scored = np.isin(ids, face_ids) & is_main
    labels = np.where(state.cluster_ids >= 0, state.cluster_ids, -1 - np.arange(state.cluster_ids.size))
    product = _row("gallery cluster", {key: getattr(report, key) for key in SETTING_KEYS},
                   labels, person, scored, report.seconds)
    _print(product)
    shutil.rmtree(copy)

    def best(method: str, key: str) -> dict[str, Any]:
        return max((r for r in rows if r["method"] == method), key=lambda r: r[key])

    marks = _doubtful_marks(x, graph, truth[in_run], main[in_run], default) if default is not None else None
    exact_best = best("exact average", "bcubed_f")
    verdict = {"pairwise_precision_at_least_0.95": product["pairwise_precision"] >= 0.95,
               "bcubed_f_not_below_exact_average_best": product["bcubed_f"] >= exact_best["bcubed_f"],
               "exact_average_best_bcubed_f": exact_best["bcubed_f"]}
    print(f"gallery cluster: pairwise P {product['pairwise_precision']:.3f} (>= 0.95: "
          f"{verdict['pairwise_precision_at_least_0.95']}), BCubed F {product['bcubed_f']:.3f} vs exact average "
          f"linkage's best {exact_best['bcubed_f']:.3f} at {exact_best['threshold']} (not below: "
          f"{verdict['bcubed_f_not_below_exact_average_best']})", flush=True)
    return {
        "gallery": str(gallery), "model": model, "k": k,
        "protocol": {"cap": cap, "half": half, "seed": seed, "photo_seed": photo_seed, "faces": faces_scope,
                     "quality_gate": not include_low_quality},
        "faces_chosen": int(face_ids.size), "faces_clustered": int(in_run.sum()),
        "faces_below_gate": int((~in_run).sum()), "faces_scored": int(main.sum()),
        "main_faces_below_gate": int((main & ~in_run).sum()),
        "people": int(np.unique(truth[main]).size), "graph_seconds": round(graph_seconds, 3),
        "default": default.as_dict() if default else None, "product": product, "verdict": verdict,
        "doubtful_marks": marks,
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
        checks = json.loads(argv[4]) if len(argv) > 4 else {}  # the consistency and crowd checks' settings
        report = cluster_gallery(root, rebuild=True, include_labeled=True, threshold=threshold, floor=floor,
                                 **checks).as_dict()
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
          checks: dict[str, Any] | None = None, keep: bool = False) -> dict[str, Any]:
    from benchmarks.synthetic import (
        SyntheticFaces,
        append_embedded_faces,
        ensure_synthetic_gallery,
        fitted_spec,
        identity_name,
    )
    from indexer.build import build_index

    checks = {key: value for key, value in (checks or {}).items() if value is not None}
    runs = []
    for n in sizes:
        spec = fitted_spec(n, dim)
        root = work / f"synthetic-{n}-{dim}"
        if root.exists():
            shutil.rmtree(root)  # the incremental step changed it: start from the generator again
        made = ensure_synthetic_gallery(root, spec)
        th = threshold
        print(f"{n:,} faces: generated in {made.get('seconds')} s; clustering at threshold {th}", flush=True)
        full = _child(["full", str(root), str(th), str(th - floor_gap), json.dumps(checks)])
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
        runs.append({"faces": n, "dim": dim, "threshold": th, "floor": th - floor_gap, **checks, "full": full,
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
    q.add_argument("--cap", type=int, default=0, help="at most this many photos per person (0: all)")
    q.add_argument("--half", choices=("all", "0", "1"), default="all",
                   help="the people of one half (0: tuning, 1: held out) or all")
    q.add_argument("--seed", type=int, default=0, help="seed of the photo ranking and of the halves")
    q.add_argument("--photo-seed", type=int, default=None,
                   help="another draw of the photos with the same halves (default: --seed)")
    q.add_argument("--include-low-quality", action="store_true",
                   help="cluster the faces below the quality gate too (the product leaves them out by default)")
    q.add_argument("--no-sweep", dest="sweep", action="store_false",
                   help="only the default, the references and the end-to-end run (no setting sweep)")
    s = sub.add_parser("scale", help="time and memory on synthetic galleries, full and incremental")
    s.add_argument("--sizes", default="100000,1000000")
    s.add_argument("--dim", type=int, default=128)
    s.add_argument("--threshold", type=float, default=MODEL_DEFAULTS["dlib-resnet"].threshold,
                   help="default: the product's setting for dlib-resnet, the model the 128-d generator is fitted to")
    s.add_argument("--floor-gap", type=float, default=round(MODEL_DEFAULTS["dlib-resnet"].threshold
                                                            - MODEL_DEFAULTS["dlib-resnet"].floor, 4),
                   help="floor = threshold - this")
    s.add_argument("--cohesion-gap", type=float, default=MODEL_DEFAULTS["dlib-resnet"].cohesion_gap,
                   help="the consistency check's gap between clusters (default: the dlib-resnet setting)")
    s.add_argument("--join-gap", type=float, default=MODEL_DEFAULTS["dlib-resnet"].join_gap,
                   help="its gap for a small group joining a cluster")
    s.add_argument("--crowd-k", type=int, default=MODEL_DEFAULTS["dlib-resnet"].crowd_k,
                   help="the crowd check's neighbour (0: no crowd check; default: the dlib-resnet setting)")
    s.add_argument("--crowd-margin", type=float, default=MODEL_DEFAULTS["dlib-resnet"].crowd_margin)
    s.add_argument("--crowd-margin-large", type=float, default=MODEL_DEFAULTS["dlib-resnet"].crowd_margin_large)
    s.add_argument("--work", type=Path, default=Path("/tmp/cluster_scale"))
    s.add_argument("--keep", action="store_true", help="keep the last synthetic gallery (to look at it)")
    for p in (q, s):
        p.add_argument("--output", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.what == "quality":
        result = quality(args.gallery, args.k, args.faces, args.work, cap=args.cap or None,
                         half=None if args.half == "all" else int(args.half), seed=args.seed, sweep=args.sweep,
                         include_low_quality=args.include_low_quality, photo_seed=args.photo_seed)
    else:
        checks = {"cohesion_gap": args.cohesion_gap, "join_gap": args.join_gap, "crowd_k": args.crowd_k,
                  "crowd_margin": args.crowd_margin, "crowd_margin_large": args.crowd_margin_large}
        result = scale([int(v) for v in args.sizes.split(",")], args.work, args.dim, args.threshold, args.floor_gap,
                       checks, args.keep)
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
