"""Leave-one-out identification over a gallery's own labeled faces, through the real search path.

Each sampled labeled face of good quality (a probe) is searched against the rest of the gallery with
`Searcher.neighbours` (its own face excluded) and `Searcher.template_cosines` (its own face taken out of
its identity's template): the evidence a search would see for every identity among its neighbours.
From that evidence any decision rule (search.decision) gives:

- the *mated* search (only identities with 2+ labeled faces have a mate): named correctly when the top
  identity is the probe's own and its statistic clears the threshold;
- the *non-mated* search: the same evidence with the probe's identity held out entirely (its faces and
  its template), which is what the search would answer if that person were not enrolled.

`gallery calibrate` chooses the rule's weight and threshold together on it; `gallery bench` reports it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gallery.errors import CalibrationError
from search.decision import DecisionRule, look_alike_combined, rank_candidates
from search.identify import rank_identities

if TYPE_CHECKING:
    from search.searcher import Searcher

PROBE_BATCH = 256


@dataclass
class LeaveOneOut:
    """Per probe, the evidence for each candidate identity among its neighbours."""

    identities: int  # labeled identities in the gallery
    has_mate: np.ndarray  # (probes,) bool: the probe's identity has another labeled face
    own: list[np.ndarray]  # per probe, (candidates,) bool: the candidate is the probe's identity
    best: list[np.ndarray]  # per probe, (candidates,) best face cosine
    template: list[np.ndarray]  # per probe, (candidates,) template cosine (NaN: no template)
    face_ids: np.ndarray | None = None  # (probes,) the probes' face ids, when they are gallery faces
    # per probe: the closest other identity found by its template alone (NaN: none), and the bound on its
    # best face (the last neighbour's score): search.decision.look_alike_combined
    look_template: np.ndarray | None = None
    look_bound: np.ndarray | None = None

    def look_alike(self, i: int, rule: DecisionRule) -> float:
        if self.look_template is None or self.look_bound is None:
            return math.nan
        return look_alike_combined(rule, float(self.look_bound[i]), float(self.look_template[i]))

    @property
    def probes(self) -> int:
        return int(self.has_mate.size)

    @property
    def mated(self) -> int:
        return int(self.has_mate.sum())


@dataclass
class RuleScores:
    """What one decision rule makes of a leave-one-out: the statistics of every search."""

    genuine: np.ndarray  # (mated,) the statistic the own identity would have as the top (-inf: absent)
    impostor: np.ndarray  # (probes,) the non-mated search's top statistic (-inf: no other identity)
    top_if_correct: np.ndarray  # (mated,) the statistic when the top identity is the mate, else -inf
    rank_hits: dict[int, int]  # rank r -> mated probes whose identity is within the top r
    runner_up_combined: np.ndarray  # (probes,) the non-mated search's runner-up combined score (NaN: none)

    @property
    def mated(self) -> int:
        return int(self.genuine.size)

    def rank(self, r: int) -> float:
        return self.rank_hits[r] / self.mated if self.mated else float("nan")


def leave_one_out(searcher: Searcher, max_probes: int = 2000, seed: int = 0, good_only: bool = True) -> LeaveOneOut:
    """Search a seeded sample of labeled faces against the rest of the gallery; see the module doc. Faces
    below the quality gate are not probes (such a query is not answered) unless `good_only=False`."""
    labeled = searcher.gallery.labeled_faces()
    counts = Counter(labeled.identities)
    if len(counts) < 2:
        raise CalibrationError(
            "Needs labeled faces of at least 2 identities (ingest with --labels folder or csv:FILE)."
        )
    if not any(c >= 2 for c in counts.values()):
        raise CalibrationError("Needs at least one identity with 2 or more labeled faces.")
    good = searcher.gallery.labeled_faces(good_only=good_only)
    if len(good) == 0:
        raise CalibrationError("Every labeled face is below the quality gate: nothing to calibrate on.")
    pick = balanced_sample(good.identities, max_probes, seed)
    face_ids = good.face_ids[pick]
    names = [good.identities[i] for i in pick]
    x = searcher.gallery.read_embeddings(face_ids)
    own_ids = searcher.gallery.face_identity_ids(face_ids)
    counted = searcher.gallery.face_quality_rows(face_ids)
    # a probe's own face leaves its identity's template only if it is in it (faces below the gate are not)
    leave = [int(f) if counted[int(f)]["quality_issue"] is None else None for f in face_ids]
    loo = probe_evidence(searcher, x, names, [{int(f)} for f in face_ids],
                         [(int(own_ids[int(f)]), x[j]) if leave[j] is not None else None
                          for j, f in enumerate(face_ids)])
    loo.identities = len(counts)
    loo.has_mate = np.asarray([counts[n] >= 2 for n in names], bool)
    loo.face_ids = np.asarray(face_ids, np.int64)
    return loo


def balanced_sample(identities: list[str | None], n: int, seed: int) -> np.ndarray:
    """Up to n positions, spread evenly over the identities: one face of every identity (in random
    order) before a second of any. A few people with hundreds of photos would otherwise make most of
    the probes, and the calibration would fit them instead of a query of anyone enrolled."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(identities))
    seen: dict[str | None, int] = {}
    rank = np.empty(len(identities), np.int64)
    for position in order:  # the k-th face drawn of its identity gets rank k
        name = identities[position]
        rank[position] = seen.get(name, 0)
        seen[name] = rank[position] + 1
    keys = np.lexsort((np.argsort(order), rank))  # by rank, then by the random order
    return keys[:n]


def probe_evidence(searcher: Searcher, x: np.ndarray, names: list[str], exclude: list[set[int]],
                   leave_out: list[tuple[int, np.ndarray] | None]) -> LeaveOneOut:
    """The evidence of every candidate identity for each query vector, through the search path: its
    neighbours without `exclude[q]`, and the templates with `leave_out[q]` = (identity id, vector) taken out.
    `names[q]` is the query's true identity (marks `own`); `has_mate` is set to True for every query."""
    own, best, template, look_t, look_b = [], [], [], [], []
    own_ids = searcher.gallery.identity_ids_by_name(set(names))
    for start in range(0, len(x), PROBE_BATCH):
        xs = x[start : start + PROBE_BATCH]
        part_names = names[start : start + PROBE_BATCH]
        # at least 3 identities: the mate, the best other one, and the other one's runner-up
        neighbours = searcher.neighbours(xs, k=3, exclude_face_ids=exclude[start : start + PROBE_BATCH])
        cosines = searcher.template_cosines(xs, neighbours, leave_out=leave_out[start : start + PROBE_BATCH])
        look = searcher.look_alikes(xs, neighbours, [own_ids.get(n) for n in part_names])
        for j, (name, found) in enumerate(zip(part_names, neighbours)):
            ranked = rank_identities(found, k=max(3, len(found)), aggregation=searcher.aggregation)
            ids = {n.identity: n.identity_id for n in found if n.identity is not None}
            own.append(np.array([ident == name for ident, _, _ in ranked], bool))
            best.append(np.array([score for _, score, _ in ranked], np.float64))
            template.append(np.array([cosines[j].get(ids[ident], np.nan) for ident, _, _ in ranked], np.float64))
            look_t.append(look[j][1] if look[j] is not None else math.nan)
            look_b.append(min((n.score for n in found), default=math.nan))
    return LeaveOneOut(0, np.ones(len(x), bool), own, best, template, look_template=np.asarray(look_t),
                       look_bound=np.asarray(look_b))


def probe_outcomes(loo: LeaveOneOut, rule: DecisionRule, threshold: float) -> dict[str, np.ndarray]:
    """Per probe at a threshold: `right` (mated: the top is its identity and is named), `wrong` (mated:
    another identity is named), `stranger_named` (its identity held out, someone is named)."""
    right, wrong, named = [], [], []
    for i, (mate, own, best, tmpl) in enumerate(zip(loo.has_mate, loo.own, loo.best, loo.template)):
        look = loo.look_alike(i, rule)
        held = rank_candidates(best[~own], tmpl[~own], rule, look)
        named.append(held.statistic is not None and held.statistic >= threshold)
        r = rank_candidates(best, tmpl, rule, look)
        ok = mate and r.top is not None and r.statistic >= threshold
        right.append(bool(ok and own[r.top]))
        wrong.append(bool(ok and not own[r.top]))
    return {"right": np.asarray(right), "wrong": np.asarray(wrong), "stranger_named": np.asarray(named)}


def rule_scores(loo: LeaveOneOut, rule: DecisionRule, ranks: tuple[int, ...] = (1, 5)) -> RuleScores:
    """The statistics `rule` gives every mated and non-mated search of the leave-one-out."""
    genuine, impostor, top_if_correct, runner = [], [], [], []
    hits = dict.fromkeys(ranks, 0)
    for i, (mate, own, best, tmpl) in enumerate(zip(loo.has_mate, loo.own, loo.best, loo.template)):
        others = ~own
        look = loo.look_alike(i, rule)
        held_out = rank_candidates(best[others], tmpl[others], rule, look)
        impostor.append(held_out.statistic if held_out.statistic is not None else -math.inf)
        runner.append(held_out.runner_up_combined)
        if not mate:
            continue
        ranking = rank_candidates(best, tmpl, rule, look)
        order = ranking.order
        position = np.flatnonzero(own[order])
        for r in ranks:
            hits[r] += int(position.size > 0 and position[0] < r)
        if position.size == 0:
            genuine.append(-math.inf)
            top_if_correct.append(-math.inf)
            continue
        mine = int(order[position[0]])
        best_other = float(np.max(ranking.combined[others])) if others.any() else math.nan
        if not math.isnan(look) and (math.isnan(best_other) or look > best_other):
            best_other = look
        genuine.append(float(rule.statistic(ranking.combined[mine], best_other)))
        top_if_correct.append(ranking.statistic if position[0] == 0 else -math.inf)
    return RuleScores(np.asarray(genuine, np.float64), np.asarray(impostor, np.float64),
                      np.asarray(top_if_correct, np.float64), hits, np.asarray(runner, np.float64))


def threshold_at_fpir(impostor: np.ndarray, target_fpir: float) -> float:
    """Lowest threshold whose false positive identification rate stays within the target: just above
    the (allowed+1)-th best impostor score, rounded up to 1e-6 (stored rounded, never below it)."""
    imp = np.sort(np.asarray(impostor))[::-1]
    allowed = int(math.floor(target_fpir * len(imp)))
    threshold = float(np.nextafter(np.float32(imp[min(allowed, len(imp) - 1)]), np.float32(2.0)))
    return math.ceil(threshold * 1e6) / 1e6


def fpir_fnir(scores: RuleScores, threshold: float) -> tuple[float, float]:
    """(FPIR, FNIR) at a threshold: non-mated searches answered with someone; mated searches not
    answered with the right identity."""
    fpir = float((scores.impostor >= threshold).mean()) if scores.impostor.size else float("nan")
    fnir = float((scores.top_if_correct < threshold).mean()) if scores.top_if_correct.size else float("nan")
    return fpir, fnir


def fnir_at_fpir(scores: RuleScores, target_fpir: float) -> tuple[float, float, float]:
    """(threshold, FPIR, FNIR) at the lowest threshold that keeps FPIR within the target."""
    threshold = threshold_at_fpir(scores.impostor, target_fpir)
    fpir, fnir = fpir_fnir(scores, threshold)
    return threshold, fpir, fnir
