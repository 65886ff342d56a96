"""From nearest gallery faces to ranked identities and an open-set decision.

k-NN returns faces; people ask about identities. Neighbour faces are grouped by identity and each
identity is scored by its best face (`max`, default) or by the mean of its best m faces (`mean:m`).
With the identities' template cosines, search.decision ranks them by the combined score and decides
on the statistic (combined score minus a share of the runner-up's) against the threshold; otherwise
the face is "unknown" and the candidates are still shown, marked as below the threshold. A query face
below the quality gate is answered "too poor to identify", with its reason, and no candidates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from search.decision import BEST_FACE, DecisionRule, candidate_statistics, look_alike_combined, rank_candidates


@dataclass
class Neighbour:
    face_id: int
    score: float
    identity: str | None
    photo: str
    box: list[float]
    image_id: int
    identity_id: int | None = None
    clip: str | None = None  # a face found in a video: its track's span (photo is the video)


@dataclass
class Candidate:
    identity: str | None
    score: float
    photo: str
    box: list[float]
    face_id: int
    faces_in_neighbours: int
    above_threshold: bool
    template_score: float | None = None  # cosine with the identity's template (None: no template)
    combined: float | None = None  # the score candidates are ranked by (search.decision)
    statistic: float | None = None  # combined minus the rule's share of the best other candidate's
    clip: str | None = None  # the face is in a video (photo): the span of its track, "00:12–00:31"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaceAnswer:
    """The answer for one query face (or one query embedding)."""

    query: str | None
    face: dict[str, Any] | None
    identity: str | None
    unknown: bool
    score: float | None
    threshold: float
    candidates: list[Candidate] = field(default_factory=list)
    mode: str = "identities"  # identities | faces
    threshold_source: str = ""  # where the threshold came from (calibrated, conservative default, ...)
    statistic: float | None = None  # what the threshold is compared with (identities mode)
    margin: float | None = None  # statistic - threshold: >= 0 named, < 0 unknown
    runner_up: dict[str, Any] | None = None  # {"identity", "combined"} of the second candidate
    rule: dict[str, float] | None = None  # the decision rule (search.decision.DecisionRule)
    question: str = "1:K"  # 1:K identification; faces mode compares faces one by one (the 1:1 threshold)
    quality: dict[str, Any] | None = None  # the query face's quality measures (photo queries)
    too_poor: str | None = None  # why the query face was not identified: below the quality gate

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidates"] = [c.as_dict() for c in self.candidates]
        return data


def parse_aggregation(spec: str) -> tuple[str, int]:
    """`max` or `mean:M` (mean of an identity's best M neighbour scores)."""
    if spec == "max":
        return "max", 1
    if spec.startswith("mean:"):
        try:
            m = int(spec.split(":", 1)[1])
        except ValueError:
            m = 0
        if m >= 1:
            return "mean", m
    raise ValueError(f"Unknown aggregation '{spec}': use 'max' or 'mean:M' (e.g. mean:3).")


def rank_identities(
    neighbours: list[Neighbour], k: int, aggregation: str = "max"
) -> list[tuple[str, float, list[Neighbour]]]:
    """Top-k distinct identities: (name, aggregated score, that identity's neighbours best first)."""
    method, m = parse_aggregation(aggregation)
    groups: dict[str, list[Neighbour]] = {}
    for n in neighbours:
        if n.identity is not None:
            groups.setdefault(n.identity, []).append(n)
    scored = []
    for name, members in groups.items():
        members.sort(key=lambda n: -n.score)
        if method == "max":
            score = members[0].score
        else:
            # Fewer than m faces of a person among the neighbours: the missing ones count as the
            # weakest seen, so one lucky face does not beat a consistently close identity.
            top = [n.score for n in members[:m]]
            top += [top[-1]] * (m - len(top))
            score = sum(top) / m
        scored.append((name, score, members))
    scored.sort(key=lambda t: -t[1])
    return scored[:k]


def decide(
    query: str | None,
    face: dict[str, Any] | None,
    neighbours: list[Neighbour],
    k: int,
    threshold: float,
    aggregation: str = "max",
    faces_mode: bool = False,
    rule: DecisionRule = BEST_FACE,
    template_scores: Mapping[str, float] | None = None,
    look_alike: tuple[str, float] | None = None,
) -> FaceAnswer:
    """Rank identities by the rule's combined score (or, in faces mode, faces by cosine) and make the
    open-set decision. `template_scores`: identity name -> cosine with its template (absent: none);
    `look_alike`: (name, template cosine) of the closest identity found by the template search alone."""
    if faces_mode:
        candidates = [
            Candidate(n.identity, round(n.score, 4), n.photo, n.box, n.face_id, 1, n.score >= threshold, clip=n.clip)
            for n in sorted(neighbours, key=lambda n: -n.score)[:k]
        ]
        top = candidates[0] if candidates else None
        matched = top is not None and top.above_threshold
        return FaceAnswer(query, face, top.identity if matched and top else None, not matched,
                          top.score if top else None, threshold, candidates, mode="faces", question="1:1")
    ranked = rank_identities(neighbours, max(k, len(neighbours)), aggregation)
    templates = template_scores or {}
    best = np.array([score for _, score, _ in ranked], np.float64)
    tmpl = np.array([templates.get(name, np.nan) for name, _, _ in ranked], np.float64)
    bound = min((n.score for n in neighbours), default=math.nan)
    extra = look_alike_combined(rule, bound, look_alike[1]) if look_alike is not None else math.nan
    ranking = rank_candidates(best, tmpl, rule, extra)
    stats = candidate_statistics(ranking, rule)
    candidates = []
    for i in ranking.order[:k].tolist():
        name, score, members = ranked[i]
        candidates.append(Candidate(
            name, round(score, 4), members[0].photo, members[0].box, members[0].face_id, len(members),
            bool(stats[i] >= threshold) and i == ranking.top,
            None if np.isnan(tmpl[i]) else round(float(tmpl[i]), 4), round(float(ranking.combined[i]), 6),
            float(stats[i]), clip=members[0].clip,
        ))
    top = candidates[0] if candidates else None
    matched = top is not None and top.above_threshold
    runner = None
    if ranking.runner_up is not None:
        runner = {"identity": ranked[ranking.runner_up][0],
                  "combined": round(float(ranking.combined[ranking.runner_up]), 6), "found_by": "faces"}
    elif ranking.look_alike_is_runner_up and look_alike is not None:
        runner = {"identity": look_alike[0], "combined": round(ranking.runner_up_combined, 6), "found_by": "template"}
    return FaceAnswer(
        query,
        face,
        top.identity if matched and top else None,
        not matched,
        top.score if top else None,
        threshold,
        candidates,
        mode="identities",
        statistic=ranking.statistic,
        margin=None if ranking.statistic is None else ranking.statistic - threshold,
        runner_up=runner,
        rule=rule.as_dict(),
    )


def too_poor_answer(query: str | None, face: dict[str, Any] | None, threshold: float, quality: dict[str, Any],
                    faces_mode: bool = False) -> FaceAnswer:
    """A query face below the quality gate: no guess, the reason instead."""
    return FaceAnswer(query, face, None, True, None, threshold, [], mode="faces" if faces_mode else "identities",
                      question="1:1" if faces_mode else "1:K", quality=quality, too_poor=quality.get("issue"))
