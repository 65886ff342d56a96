"""The one place that decides the thresholds in force, and says where they came from.

Two questions, two thresholds:
- **1:K identification** ("who is this?", `gallery search`): the decision rule of search.decision (combined
  score of best face and template, minus a weight x the runner-up's) against a threshold on that
  statistic. In order: an explicit value (`--threshold`, on the statistic); the gallery's calibration
  (rule and threshold calibrated together, `gallery calibrate`, run automatically by
  gallery.app.indexing.calibrate_if_due);
  a labeled gallery that is not calibrated: the model's default rule with a *conservative default*
  threshold for its number of identities (`CONSERVATIVE`, measured); a model without measurements names
  no one.
- **1:1 verification** ("are these two faces one person?", `gallery verify`, and `search --faces`, which
  compares faces one by one): a threshold on the cosine of two faces: an explicit value; the gallery's
  1:1 calibration (genuine and impostor pairs of its labeled faces, at a target false match rate); the
  model's default (best accuracy on LFW pairs).

A 1:K search compares a face with every identity, so its threshold must hold the false positive rate
over K comparisons at once; a 1:1 threshold only has to hold it for one pair. Using one for the other
either names strangers or refuses true matches.

Automatic calibration rule (`needs_calibration`): a gallery with at least `MIN_CALIBRATION_IDENTITIES`
identities that have two or more labeled faces is calibrated when it has no calibration yet, when its
calibration was made for an earlier decision rule, or when its labeled faces grew by `STALE_GROWTH`.

This module only resolves values (it reads the gallery's records, never searches): the searcher uses it,
and running a calibration (search.calibrate) sits above the searcher.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, replace

from gallery.errors import GalleryError
from gallery.faces.models import ModelSpec, get_model_spec
from gallery.store import Gallery
from search.decision import DecisionRule

MIN_CALIBRATION_IDENTITIES = 10  # identities with a mate: fewer gives too few mated searches to trust
STALE_GROWTH = 1.25  # labeled faces x1.25 since the last calibration: calibrate again
TARGET_FPIR = 0.01
TARGET_FMR = 0.001  # 1:1 verification: false match rate of the calibrated 1:1 threshold
RULE_VERSION = 2  # calibrations from before the decision rule (a best-face threshold) are recalibrated

# Per model: the decision rule an uncalibrated gallery uses, and (identities enrolled, threshold on its
# statistic) at which a never-enrolled face is named with probability <= 1%, measured on LFW A–J (flip
# averaging on, as new galleries are built) by `python benchmarks/open_set.py defaults GALLERY --draws-small 6
# --draws 1 --seed 1` (random K-identity galleries, every other person's faces as strangers, through the
# product's Searcher; the 99th percentile of the strangers' statistic, pooled over draws, made monotone in K).
# Checked on as many fresh draws: FPIR 1.18% at K=1, 0.56% at 3, 0.40% at 10, 0.07-0.20% from 30 to 1,000.
# Between the points the threshold is interpolated in log K; past the last point the last one holds.
DEFAULT_RULES: dict[str, DecisionRule] = {
    "dlib-resnet": DecisionRule(template_share=0.5, weight=0.4, runner_up_prior=0.85),
}
CONSERVATIVE: dict[str, list[tuple[int, float]]] = {
    "dlib-resnet": [(1, 0.5688), (3, 0.5852), (10, 0.5852), (30, 0.5852), (100, 0.5852), (300, 0.5852),
                    (1000, 0.5852)],
}

NO_ONE = 1.0 + 1e-6  # above any cosine similarity (and any statistic): the answer is always "unknown"
# A calibration measures FPIR from its non-mated searches; below 10 / FPIR of them (1,000 at 1%) it
# cannot resolve the target, and its threshold is not allowed below the conservative default.
MIN_NONMATED_PER_FPIR = 10


@dataclass(frozen=True)
class Decision:
    """What a 1:K search decides with: the rule, the threshold on its statistic, and where they came from."""

    rule: DecisionRule
    threshold: float | None
    source: str


def default_rule(spec: ModelSpec) -> DecisionRule:
    """The model's measured rule for uncalibrated galleries; without measurements, the proposal's shape
    (half template, half the runner-up) with no prior (such a model names no one until calibrated)."""
    return DEFAULT_RULES.get(spec.name, DecisionRule(0.5, 0.5, 0.0))


def calibration_record(gallery: Gallery) -> dict | None:
    """The gallery's calibration for the current decision rule, or None (none, or an older rule's)."""
    record = gallery.calibrated_threshold()
    if not record or record.get("rule_version") != RULE_VERSION or "rule" not in record:
        return None
    return record


def conservative_threshold(spec: ModelSpec, identities: int) -> tuple[float, str]:
    """(threshold, source) for a labeled gallery that is not calibrated."""
    table = CONSERVATIVE.get(spec.name)
    if not table:
        return NO_ONE, (f"uncalibrated: no impostor measurements for model '{spec.name}', so no one is named; "
                        "run `gallery calibrate` (needs labeled faces of several people)")
    counts = [k for k, _ in table]
    k = max(1, identities)
    i = bisect.bisect_left(counts, k)
    if i == 0:
        value = table[0][1]
    elif i == len(table):
        value = table[-1][1]
    else:
        (k0, t0), (k1, t1) = table[i - 1], table[i]
        w = (math.log(k) - math.log(k0)) / (math.log(k1) - math.log(k0))
        value = t0 + w * (t1 - t0)
    return round(value, 4), (
        f"conservative default for {identities} identities (impostor scores measured on LFW, FPIR <= "
        f"{TARGET_FPIR:.0%}); calibrated automatically once {MIN_CALIBRATION_IDENTITIES} people have 2+ photos"
    )


def resolve_decision(
    gallery: Gallery | None, threshold: float | None = None, weight: float | None = None,
    spec: ModelSpec | None = None,
) -> Decision:
    """The 1:K rule and threshold for searches of this gallery (see the module doc); `threshold` and
    `weight` override the calibrated or default ones."""
    rule, value, source = None, None, ""
    if gallery is not None:
        stamp = gallery.model_stamp
        if stamp is None:
            return Decision(DecisionRule(), None, "none: the gallery has no model yet")
        try:
            spec = get_model_spec(stamp["name"])
        except GalleryError:
            spec = None
            source = f"none known for model '{stamp['name']}' (pass --threshold)"
        record = calibration_record(gallery)
        if record is not None:
            rule = DecisionRule.from_dict(record["rule"])
            value, source = float(record["value"]), f"calibrated ({record.get('source', 'gallery calibrate')})"
        elif spec is not None:
            rule = default_rule(spec)
            value, source = conservative_threshold(spec, max(1, gallery.labeled_counts().identities))
    elif spec is not None:
        rule = default_rule(spec)
    if rule is None:
        rule = DecisionRule()
    if weight is not None:
        rule = replace(rule, weight=float(weight))
        source = f"{source}; weight {weight:g} from --weight" if source else f"weight {weight:g} from --weight"
    if threshold is not None:
        return Decision(rule, float(threshold), "--threshold")
    if value is None and not source:
        source = "none: no gallery and no model"
    return Decision(rule, value, source)


def resolve_threshold(
    gallery: Gallery | None, override: float | None = None, spec: ModelSpec | None = None
) -> tuple[float | None, str]:
    """(threshold, source) of 1:K searches of this gallery (on the decision statistic); without a gallery,
    the model's 1:1 default (see resolve_one_to_one)."""
    if gallery is None:
        return resolve_one_to_one(None, override, spec)
    decision = resolve_decision(gallery, override)
    return decision.threshold, decision.source


def resolve_one_to_one(
    gallery: Gallery | None, override: float | None = None, spec: ModelSpec | None = None
) -> tuple[float | None, str]:
    """(threshold on the cosine of two faces, source) for 1:1 questions: verify, and search --faces."""
    if override is not None:
        return float(override), "--threshold (1:1)"
    if gallery is not None:
        one = (gallery.calibrated_threshold() or {}).get("one_to_one")  # independent of the 1:K rule's version
        if one and one.get("value") is not None:
            return float(one["value"]), f"calibrated 1:1 ({one.get('source', 'gallery calibrate')})"
        stamp = gallery.model_stamp
        if stamp is None:
            return None, "none: the gallery has no model yet"
        try:
            spec = get_model_spec(stamp["name"])
        except GalleryError:
            return None, f"none known for model '{stamp['name']}' (pass --threshold)"
    if spec is None:
        return None, "none: no gallery and no model"
    return spec.default_threshold, f"model default 1:1 ({spec.threshold_source})"


@dataclass
class CalibrationStatus:
    calibrated_at: float | None
    identities_at_calibration: int | None
    labeled_faces_at_calibration: int | None
    labeled_faces: int
    mated_identities: int
    stale: bool  # grew past STALE_GROWTH since the calibration
    can_calibrate: bool  # enough identities with a mate
    outdated: bool = False  # calibrated for an earlier decision rule (a best-face threshold): not used


def calibration_status(gallery: Gallery) -> CalibrationStatus:
    raw = gallery.calibrated_threshold() or {}
    record = calibration_record(gallery) or {}
    report = record.get("report") or {}
    counts = gallery.labeled_counts()
    at = report.get("labeled_faces")
    stale = bool(record) and at is not None and counts.faces >= STALE_GROWTH * max(1, at)
    return CalibrationStatus(record.get("calibrated_at"), report.get("identities"), at, counts.faces,
                             counts.mated_identities, stale, counts.mated_identities >= MIN_CALIBRATION_IDENTITIES,
                             outdated=bool(raw) and not record)


def needs_calibration(status: CalibrationStatus) -> bool:
    """The automatic rule: enough identities with a mate, and no calibration yet or a stale one."""
    return status.can_calibrate and (status.calibrated_at is None or status.stale)
