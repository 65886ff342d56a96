"""Quality of faces already in a gallery: measure what was never measured, judge again with today's gate.

A gallery ingested before faces had quality measures holds everything but the chip's sharpness: the box
(size), the detection score, and the 5 landmarks (pose, and with the photo's stored size the share of
the face chip inside the photo) are in its shards and database. `measure_gallery` computes those; with
`from_photos=True` it also reads each photo again, aligns its faces from the stored landmarks (no
detection, no embedding) and measures sharpness. Every face is then judged by the current gate
(gallery.faces.quality.QUALITY_GATE); the identities whose faces changed verdict get their templates
recomputed in the same transaction (gallery.store.templates).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gallery.faces.models import model_for_gallery
from gallery.faces.quality import QUALITY_GATE, QualityGate, gate_issue, inside_shares, pose_offsets
from gallery.progress import ProgressFn, report
from gallery.store import Gallery

BATCH = 5000  # faces written per transaction


@dataclass
class QualityReport:
    faces: int  # live faces considered
    measured: int  # faces whose geometric measures were computed now
    sharpness_measured: int  # faces whose sharpness was measured from their photo now
    photos_missing: int  # photos that could not be read again (their faces keep no sharpness)
    below_gate: int  # live faces below the gate after this run
    changed: int  # faces whose verdict changed
    without_sharpness: int  # live faces still without a sharpness measure
    gate: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _photo_sharpness(gallery: Gallery, rows: dict[int, dict], landmarks: dict[int, np.ndarray],
                     progress: ProgressFn | None) -> tuple[dict[int, float], int]:
    """face id -> sharpness of its aligned chip, from its photo read again; and how many photos failed."""
    import torch

    from gallery.faces.align import align_faces
    from gallery.faces.decode import decode_photo
    from gallery.faces.quality import chip_masks, sharpness

    spec = model_for_gallery(gallery.model_stamp)
    template = spec.template_array()
    by_photo: dict[str, list[int]] = {}
    for face_id, row in rows.items():
        by_photo.setdefault(row["path"], []).append(face_id)
    out: dict[int, float] = {}
    missing = 0
    for done, (path, faces) in enumerate(sorted(by_photo.items())):
        photo = decode_photo(path, 0, 0)
        if not photo.ok or photo.pixels is None:
            missing += 1
            continue
        pixels = torch.from_numpy(photo.pixels).permute(2, 0, 1)
        lm = np.stack([landmarks[f] for f in faces]) * photo.scale
        masks = chip_masks(lm, template, spec.input_size, photo.pixels.shape[1], photo.pixels.shape[0])
        for face_id, value in zip(faces, sharpness(align_faces(pixels, lm, template, spec.input_size), masks)):
            out[face_id] = float(value)
        if done % 200 == 0:
            report(progress, "sharpness", done, len(by_photo), "photos")
    return out, missing


def measure_gallery(gallery: Gallery, from_photos: bool = False, rejudge: bool = True,
                    gate: QualityGate = QUALITY_GATE, progress: ProgressFn | None = None,
                    again: bool = False) -> QualityReport:
    """Measure the faces never measured (with `from_photos` their sharpness too; with `again` every face
    once more), and judge every live face by `gate` (with `rejudge`; otherwise only the faces measured now).
    See the module doc."""
    stamp = gallery.model_stamp
    rows = gallery.face_quality_rows()
    if again:
        for r in rows.values():
            r["q_size"] = None
            if from_photos:
                r["q_sharpness"] = None
    todo = {f for f, r in rows.items() if r["q_size"] is None}
    if from_photos:
        todo |= {f for f, r in rows.items() if r["q_sharpness"] is None}
    landmarks: dict[int, np.ndarray] = {}
    boxes: dict[int, np.ndarray] = {}
    if todo and stamp is not None:
        wanted = np.fromiter(sorted(todo), np.int64, len(todo))
        for ids, b, lm, _ in gallery.iter_face_geometry():
            keep = np.isin(ids, wanted)
            for i in np.flatnonzero(keep):
                landmarks[int(ids[i])] = lm[i]
                boxes[int(ids[i])] = b[i]
    measured = 0
    if stamp is not None:
        spec = model_for_gallery(stamp)
        template = spec.template_array()
        for face_id in sorted(f for f in todo if rows[f]["q_size"] is None and f in landmarks):
            r = rows[face_id]
            b, lm = boxes[face_id], landmarks[face_id]
            r["q_size"] = float(min(b[2] - b[0], b[3] - b[1]))
            if not np.any(lm):  # a face stored without landmarks (no photo): its pose and chip are unknown
                continue
            r["q_pose"] = float(pose_offsets(lm[None])[0])
            r["q_inside"] = float(inside_shares(lm[None], template, spec.input_size, r["width"] or 0,
                                                r["height"] or 0)[0]) if r["width"] and r["height"] else None
            measured += 1
    sharp_measured, missing = 0, 0
    if from_photos and stamp is not None:
        wanted_rows = {f: rows[f] for f in todo if rows[f]["q_sharpness"] is None and f in landmarks}
        values, missing = _photo_sharpness(gallery, wanted_rows, landmarks, progress)
        for face_id, value in values.items():
            rows[face_id]["q_sharpness"] = value
        sharp_measured = len(values)
    judged = rows if rejudge else {f: rows[f] for f in todo}
    updates: dict[int, dict] = {}
    changed = 0
    for face_id, r in judged.items():
        issue = gate_issue(r["q_size"], r["det_score"], r["q_inside"], r["q_sharpness"], r["q_pose"], gate)
        if issue != r["quality_issue"]:
            changed += (issue is None) != (r["quality_issue"] is None)
        if face_id in todo or issue != r["quality_issue"]:
            updates[face_id] = {"q_size": r["q_size"], "q_inside": r["q_inside"], "q_sharpness": r["q_sharpness"],
                                "q_pose": r["q_pose"], "quality_issue": issue}
            r["quality_issue"] = issue
    ids = sorted(updates)
    for start in range(0, len(ids), BATCH):
        gallery.set_face_quality({f: updates[f] for f in ids[start : start + BATCH]})
        report(progress, "write", min(start + BATCH, len(ids)), len(ids), "faces")
    return QualityReport(
        faces=len(rows), measured=measured, sharpness_measured=sharp_measured, photos_missing=missing,
        below_gate=sum(r["quality_issue"] is not None for r in rows.values()), changed=changed,
        without_sharpness=sum(r["q_sharpness"] is None for r in rows.values()), gate=gate.as_dict(),
    )


def needs_measuring(gallery: Gallery) -> bool:
    """True when live faces have no quality measures yet (a gallery from before they existed)."""
    return gallery.unmeasured_face_count() > 0
