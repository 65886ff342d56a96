"""From nearest gallery faces to ranked identities and an open-set decision.

k-NN returns faces; people ask about identities. Neighbour faces are grouped by identity and each
identity is scored by its best face (`max`, default) or by the mean of its best m faces
(`mean:m`, steadier when galleries hold many photos per person). The top identity is the answer only
when its score clears the threshold; otherwise the face is "unknown" and the candidates are still
shown, marked as below the threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Neighbour:
    face_id: int
    score: float
    identity: str | None
    photo: str
    box: list[float]
    image_id: int


@dataclass
class Candidate:
    identity: str | None
    score: float
    photo: str
    box: list[float]
    face_id: int
    faces_in_neighbours: int
    above_threshold: bool

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
) -> FaceAnswer:
    """Rank identities (or, in faces mode, faces) and make the open-set decision."""
    if faces_mode:
        candidates = [
            Candidate(n.identity, round(n.score, 4), n.photo, n.box, n.face_id, 1, n.score >= threshold)
            for n in sorted(neighbours, key=lambda n: -n.score)[:k]
        ]
    else:
        candidates = [
            Candidate(
                name,
                round(score, 4),
                members[0].photo,
                members[0].box,
                members[0].face_id,
                len(members),
                score >= threshold,
            )
            for name, score, members in rank_identities(neighbours, k, aggregation)
        ]
    top = candidates[0] if candidates else None
    matched = top is not None and top.above_threshold
    return FaceAnswer(
        query,
        face,
        top.identity if matched and top else None,
        not matched,
        top.score if top else None,
        threshold,
        candidates,
        mode="faces" if faces_mode else "identities",
    )
