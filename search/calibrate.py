"""`gallery calibrate`: choose the match threshold on the gallery's own labeled faces.

Leave-one-out identification: each sampled labeled face is searched against the rest of the
gallery (itself excluded). Its *mated* score is its identity's aggregated score among the
neighbours (only identities with 2+ faces have a mate). Its *non-mated* score is the best score of
any other identity: exactly what the search would report if the face's identity were held out of
the gallery entirely (the open-set impostor case). The threshold is the lowest score at which the
false positive identification rate (non-mated searches answered with someone) stays within the
target; FNIR (mated searches not answered correctly) and rank-1 are reported at that threshold.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import func, select

from gallery.store import db
from gallery.store.db import Face, Identity, Shard
from gallery.store.shards import embeddings_from_column
from search.identify import rank_identities
from search.searcher import Searcher


class CalibrationError(RuntimeError):
    pass


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
    applied: bool
    genuine_scores: dict[str, float]  # summary of the mated score distribution
    impostor_scores: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_embeddings(gallery_root: Path, face_ids: list[int], shard_of: dict[int, str]) -> np.ndarray:
    """Embeddings of the given faces, reading only the shards that hold them."""
    by_shard: dict[str, list[int]] = defaultdict(list)
    for fid in face_ids:
        by_shard[shard_of[fid]].append(fid)
    found: dict[int, np.ndarray] = {}
    for filename, ids in by_shard.items():
        table = pq.read_table(gallery_root / "shards" / filename, columns=["face_id", "embedding"])
        table = table.filter(pc.is_in(table.column("face_id"), value_set=pa.array(ids, type=pa.int64())))
        dim = table.schema.field("embedding").type.list_size
        emb = embeddings_from_column(table.column("embedding"), dim)
        for fid, vec in zip(table.column("face_id").to_pylist(), emb):
            found[fid] = vec
    return np.stack([found[fid] for fid in face_ids])


def _summary(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.quantile(values, [0.01, 0.05, 0.5, 0.95, 0.99])
    return {
        "n": len(values),
        "mean": float(values.mean()),
        "p01": float(q[0]),
        "p05": float(q[1]),
        "p50": float(q[2]),
        "p95": float(q[3]),
        "p99": float(q[4]),
    }


def calibrate(
    searcher: Searcher,
    target_fpir: float = 0.01,
    max_probes: int = 2000,
    seed: int = 0,
    apply: bool = True,
) -> CalibrationReport:
    gallery = searcher.gallery
    with gallery.session() as s:
        rows = s.execute(
            select(Face.face_id, Identity.name, Shard.filename)
            .join(Identity, Identity.identity_id == Face.identity_id)
            .join(Shard, Shard.shard_id == Face.shard_id)
            .where(Face.deleted.is_(False))
        ).all()
        n_identities = (
            s.scalar(
                select(func.count(func.distinct(Face.identity_id))).where(
                    Face.deleted.is_(False), Face.identity_id.is_not(None)
                )
            )
            or 0
        )
    if n_identities < 2:
        raise CalibrationError(
            "Calibration needs labeled faces of at least 2 identities (ingest with --labels folder or csv:FILE)."
        )
    counts: dict[str, int] = defaultdict(int)
    for _, name, _ in rows:
        counts[name] += 1
    if not any(c >= 2 for c in counts.values()):
        raise CalibrationError("Calibration needs at least one identity with 2 or more labeled faces.")
    rng = np.random.default_rng(seed)
    # Prefer probes that have a mate, but keep non-mated ones too: all count on the impostor side.
    order = rng.permutation(len(rows))[:max_probes]
    probes = [rows[i] for i in order]
    face_ids = [int(r[0]) for r in probes]
    shard_of = {int(r[0]): r[2] for r in probes}
    x = read_embeddings(gallery.root, face_ids, shard_of)

    genuine, impostor, correct_rank1, mated_total, mated_hits_at = [], [], 0, 0, []
    batch = 256
    for start in range(0, len(probes), batch):
        part = probes[start : start + batch]
        neighbours = searcher.neighbours(x[start : start + batch], k=2, exclude_face_ids=[{int(r[0])} for r in part])
        for (_, name, _), found in zip(part, neighbours):
            ranked = rank_identities(found, k=len(found) or 1, aggregation=searcher.aggregation)
            others = [score for ident, score, _ in ranked if ident != name]
            impostor.append(others[0] if others else -1.0)
            if counts[name] >= 2:
                mated_total += 1
                own = [score for ident, score, _ in ranked if ident == name]
                mate = own[0] if own else -1.0
                genuine.append(mate)
                top_is_mate = bool(ranked) and ranked[0][0] == name
                correct_rank1 += int(top_is_mate)
                mated_hits_at.append(mate if top_is_mate else -math.inf)

    imp = np.sort(np.asarray(impostor))[::-1]
    allowed = int(math.floor(target_fpir * len(imp)))
    # Lowest threshold whose FPIR stays within the target: just above the (allowed+1)-th best impostor.
    threshold = float(np.nextafter(np.float32(imp[min(allowed, len(imp) - 1)]), np.float32(2.0)))
    threshold = math.ceil(threshold * 1e6) / 1e6  # stored rounded: round up, never below the boundary
    fpir = float((imp >= threshold).mean())
    hits = np.asarray(mated_hits_at)
    fnir = float((hits < threshold).mean()) if len(hits) else float("nan")
    rank1 = correct_rank1 / mated_total if mated_total else float("nan")
    report = CalibrationReport(
        threshold=threshold,
        target_fpir=target_fpir,
        fpir=fpir,
        fnir=fnir,
        rank1=rank1,
        mated_searches=mated_total,
        nonmated_searches=len(imp),
        identities=int(n_identities),
        applied=apply,
        genuine_scores=_summary(np.asarray(genuine)),
        impostor_scores=_summary(imp),
    )
    if apply:
        with gallery.session() as s, s.begin():
            db.set_meta(
                s,
                "threshold",
                {
                    "value": report.threshold,
                    "source": f"gallery calibrate: FPIR {fpir:.2%} (target {target_fpir:.2%}), FNIR {fnir:.2%}, "
                    f"{mated_total} mated / {len(imp)} non-mated searches",
                    "calibrated_at": time.time(),
                    "report": report.as_dict(),
                },
            )
    return report
