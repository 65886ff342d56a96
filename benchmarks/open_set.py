"""Open-set identification: how often a never-enrolled person is named, and the conservative default.

From a labeled gallery ingested by the product (e.g. LFW A–J with dlib-resnet):

1. **Impostor distribution.** For every labeled face and every *other* identity, the face's best
   score against that identity's faces (exactly what search's `max` aggregation scores). With F that
   distribution, a gallery of K identities names a stranger when the best of K such scores clears the
   threshold, so t(K) = F⁻¹(0.99^(1/K)) keeps the false positive identification rate near 1%
   (independence assumed; checked below). These t(K) are the conservative defaults of
   search/threshold.py for labeled galleries too small to calibrate.
2. **Check.** Random galleries of K identities, every face of the other people as a stranger: the
   measured FPIR at t(K).
3. **Before/after.** A gallery of `--enrolled` identities (each with a held-out photo as a mated
   probe) built through the product's store and index, and one face each of `--strangers` people who
   were never enrolled, searched through `Searcher`: the share of strangers named and of mated probes
   named correctly, with the old default threshold (the model's verification default) and with the
   threshold the product now applies (automatic calibration: search.calibrate.refresh_threshold).

    python benchmarks/open_set.py /tmp/lfwg --output results/open_set.json
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

from gallery.faces.models import get_model_spec  # noqa: E402
from gallery.store import Gallery, append_embedded_faces  # noqa: E402
from indexer import build_index  # noqa: E402
from search import Searcher  # noqa: E402
from search.threshold import TARGET_FPIR, refresh_threshold, resolve_threshold  # noqa: E402

SIZES = (1, 3, 10, 30, 100, 300, 1000)


def best_per_identity(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(faces, identities) matrix: each face's best score against each identity (own set to nan)."""
    order = np.argsort(labels, kind="stable")
    x, labels = x[order], labels[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    out = np.empty((x.shape[0], starts.size), np.float32)
    for s in range(0, x.shape[0], 1024):
        sims = x[s : s + 1024] @ x.T
        out[s : s + 1024] = np.maximum.reduceat(sims, starts, axis=1)
    own = np.searchsorted(labels[starts], labels)
    out[np.arange(x.shape[0]), own] = np.nan
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return out[inverse]


def conservative_table(per_identity: np.ndarray) -> list[tuple[int, float]]:
    scores = per_identity[~np.isnan(per_identity)]
    return [(k, round(float(np.quantile(scores, (1 - TARGET_FPIR) ** (1 / k))), 4)) for k in SIZES]


def check_table(per_identity: np.ndarray, labels: np.ndarray, table: list[tuple[int, float]], rng, trials: int = 20
                ) -> list[dict]:
    """Measured FPIR of t(K) on random K-identity galleries (strangers: all faces of other people)."""
    names = np.unique(labels)
    column = {n: i for i, n in enumerate(np.unique(labels))}
    rows = []
    for k, t in table:
        if k >= names.size:
            continue
        named = total = 0
        for _ in range(trials):
            enrolled = rng.choice(names, size=k, replace=False)
            cols = [column[n] for n in enrolled]
            strangers = ~np.isin(labels, enrolled)
            best = np.nanmax(per_identity[np.ix_(strangers, cols)], axis=1)
            named += int((best >= t).sum())
            total += int(strangers.sum())
        rows.append({"identities": k, "threshold": t, "measured_fpir": round(named / total, 4), "strangers": total})
    return rows


def before_after(source: Path, labels: np.ndarray, x: np.ndarray, n_enrolled: int,
                 n_strangers: int, rng, work: Path) -> dict:
    counts = {n: int(c) for n, c in zip(*np.unique(labels, return_counts=True))}
    eligible = np.array(sorted(n for n, c in counts.items() if c >= 3))
    enrolled = set(rng.choice(eligible, size=min(n_enrolled, eligible.size), replace=False).tolist())
    others = np.array(sorted(set(counts) - enrolled))
    strangers = rng.choice(others, size=min(n_strangers, others.size), replace=False)
    probe_rows, gallery_rows = [], []
    seen: set[str] = set()
    for row, name in enumerate(labels):
        if name in enrolled:
            (gallery_rows if name in seen else probe_rows).append(row)
            seen.add(name)
    stranger_rows = [int(np.flatnonzero(labels == s)[0]) for s in strangers]
    with Gallery.open(source) as src:
        stamp = src.model_stamp
    root = work / "open-set"
    with Gallery.open_or_create(root) as g:
        append_embedded_faces(g, stamp, x[gallery_rows], identities=[str(labels[r]) for r in gallery_rows],
                              photo_prefix="lfw")
        build_index(g)

    def measure(threshold: float | None) -> dict:
        with Searcher(root, k=1, threshold=threshold) as s:
            named = [a.identity is not None for a in s.search_embeddings(x[stranger_rows])]
            mated = s.search_embeddings(x[probe_rows])
            correct = [a.identity == labels[r] for a, r in zip(mated, probe_rows)]
            return {"threshold": round(s.threshold, 4), "source": s.threshold_source,
                    "strangers_named": int(sum(named)), "strangers": len(named),
                    "strangers_named_share": round(float(np.mean(named)), 4),
                    "mated_named_correctly": round(float(np.mean(correct)), 4), "mated_probes": len(correct)}

    with Gallery.open(root) as g:
        old_default = resolve_threshold(None, spec=get_model_spec(stamp["name"]))[0]
        uncalibrated = resolve_threshold(g)
    result = {"enrolled_identities": len(enrolled), "gallery_faces": len(gallery_rows),
              "before (model default, as before issue 10)": measure(old_default),
              "uncalibrated (conservative default)": {**measure(None), "policy": uncalibrated[1]}}
    report = refresh_threshold(root)
    result["after (automatic calibration)"] = {**measure(None), "calibrated": report is not None}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gallery", type=Path, help="a labeled gallery ingested by the product")
    parser.add_argument("--enrolled", type=int, default=265)
    parser.add_argument("--strangers", type=int, default=232)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    with Gallery.open(args.gallery) as g:
        labeled = g.labeled_faces()
        x = g.read_embeddings(labeled.face_ids)
        model = (g.model_stamp or {}).get("name")
    labels = np.asarray(labeled.identities)
    per_identity = best_per_identity(x, labels)
    table = conservative_table(per_identity)
    result = {"gallery": str(args.gallery), "model": model, "labeled_faces": int(labels.size),
              "identities": int(np.unique(labels).size), "target_fpir": TARGET_FPIR,
              "conservative_table": table, "check": check_table(per_identity, labels, table, rng)}
    with tempfile.TemporaryDirectory() as work:
        result["before_after"] = before_after(args.gallery, labels, x, args.enrolled,
                                              args.strangers, rng, Path(work))
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
