"""The one place that decides the match threshold in force, and says where it came from.

Order: an explicit value (`--threshold`), then the gallery's calibrated threshold (`gallery
calibrate`), then the default of the gallery's model. A gallery whose model is not in the registry
(a generated benchmark gallery) has no default: (None, reason).
"""

from __future__ import annotations

from gallery.errors import GalleryError
from gallery.faces.models import ModelSpec, get_model_spec
from gallery.store import Gallery


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
    if spec is None:
        return None, "none: no gallery and no model"
    return spec.default_threshold, f"model default ({spec.threshold_source})"
