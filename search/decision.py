"""The open-set decision of "who is this?": identity evidence, the margin to the runner-up, one threshold.

The candidates for a query face are the identities among its nearest gallery faces. Each has two
pieces of evidence: `best`, the cosine of its best-matching face (or the mean of its best M with
`--aggregation mean:M`), and `template`, the cosine with its template (the renormalised mean of its
good-quality faces; NaN when it has none). Its combined score is

    combined = (1 - template_share) * best + template_share * template      (no template: best)

Candidates are ranked by the combined score, and the top one is named when

    statistic = combined(top) - weight * combined(runner-up) >= threshold

A runner-up close to the top means the query looks like several people, so the margin counts as much
as the score. A gallery with a single identity has no runner-up: `runner_up_prior` stands in for it.
`BEST_FACE` (share 0, weight 0) is the rule before templates and margins: the best face's cosine
against the threshold. Weight and threshold are calibrated together on the gallery's own labeled
faces (search.calibrate); the defaults for uncalibrated galleries are measured (search.threshold).

Pure functions over numpy arrays: the searcher, the calibration and the benchmarks all decide here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DecisionRule:
    template_share: float = 0.5  # weight of the template cosine in the combined score
    weight: float = 0.5  # how much of the runner-up's combined score is subtracted
    runner_up_prior: float = 0.0  # the runner-up's combined score when there is none

    def combined(self, best: np.ndarray, template: np.ndarray) -> np.ndarray:
        best = np.asarray(best, np.float64)
        template = np.where(np.isnan(template), best, np.asarray(template, np.float64))
        return (1.0 - self.template_share) * best + self.template_share * template

    def statistic(self, top: np.ndarray | float, runner_up: np.ndarray | float) -> np.ndarray:
        runner = np.where(np.isnan(runner_up), self.runner_up_prior, runner_up)
        return np.asarray(top, np.float64) - self.weight * runner

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionRule:
        return cls(float(data["template_share"]), float(data["weight"]), float(data.get("runner_up_prior", 0.0)))

    def describe(self) -> str:
        if self.template_share == 0 and self.weight == 0:
            return "best face"
        parts = [f"{1 - self.template_share:g} x best face + {self.template_share:g} x template"
                 if self.template_share else "best face"]
        if self.weight:
            parts.append(f"- {self.weight:g} x runner-up")
        return " ".join(parts)


BEST_FACE = DecisionRule(template_share=0.0, weight=0.0, runner_up_prior=0.0)


@dataclass
class Ranking:
    """One query's candidates ranked by the combined score."""

    order: np.ndarray  # candidate positions, best first
    combined: np.ndarray  # (n,) combined score of each candidate (input order)
    statistic: float | None  # of the top candidate; None without candidates
    runner_up: int | None  # position of the runner-up among the candidates (None: none, or the look-alike)
    runner_up_combined: float = math.nan  # the runner-up's combined score (NaN: none; the prior stands in)

    @property
    def top(self) -> int | None:
        return int(self.order[0]) if self.order.size else None

    @property
    def look_alike_is_runner_up(self) -> bool:
        return self.runner_up is None and not math.isnan(self.runner_up_combined)


def look_alike_combined(rule: DecisionRule, best_bound: float, template: float) -> float:
    """The combined score of an identity found by its template alone: its best face is not among the
    neighbours, so it is at most the last neighbour's score (`best_bound`): an upper bound, which only ever
    makes the decision more careful (it is a runner-up, never named)."""
    if math.isnan(template) or not math.isfinite(best_bound):
        return math.nan
    return float(rule.combined(np.array([best_bound]), np.array([template]))[0])


def rank_candidates(best: np.ndarray, template: np.ndarray, rule: DecisionRule,
                    look_alike: float = math.nan) -> Ranking:
    """Rank one query's candidate identities and compute the top one's statistic. `look_alike`: the
    combined score of the closest identity found only by its template (NaN: none); it is the runner-up when
    it beats the second candidate."""
    best = np.asarray(best, np.float64)
    if best.size == 0:
        return Ranking(np.zeros(0, np.int64), np.zeros(0), None, None)
    combined = rule.combined(best, np.asarray(template, np.float64))
    order = np.lexsort((-best, -combined))  # ties on the combined score: the better face first
    runner: int | None = int(order[1]) if order.size > 1 else None
    runner_value = float(combined[runner]) if runner is not None else math.nan
    if not math.isnan(look_alike) and (math.isnan(runner_value) or look_alike > runner_value):
        runner, runner_value = None, float(look_alike)
    stat = float(rule.statistic(combined[order[0]], runner_value))
    return Ranking(order, combined, stat, runner, runner_value)


def candidate_statistics(ranking: Ranking, rule: DecisionRule) -> np.ndarray:
    """Each candidate's statistic against the best of the others (the top's is the decision's)."""
    c = ranking.combined
    if c.size == 0:
        return c
    top = int(ranking.order[0])
    others_best = np.full(c.size, c[top])
    others_best[top] = ranking.runner_up_combined
    return rule.statistic(c, others_best)


def decimals_apart(a: float, b: float, start: int = 3, most: int = 6) -> int:
    """The fewest decimals (from `start`) at which a and b print differently; `most` when even that
    does not separate them (then print the margin)."""
    for d in range(start, most + 1):
        if f"{a:.{d}f}" != f"{b:.{d}f}":
            return d
    return most


def verdict_text(statistic: float, threshold: float) -> str:
    """'0.5123 >= 0.5120' or '0.4712 < 0.4719 (0.0007 below)': never two equal-looking numbers."""
    d = decimals_apart(statistic, threshold)
    if statistic >= threshold:
        return f"statistic {statistic:.{d}f} >= threshold {threshold:.{d}f}"
    gap = threshold - statistic
    return f"statistic {statistic:.{d}f} < threshold {threshold:.{d}f} ({gap:.{max(d, 1)}g} below)" if gap < 1e-6 \
        else f"statistic {statistic:.{d}f} < threshold {threshold:.{d}f} ({gap:.{d}f} below)"
