"""`gallery calibrate`: choose the match threshold on the gallery's own labeled faces.

Leave-one-out identification (search.evaluation): each sampled labeled face is searched against the
rest of the gallery. The threshold is the lowest score at which the false positive identification
rate (non-mated searches answered with someone) stays within the target; FNIR (mated searches not
answered correctly) and rank-1 are reported at that threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gallery.errors import CalibrationError
from search.evaluation import fpir_fnir, leave_one_out, threshold_at_fpir
from search.searcher import Searcher
from search.threshold import MIN_NONMATED_PER_FPIR, NO_ONE, conservative_threshold


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
    genuine_scores: dict[str, float]  # summary of the mated score distribution
    impostor_scores: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.quantile(values, [0.01, 0.05, 0.5, 0.95, 0.99])
    return {"n": len(values), "mean": float(values.mean()), "p01": float(q[0]), "p05": float(q[1]),
            "p50": float(q[2]), "p95": float(q[3]), "p99": float(q[4])}


def calibrate(
    searcher: Searcher,
    target_fpir: float = 0.01,
    max_probes: int = 2000,
    seed: int = 0,
    apply: bool = True,
) -> CalibrationReport:
    """Measure and (with apply) store the threshold for `target_fpir`; raises CalibrationError when the
    gallery's labels cannot support it."""
    if not 0 < target_fpir <= 1:
        raise CalibrationError(f"A target FPIR of {target_fpir} cannot be calibrated: give a rate above 0 and at "
                               "most 1 (e.g. 0.01).")
    loo = leave_one_out(searcher, max_probes, seed, ranks=(1,))
    threshold = threshold_at_fpir(loo.impostor, target_fpir)
    floor_note = ""
    if loo.probes < MIN_NONMATED_PER_FPIR / target_fpir:
        # Too few non-mated searches to resolve the target rate (22 searches cannot measure 1%): never
        # go below the measured conservative default for a gallery of this many identities.
        floor, _ = conservative_threshold(searcher.spec, loo.identities)
        if floor > threshold and floor < NO_ONE:
            threshold = floor
            floor_note = (f"; raised to the conservative default for {loo.identities} identities: "
                          f"{loo.probes} non-mated searches cannot resolve FPIR {target_fpir:.0%}")
    fpir, fnir = fpir_fnir(loo, threshold)
    report = CalibrationReport(
        threshold=threshold,
        target_fpir=target_fpir,
        fpir=fpir,
        fnir=fnir,
        rank1=loo.rank(1),
        mated_searches=loo.mated,
        nonmated_searches=loo.probes,
        identities=loo.identities,
        labeled_faces=searcher.gallery.labeled_counts().faces,
        applied=apply,
        genuine_scores=_summary(loo.genuine),
        impostor_scores=_summary(np.sort(loo.impostor)[::-1]),
    )
    if apply:
        searcher.gallery.set_threshold(
            report.threshold,
            f"gallery calibrate: FPIR {fpir:.2%} (target {target_fpir:.2%}), FNIR {fnir:.2%}, "
            f"{loo.mated} mated / {loo.probes} non-mated searches{floor_note}",
            report.as_dict(),
        )
    return report

