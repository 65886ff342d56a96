"""Clustering settings: per-model defaults measured on LFW A–J (benchmarks/cluster_quality.py), and
the rule for changing them on a gallery that is already clustered."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from gallery.errors import GalleryError
from search.cluster.methods import METHODS, Consistency, CrowdCheck

DEFAULT_K = 30
SPLIT_STEP = 0.01  # `clusters split` without --threshold: this much stricter than the gallery's setting


@dataclass(frozen=True)
class ClusterSettings:
    """Average linkage with a size-aware threshold: two clusters of m and n faces merge when their
    mean pairwise cosine is at least floor + (threshold - floor) / sqrt(m * n). Two single faces need
    `threshold`; large clusters, whose mean is a steady estimate, need only `floor`.

    And, when `cohesion_gap` is set, a consistency check (search.cluster.methods.Consistency): between
    two clusters of 3+ faces the mean cosine must come within `cohesion_gap` of the looser one's own
    inner mean; a smaller group joining a cluster of 3+, within `join_gap` of that cluster's.

    And, when `crowd_k` is set (not 0), a crowd check (search.cluster.methods.CrowdCheck): a second pass
    inside each cluster asks every merge's link to clear how close other people come to the faces (each
    face's `crowd_k`-th nearest face outside its cluster) by `crowd_margin` for two single faces, tending
    to `crowd_margin_large` for large clusters."""

    threshold: float
    floor: float
    k: int = DEFAULT_K
    method: str = "average"
    include_labeled: bool = False
    # faces below the quality gate (blurred, cut off, tiny...) look alike across people: left out by default
    include_low_quality: bool = False
    cohesion_gap: float | None = None  # None: no consistency check (galleries clustered before it)
    join_gap: float | None = None
    crowd_k: int | None = None  # None or 0: no crowd check (galleries clustered before it)
    crowd_margin: float | None = None
    crowd_margin_large: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def consistency(self) -> Consistency | None:
        if self.cohesion_gap is None:
            return None
        return Consistency(self.cohesion_gap, self.cohesion_gap if self.join_gap is None else self.join_gap)

    def crowd(self) -> CrowdCheck | None:
        if not self.crowd_k:
            return None
        margin = 0.0 if self.crowd_margin is None else self.crowd_margin
        return CrowdCheck(self.crowd_k, margin, margin if self.crowd_margin_large is None else self.crowd_margin_large)

    def stricter(self, threshold: float | None = None) -> ClusterSettings:
        """The setting `clusters split` and the doubtful marks use on one cluster's faces: a stricter
        threshold (and floor) and no crowd check. Among one cluster's faces alone the crowd is the
        cluster's other part, which would split one person further (it marked more faces of the right
        person on LFW A–J and not one more face of another)."""
        t = self.threshold + SPLIT_STEP if threshold is None else threshold
        return replace(self, threshold=t, floor=min(t, self.floor + (t - self.threshold)), crowd_k=None)


# Tuned on half of the LFW A–J people (seed 0's half 0 alone, three draws of the photos; product ingest,
# dlib-resnet with flip averaging, faces below the quality gate left out) with at most 6 and at most 20
# photos per person, checked on the other half and on all people (benchmarks/cluster_quality.py;
# docs/people-and-clusters.md). Flip averaging raises every cosine a little, so a gallery built without
# it (its model stamp has no "flip") keeps the setting tuned on such embeddings, from before the crowd
# check (no such gallery of LFW was measured with it).
MODEL_DEFAULTS: dict[str, ClusterSettings] = {
    "dlib-resnet": ClusterSettings(threshold=0.945, floor=0.925, cohesion_gap=0.016, join_gap=0.026,
                                   crowd_k=3, crowd_margin=0.0125, crowd_margin_large=-0.0075),
    "dlib-resnet/no-flip": ClusterSettings(threshold=0.9425, floor=0.9275, cohesion_gap=0.016, join_gap=0.026),
}
NO_FLIP = "/no-flip"


def defaults_key(stamp: dict[str, Any] | None) -> str:
    """The MODEL_DEFAULTS key for a gallery's model stamp: its model name, or the name's no-flip entry
    when the gallery's embeddings were made without flip averaging and such an entry exists."""
    name = str((stamp or {}).get("name", ""))
    if not (stamp or {}).get("flip") and name + NO_FLIP in MODEL_DEFAULTS:
        return name + NO_FLIP
    return name


def resolve_settings(
    model: str,
    previous: dict | None,
    *,
    threshold: float | None = None,
    floor: float | None = None,
    k: int | None = None,
    method: str | None = None,
    include_labeled: bool | None = None,
    include_low_quality: bool | None = None,
    cohesion_gap: float | None = None,
    join_gap: float | None = None,
    crowd_k: int | None = None,
    crowd_margin: float | None = None,
    crowd_margin_large: float | None = None,
) -> ClusterSettings:
    """The settings of this run: what was asked, else those of the gallery's last clustering (so that an
    incremental run adds faces the way the clusters were made), else the model's measured defaults."""
    if previous:
        base = ClusterSettings(**{key: previous[key] for key in ClusterSettings.__dataclass_fields__
                                  if key in previous})
    elif model in MODEL_DEFAULTS:
        base = MODEL_DEFAULTS[model]
    elif threshold is None:
        raise GalleryError(
            f"No measured clustering setting for model '{model}': give one with --threshold (the cosine two "
            "single faces of one person must reach; benchmarks/cluster_quality.py measures it on labeled data)."
        )
    else:
        base = ClusterSettings(threshold=threshold, floor=threshold if floor is None else floor)
    asked: dict[str, Any] = {"threshold": threshold, "floor": floor, "k": k, "method": method,
                             "include_labeled": include_labeled, "include_low_quality": include_low_quality,
                             "cohesion_gap": cohesion_gap, "join_gap": join_gap, "crowd_k": crowd_k,
                             "crowd_margin": crowd_margin, "crowd_margin_large": crowd_margin_large}
    changes = {key: value for key, value in asked.items() if value is not None}
    if threshold is not None and floor is None and not previous and model in MODEL_DEFAULTS:
        # keep the default gap between single faces and large clusters
        changes["floor"] = threshold - (base.threshold - base.floor)
    settings = replace(base, **changes)
    if not (-1.0 <= settings.floor <= settings.threshold <= 1.0):
        raise GalleryError(f"Need -1 <= floor <= threshold <= 1 (got floor {settings.floor}, "
                           f"threshold {settings.threshold}).")
    if any(gap is not None and not 0 <= gap <= 1 for gap in (settings.cohesion_gap, settings.join_gap)):
        raise GalleryError(f"Consistency gaps are cosines between 0 and 1 (got {settings.cohesion_gap}, "
                           f"{settings.join_gap}).")
    if settings.k < 1:
        raise GalleryError("k must be at least 1.")
    if settings.crowd_k is not None and not 0 <= settings.crowd_k <= settings.k:
        raise GalleryError(f"The crowd check's neighbour is one of the graph's k = {settings.k} (got crowd k "
                           f"{settings.crowd_k}; 0 turns the check off).")
    if any(m is not None and not -1 <= m <= 1 for m in (settings.crowd_margin, settings.crowd_margin_large)):
        raise GalleryError(f"Crowd margins are cosines between -1 and 1 (got {settings.crowd_margin}, "
                           f"{settings.crowd_margin_large}).")
    if settings.method not in METHODS:
        raise GalleryError(f"Unknown clustering method '{settings.method}' (one of: {', '.join(METHODS)}).")
    return settings


def changed_settings(previous: dict | None, settings: ClusterSettings) -> list[str]:
    """Which settings differ from the last clustering's (an incremental run must not mix two). A setting
    the last clustering's record lacks (it came before that setting existed) had its default then."""
    if not previous:
        return []
    defaults = {name: field.default for name, field in ClusterSettings.__dataclass_fields__.items()}
    return [key for key, value in settings.as_dict().items()
            if (previous[key] if key in previous else defaults[key]) != value]
