"""`gallery calibrate`: choose the decision rule's weight and threshold, and the 1:1 threshold, on the
gallery's own labeled faces.

1:K: leave-one-out identification (search.evaluation) gives, for every probe, the evidence of each
candidate identity; for each runner-up weight of `WEIGHTS` the threshold is the lowest statistic at
which the false positive identification rate (non-mated searches answered with someone) stays within
the target, and the weight kept is the one whose threshold leaves the fewest mated searches unnamed
(FNIR), when it beats the model's measured default weight by more than the leave-one-out's noise
(`choose_rule`). Weight and threshold are stored together. FNIR at FPIR 0.1% and 1% and rank-1 are reported.

1:1: the cosine of pairs of the gallery's good-quality labeled faces, genuine (same identity) and
impostor (different identities, sampled); the threshold is the lowest with a false match rate within
`TARGET_FMR`. `gallery verify --gallery` uses it.

Automatic: `gallery.app.indexing.calibrate_if_due` calibrates when the rule of search.threshold says the gallery
needs it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from gallery.errors import CalibrationError
from search.decision import DecisionRule
from search.evaluation import LeaveOneOut, fnir_at_fpir, fpir_fnir, leave_one_out, rule_scores, threshold_at_fpir
from search.threshold import (
    MIN_NONMATED_PER_FPIR,
    NO_ONE,
    RULE_VERSION,
    TARGET_FMR,
    conservative_threshold,
    default_rule,
)

if TYPE_CHECKING:
    from search.searcher import Searcher

WEIGHTS = tuple(round(w, 2) for w in np.arange(0.0, 1.0001, 0.1))  # runner-up weights tried
REPORTED_FPIR = (0.001, 0.01)  # FNIR is reported at these FPIRs too
MAX_PAIR_FACES = 20_000  # faces whose pairs the 1:1 calibration scores (sampled beyond)
IMPOSTOR_PAIRS = 200_000
MIN_GENUINE_PAIRS = 20
# Another runner-up weight replaces the model's measured default only when it names more of the mated
# searches by SIGNIFICANCE standard errors and misses MIN_RELATIVE_GAIN fewer of them (see choose_rule).
SIGNIFICANCE = 3.0
MIN_RELATIVE_GAIN = 0.1


@dataclass
class CalibrationReport:
    threshold: float
    target_fpir: float
    fpir: float
    fnir: float
    rank1: float
    mated_searches: int
    nonmated_searches: int
    identities: int
    labeled_faces: int  # when calibrated: the staleness rule compares the gallery's growth with it
    applied: bool
    genuine_scores: dict[str, float]  # summary of the mated statistic distribution
    impostor_scores: dict[str, float]
    rule: dict[str, float]  # the decision rule (weight chosen here)
    fnir_at: dict[str, float | None]  # "0.1%" / "1%" -> FNIR at that FPIR (None: too few searches)
    weights_tried: dict[str, float]  # weight -> FNIR at the target FPIR
    one_to_one: dict[str, Any] | None  # the 1:1 threshold and its rates, or None (too few pairs)
    low_quality_faces_left_out: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {}
    q = np.quantile(values, [0.01, 0.05, 0.5, 0.95, 0.99])
    return {"n": len(values), "mean": float(values.mean()), "p01": float(q[0]), "p05": float(q[1]),
            "p50": float(q[2]), "p95": float(q[3]), "p99": float(q[4])}


def fnir_report(loo: LeaveOneOut, rule: DecisionRule) -> dict[str, float | None]:
    """FNIR at each REPORTED_FPIR (None where the non-mated searches cannot resolve it)."""
    scores = rule_scores(loo, rule)
    out: dict[str, float | None] = {}
    for f in REPORTED_FPIR:
        key = f"{f:.1%}".replace(".0%", "%")
        out[key] = round(fnir_at_fpir(scores, f)[2], 4) if loo.probes >= MIN_NONMATED_PER_FPIR / f else None
    return out


def choose_rule(loo: LeaveOneOut, base: DecisionRule, target_fpir: float,
                weights: tuple[float, ...] = WEIGHTS) -> tuple[DecisionRule, float, dict[str, float]]:
    """(rule, threshold, weight -> FNIR): the weight whose threshold at the target FPIR names the most
    mated searches, when it names clearly more of them than the base rule's weight: by more than
    `SIGNIFICANCE` standard errors of the paired difference (McNemar: the mated searches one names and the
    other does not) and at least MIN_RELATIVE_GAIN of the base weight's misses. Otherwise the base rule's
    measured weight stays: on LFW A–J the leave-one-out's FNIR by weight is nearly flat (a few tenths of a
    point), and the weight it favoured did worse on held-out people than the measured default."""
    tried: dict[str, float] = {}
    named: dict[float, np.ndarray] = {}
    thresholds: dict[float, float] = {}
    for w in sorted({*weights, base.weight}):
        rule = replace(base, weight=float(w))
        scores = rule_scores(loo, rule, ranks=(1,))
        threshold, _, fnir = fnir_at_fpir(scores, target_fpir)
        tried[f"{w:g}"] = round(fnir, 4)
        named[w], thresholds[w] = scores.top_if_correct >= threshold, threshold
    best = max(named, key=lambda w: (int(named[w].sum()), -abs(w - base.weight)))
    gain = int(named[best].sum()) - int(named[base.weight].sum())
    discordant = int((named[best] != named[base.weight]).sum())
    missed = max(1, int((~named[base.weight]).sum()))
    if gain <= SIGNIFICANCE * math.sqrt(max(discordant, 1)) or gain < MIN_RELATIVE_GAIN * missed:
        best = base.weight
    return replace(base, weight=float(best)), thresholds[best], tried


def one_to_one_threshold(searcher: Searcher, target_fmr: float = TARGET_FMR, seed: int = 0) -> dict[str, Any] | None:
    """The 1:1 threshold at the target false match rate from pairs of good-quality labeled faces (see the
    module doc); None when the gallery has too few genuine pairs."""
    good = searcher.gallery.labeled_faces(good_only=True)
    if len(good) < 2:
        return None
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(good))[:MAX_PAIR_FACES])
    names = np.asarray([good.identities[i] for i in pick])
    x = searcher.gallery.read_embeddings(good.face_ids[pick])
    _, label = np.unique(names, return_inverse=True)
    order = np.argsort(label, kind="stable")
    genuine = []
    starts = np.flatnonzero(np.r_[True, np.diff(label[order]) != 0, True])
    for a, b in zip(starts[:-1], starts[1:]):
        members = order[a:b]
        if members.size >= 2:
            sims = x[members] @ x[members].T
            genuine.append(sims[np.triu_indices(members.size, 1)])
    genuine_scores = np.concatenate(genuine) if genuine else np.zeros(0)
    if genuine_scores.size < MIN_GENUINE_PAIRS:
        return None
    i = rng.integers(0, len(pick), IMPOSTOR_PAIRS)
    j = rng.integers(0, len(pick), IMPOSTOR_PAIRS)
    keep = label[i] != label[j]
    impostor = np.einsum("nd,nd->n", x[i[keep]], x[j[keep]])
    if impostor.size < MIN_NONMATED_PER_FPIR / target_fmr:
        return None
    value = threshold_at_fpir(impostor, target_fmr)
    return {"value": value, "target_fmr": target_fmr, "fmr": round(float((impostor >= value).mean()), 6),
            "fnmr": round(float((genuine_scores < value).mean()), 4), "genuine_pairs": int(genuine_scores.size),
            "impostor_pairs": int(impostor.size),
            "source": f"gallery calibrate: FMR {target_fmr:.2%} on {impostor.size:,} impostor pairs"}


def calibrate(
    searcher: Searcher,
    target_fpir: float = 0.01,
    max_probes: int = 2000,
    seed: int = 0,
    apply: bool = True,
    weight: float | None = None,
    rule: DecisionRule | None = None,
    loo: LeaveOneOut | None = None,
) -> CalibrationReport:
    """Measure and (with apply) store the rule and threshold for `target_fpir`, and the 1:1 threshold;
    raises CalibrationError when the gallery's labels cannot support it. `weight` fixes the runner-up
    weight instead of choosing it; `rule` fixes the whole rule and `loo` reuses a leave-one-out of this
    searcher's gallery (benchmarks comparing rules on the same searches)."""
    if not 0 < target_fpir <= 1:
        raise CalibrationError(f"A target FPIR of {target_fpir} cannot be calibrated: give a rate above 0 and at "
                               "most 1 (e.g. 0.01).")
    loo = loo if loo is not None else leave_one_out(searcher, max_probes, seed)
    base = rule if rule is not None else default_rule(searcher.spec)
    few = loo.probes < MIN_NONMATED_PER_FPIR / target_fpir
    if rule is not None:
        threshold = fnir_at_fpir(rule_scores(loo, rule), target_fpir)[0]
        tried = {}
    elif weight is not None or few:
        # Too few non-mated searches to tell weights apart at this FPIR: keep the measured default weight.
        rule = replace(base, weight=float(weight if weight is not None else base.weight))
        threshold = fnir_at_fpir(rule_scores(loo, rule), target_fpir)[0]
        tried = {}
    else:
        rule, threshold, tried = choose_rule(loo, base, target_fpir)
    floor_note = ""
    if few and rule == default_rule(searcher.spec):  # the conservative table is for the default rule
        # Too few non-mated searches to resolve the target rate (22 searches cannot measure 1%): never
        # go below the measured conservative default for a gallery of this many identities.
        floor, _ = conservative_threshold(searcher.spec, loo.identities)
        if floor > threshold and floor < NO_ONE:
            threshold = floor
            floor_note = (f"; raised to the conservative default for {loo.identities} identities: "
                          f"{loo.probes} non-mated searches cannot resolve FPIR {target_fpir:.0%}")
    scores = rule_scores(loo, rule)
    fpir, fnir = fpir_fnir(scores, threshold)
    total_labeled = searcher.gallery.labeled_counts().faces
    report = CalibrationReport(
        threshold=threshold,
        target_fpir=target_fpir,
        fpir=fpir,
        fnir=fnir,
        rank1=scores.rank(1),
        mated_searches=loo.mated,
        nonmated_searches=loo.probes,
        identities=loo.identities,
        labeled_faces=total_labeled,
        applied=apply,
        genuine_scores=_summary(scores.genuine),
        impostor_scores=_summary(scores.impostor),
        rule=rule.as_dict(),
        fnir_at=fnir_report(loo, rule),
        weights_tried=tried,
        one_to_one=one_to_one_threshold(searcher, seed=seed),
        low_quality_faces_left_out=total_labeled - len(searcher.gallery.labeled_faces(good_only=True)),
    )
    if apply:
        searcher.gallery.set_threshold(
            report.threshold,
            f"gallery calibrate: FPIR {fpir:.2%} (target {target_fpir:.2%}), FNIR {fnir:.2%}, runner-up weight "
            f"{rule.weight:g}, {loo.mated} mated / {loo.probes} non-mated searches{floor_note}",
            report.as_dict(),
            extra={"rule": rule.as_dict(), "rule_version": RULE_VERSION, "one_to_one": report.one_to_one},
        )
    return report

