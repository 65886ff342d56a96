"""The one place that decides the match threshold in force, and says where it came from.

Order:
1. an explicit value (`--threshold`);
2. the gallery's calibrated threshold (`gallery calibrate`, run automatically by `refresh_threshold`
   after an index build/update or an ingest that changed a labeled gallery enough: see below);
3. a labeled gallery that is not calibrated (too few identities with two or more faces to calibrate,
   or not calibrated yet): a *conservative default* for its number of identities, from impostor
   scores measured for the model (`CONSERVATIVE`); a model without measurements names no one;
4. an unlabeled gallery ("where else does this face appear?"): the model's verification default.

Automatic calibration rule (`needs_calibration`): a gallery with at least `MIN_CALIBRATION_IDENTITIES`
identities that have two or more labeled faces is calibrated when it has no calibration yet, or when
its labeled faces grew by `STALE_GROWTH` (x) since the last one.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gallery.errors import GalleryError, NoIndexError
from gallery.faces.models import ModelSpec, get_model_spec
from gallery.store import Gallery

if TYPE_CHECKING:
    from search.calibrate import CalibrationReport

MIN_CALIBRATION_IDENTITIES = 10  # identities with a mate: fewer gives too few mated searches to trust
STALE_GROWTH = 1.25  # labeled faces x1.25 since the last calibration: calibrate again
TARGET_FPIR = 0.01

# Per model: (identities enrolled, threshold) at which a never-enrolled face is named with probability
# <= 1%, from the distribution of a face's best score against one other identity, measured on the
# LFW A–J gallery by `python benchmarks/open_set.py` (see that script: t(K) = the 0.99**(1/K) quantile).
# Between the points the threshold is interpolated in log K; past the last point the last one holds.
# Measured FPIR of these thresholds on random K-identity galleries (every other person's faces as
# strangers): 0.85-1.27% for K = 1..1000 (benchmarks/open_set.py, LFW A–J, seed 0).
CONSERVATIVE: dict[str, list[tuple[int, float]]] = {
    "dlib-resnet": [(1, 0.9104), (3, 0.9195), (10, 0.9279), (30, 0.9347), (100, 0.9415), (300, 0.9471),
                    (1000, 0.9522)],
}

NO_ONE = 1.0 + 1e-6  # above any cosine similarity: the answer is always "unknown"
# A calibration measures FPIR from its non-mated searches; below 10 / FPIR of them (1,000 at 1%) it
# cannot resolve the target, and its threshold is not allowed below the conservative default.
MIN_NONMATED_PER_FPIR = 10


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


def resolve_threshold(
    gallery: Gallery | None, override: float | None = None, spec: ModelSpec | None = None
) -> tuple[float | None, str]:
    """(threshold, source) for searches of this gallery; without a gallery (1:1 verification of two
    photos), the given model's default."""
    if override is not None:
        return float(override), "--threshold"
    if gallery is not None:
        calibrated = gallery.calibrated_threshold()
        if calibrated is not None:
            return float(calibrated["value"]), f"calibrated ({calibrated.get('source', 'gallery calibrate')})"
        stamp = gallery.model_stamp
        if stamp is None:
            return None, "none: the gallery has no model yet"
        try:
            spec = get_model_spec(stamp["name"])
        except GalleryError:
            return None, f"none known for model '{stamp['name']}' (pass --threshold)"
        identities = gallery.labeled_counts().identities
        if identities:
            return conservative_threshold(spec, identities)
    if spec is None:
        return None, "none: no gallery and no model"
    return spec.default_threshold, f"model default ({spec.threshold_source})"


@dataclass
class CalibrationStatus:
    calibrated_at: float | None
    identities_at_calibration: int | None
    labeled_faces_at_calibration: int | None
    labeled_faces: int
    mated_identities: int
    stale: bool  # grew past STALE_GROWTH since the calibration
    can_calibrate: bool  # enough identities with a mate


def calibration_status(gallery: Gallery) -> CalibrationStatus:
    record = gallery.calibrated_threshold() or {}
    report = record.get("report") or {}
    counts = gallery.labeled_counts()
    at = report.get("labeled_faces")
    stale = bool(record) and at is not None and counts.faces >= STALE_GROWTH * max(1, at)
    return CalibrationStatus(record.get("calibrated_at"), report.get("identities"), at, counts.faces,
                             counts.mated_identities, stale, counts.mated_identities >= MIN_CALIBRATION_IDENTITIES)


def needs_calibration(status: CalibrationStatus) -> bool:
    """The automatic rule: enough identities with a mate, and no calibration yet or a stale one."""
    return status.can_calibrate and (status.calibrated_at is None or status.stale)


def refresh_threshold(gallery_dir: Path | str) -> CalibrationReport | None:
    """Calibrate automatically when the gallery needs it (the rule above) and has an index to search;
    the report, or None when nothing was done. The CLI runs this after ingest, sync and index
    build/update. Deciding costs one SQLite query; only a calibration loads the search machinery."""
    with Gallery.open(gallery_dir) as gallery:
        if not needs_calibration(calibration_status(gallery)):
            return None
    from search.calibrate import calibrate
    from search.searcher import Searcher

    try:
        searcher = Searcher(gallery_dir)
    except NoIndexError:
        return None
    with searcher:
        return calibrate(searcher, target_fpir=TARGET_FPIR)
