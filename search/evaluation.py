"""Leave-one-out identification over a gallery's own labeled faces, through the real search path.

Each sampled labeled face is searched against the rest of the gallery (itself excluded) with
`Searcher.neighbours` and ranked with `rank_identities`, exactly as a query would be. Its *mated*
score is its own identity's score among the neighbours (only identities with 2+ faces have a mate);
its *non-mated* score is the best score of any other identity: what the search would report if the
face's identity were held out of the gallery (the open-set impostor case). `gallery calibrate` and
`gallery bench` both use this.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gallery.errors import CalibrationError
from search.identify import rank_identities

if TYPE_CHECKING:
    from search.searcher import Searcher

PROBE_BATCH = 256


@dataclass
class LeaveOneOut:
    probes: int
    identities: int  # labeled identities in the gallery
    mated: int  # probes whose identity has another face
    genuine: np.ndarray  # (mated,) the own identity's score (-1 when not among the neighbours)
    impostor: np.ndarray  # (probes,) the best other identity's score (-1 when none)
    top_if_correct: np.ndarray  # (mated,) the top score when the top identity is the mate, else -inf
    rank_hits: dict[int, int]  # rank r -> mated probes whose identity is within the top r

    def rank(self, r: int) -> float:
        return self.rank_hits[r] / self.mated if self.mated else float("nan")


def leave_one_out(searcher: Searcher, max_probes: int = 2000, seed: int = 0, ranks: tuple[int, ...] = (1, 5)
                  ) -> LeaveOneOut:
    """Search a seeded sample of labeled faces against the rest of the gallery; see the module doc."""
    labeled = searcher.gallery.labeled_faces()
    counts = Counter(labeled.identities)
    if len(counts) < 2:
        raise CalibrationError(
            "Needs labeled faces of at least 2 identities (ingest with --labels folder or csv:FILE)."
        )
    if not any(c >= 2 for c in counts.values()):
        raise CalibrationError("Needs at least one identity with 2 or more labeled faces.")
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(labeled))[:max_probes]
    face_ids = labeled.face_ids[pick]
    names = [labeled.identities[i] for i in pick]
    x = searcher.gallery.read_embeddings(face_ids)
    depth = max(2, *ranks)  # at least 2 identities: the mate and the best other one
    genuine, impostor, top_if_correct = [], [], []
    hits = dict.fromkeys(ranks, 0)
    for start in range(0, len(face_ids), PROBE_BATCH):
        part = face_ids[start : start + PROBE_BATCH]
        neighbours = searcher.neighbours(x[start : start + PROBE_BATCH], k=depth,
                                         exclude_face_ids=[{int(f)} for f in part])
        for name, found in zip(names[start : start + PROBE_BATCH], neighbours):
            ranked = rank_identities(found, k=max(depth, len(found)), aggregation=searcher.aggregation)
            others = [score for ident, score, _ in ranked if ident != name]
            impostor.append(others[0] if others else -1.0)
            if counts[name] < 2:
                continue
            own = [score for ident, score, _ in ranked if ident == name]
            genuine.append(own[0] if own else -1.0)
            order = [ident for ident, _, _ in ranked]
            for r in ranks:
                hits[r] += int(name in order[:r])
            top_if_correct.append(ranked[0][1] if order[:1] == [name] else -math.inf)
    return LeaveOneOut(
        probes=len(face_ids),
        identities=len(counts),
        mated=len(genuine),
        genuine=np.asarray(genuine),
        impostor=np.asarray(impostor),
        top_if_correct=np.asarray(top_if_correct),
        rank_hits=hits,
    )


def threshold_at_fpir(impostor: np.ndarray, target_fpir: float) -> float:
    """Lowest threshold whose false positive identification rate stays within the target: just above
    the (allowed+1)-th best impostor score, rounded up to 1e-6 (stored rounded, never below it)."""
    imp = np.sort(np.asarray(impostor))[::-1]
    allowed = int(math.floor(target_fpir * len(imp)))
    threshold = float(np.nextafter(np.float32(imp[min(allowed, len(imp) - 1)]), np.float32(2.0)))
    return math.ceil(threshold * 1e6) / 1e6


def fpir_fnir(loo: LeaveOneOut, threshold: float) -> tuple[float, float]:
    """(FPIR, FNIR) at a threshold: non-mated searches answered with someone; mated searches not
    answered with the right identity."""
    fpir = float((loo.impostor >= threshold).mean()) if loo.impostor.size else float("nan")
    fnir = float((loo.top_if_correct < threshold).mean()) if loo.top_if_correct.size else float("nan")
    return fpir, fnir
