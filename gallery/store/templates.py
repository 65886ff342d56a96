"""Identity templates: per identity, the sum of its live, labeled, good-quality faces' unit embeddings.

The template is that sum renormalised (the renormalised mean). What the store keeps is the float64 sum
and the face count, so that an ingest adds new faces without reading old ones, and a search that leaves
one face out (leave-one-out calibration) can subtract it exactly.

Templates follow every change in the transaction that makes it:
- an ingest commit adds its new labeled good-quality faces (`add_faces`, called by the writer);
- any UPDATE of a face's identity, deleted flag or quality verdict, and any DELETE of a face, marks
  the identities concerned (SQLite triggers, gallery.store.schema.TEMPLATE_TRIGGERS), and the same
  transaction recomputes their templates just before it commits (`install_commit_hook`): relabels,
  renames (nothing to do: the template belongs to the identity id), merges, deletions, erasure, cluster
  naming, sync, labels import, quality updates and repair all go through it;
- deleting an identity row drops its template (trigger).

`refresh_templates` and `drop_templates` are the explicit entry points (erasure and repair may call
them directly; recomputing is idempotent, so an interrupted operation that runs again is safe).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

import numpy as np
from sqlalchemy import delete, event, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gallery.store import schema
from gallery.store.schema import Face, IdentityTemplate, TemplateDirty

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


class EmbeddingSource(Protocol):
    """What the templates read of a gallery (gallery.store.gallery.Gallery is one): this module sits
    below the gallery, which installs its commit hook and builds the templates of an older gallery."""

    def session(self) -> AbstractContextManager[Session]: ...
    def read_embeddings(self, face_ids: np.ndarray | list[int], session: Session | None = None) -> np.ndarray: ...
    def iter_embeddings(self) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


SQLITE_MAX_PARAMS = 900
TEMPLATES_META = "templates"  # meta key: {"version": 1} once every identity's template was built


def counted_faces():  # noqa: ANN201 - a SQLAlchemy clause
    """The faces that enrol into templates: live, labeled, not below the quality gate."""
    return (Face.deleted.is_(False)) & Face.identity_id.is_not(None) & Face.quality_issue.is_(None)


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), SQLITE_MAX_PARAMS):
        yield ids[start : start + SQLITE_MAX_PARAMS]


def sums_by_identity(identity_ids: np.ndarray, embeddings: np.ndarray) -> dict[int, tuple[int, np.ndarray]]:
    """identity id -> (faces, float64 sum of their embeddings) for rows of (identity id, embedding)."""
    out: dict[int, tuple[int, np.ndarray]] = {}
    if len(identity_ids) == 0:
        return out
    ids = np.asarray(identity_ids, np.int64)
    unique, inverse = np.unique(ids, return_inverse=True)
    totals = np.zeros((unique.size, embeddings.shape[1]), np.float64)
    np.add.at(totals, inverse, np.asarray(embeddings, np.float64))
    counts = np.bincount(inverse, minlength=unique.size)
    for i, identity_id in enumerate(unique.tolist()):
        out[int(identity_id)] = (int(counts[i]), totals[i])
    return out


def add_faces(s: Session, identity_ids: np.ndarray, embeddings: np.ndarray) -> None:
    """Add new faces (labeled, good quality) to their identities' templates, in the caller's transaction."""
    added = sums_by_identity(identity_ids, embeddings)
    if not added:
        return
    current = template_rows(s, list(added))
    rows = []
    for identity_id, (n, total) in added.items():
        if identity_id in current:
            n0, total0 = current[identity_id]
            n, total = n + n0, total + total0
        rows.append({"identity_id": identity_id, "faces": n, "total": total.astype(np.float64).tobytes()})
    _upsert(s, rows)


def _upsert(s: Session, rows: list[dict]) -> None:
    if not rows:
        return
    stmt = sqlite_insert(IdentityTemplate.__table__)
    stmt = stmt.on_conflict_do_update(index_elements=["identity_id"],
                                      set_={"faces": stmt.excluded.faces, "total": stmt.excluded.total})
    s.execute(stmt, rows)


def template_rows(s: Session, identity_ids: Iterable[int]) -> dict[int, tuple[int, np.ndarray]]:
    """identity id -> (faces, float64 sum) for the identities that have a template."""
    out: dict[int, tuple[int, np.ndarray]] = {}
    for part in _chunks(sorted({int(i) for i in identity_ids})):
        for identity_id, n, total in s.execute(
            select(IdentityTemplate.identity_id, IdentityTemplate.faces, IdentityTemplate.total)
            .where(IdentityTemplate.identity_id.in_(part))
        ):
            out[int(identity_id)] = (int(n), np.frombuffer(total, np.float64).copy())
    return out


def drop_templates(s: Session, identity_ids: Iterable[int]) -> None:
    """Delete these identities' templates (their rows are overwritten: secure_delete)."""
    for part in _chunks(sorted({int(i) for i in identity_ids})):
        s.execute(delete(IdentityTemplate).where(IdentityTemplate.identity_id.in_(part)))
        s.execute(delete(TemplateDirty).where(TemplateDirty.identity_id.in_(part)))


def refresh_templates(s: Session, identity_ids: Iterable[int], gallery: EmbeddingSource | None = None) -> None:
    """Recompute these identities' templates from their counted faces as this transaction sees them
    (an identity left with none loses its template). Reads the faces' embeddings from the shards."""
    gallery = gallery if gallery is not None else s.info.get("gallery")
    if gallery is None:
        raise RuntimeError("refresh_templates needs the gallery (session.info['gallery']) to read embeddings")
    ids = sorted({int(i) for i in identity_ids})
    if not ids:
        return
    face_ids: list[int] = []
    owners: list[int] = []
    for part in _chunks(ids):
        for face_id, identity_id in s.execute(
            select(Face.face_id, Face.identity_id).where(Face.identity_id.in_(part), counted_faces())
        ):
            face_ids.append(int(face_id))
            owners.append(int(identity_id))
    sums: dict[int, tuple[int, np.ndarray]] = {}
    if face_ids:
        x = gallery.read_embeddings(face_ids, session=s)
        sums = sums_by_identity(np.asarray(owners, np.int64), x)
    drop_templates(s, [i for i in ids if i not in sums])
    _upsert(s, [{"identity_id": i, "faces": n, "total": total.tobytes()} for i, (n, total) in sums.items()])
    for part in _chunks(ids):
        s.execute(delete(TemplateDirty).where(TemplateDirty.identity_id.in_(part)))


def refresh_marked(s: Session) -> None:
    """Recompute the templates the triggers marked in this transaction (the commit hook)."""
    marked = [int(i) for i in s.scalars(select(TemplateDirty.identity_id))]
    if marked:
        refresh_templates(s, marked)


def install_commit_hook(factory: sessionmaker) -> None:
    """Every session of this factory recomputes marked templates just before it commits."""
    event.listen(factory, "before_commit", refresh_marked)


def _sums_from_shards(gallery: EmbeddingSource, s: Session) -> dict[int, tuple[int, np.ndarray]]:
    """identity id -> (faces, float64 sum) recomputed from the counted faces, streaming the shards once."""
    rows = s.execute(select(Face.face_id, Face.identity_id).where(counted_faces()).order_by(Face.face_id)).all()
    owner = {int(f): int(i) for f, i in rows}
    out: dict[int, tuple[int, np.ndarray]] = {}
    if not owner:
        return out
    wanted = np.fromiter(owner, np.int64, len(owner))
    for ids, x in gallery.iter_embeddings():
        keep = np.isin(ids, wanted)
        if not keep.any():
            continue
        for identity_id, (n, total) in sums_by_identity(
                np.asarray([owner[int(f)] for f in ids[keep]], np.int64), x[keep]).items():
            n0, total0 = out.get(identity_id, (0, 0.0))
            out[identity_id] = (n0 + n, total0 + total)
    return out


def build_all_templates(gallery: EmbeddingSource, force: bool = False) -> int:
    """Compute every identity's template (once for a gallery from before templates existed; `force`:
    again, as repair does); returns how many. Streams the shards once."""
    with gallery.session() as s, s.begin():
        if not force and (schema.get_meta(s, TEMPLATES_META) or {}).get("version") == 1:
            return 0
        sums = _sums_from_shards(gallery, s)
        s.execute(delete(IdentityTemplate))
        s.execute(delete(TemplateDirty))
        _upsert(s, [{"identity_id": i, "faces": n, "total": np.asarray(total, np.float64).tobytes()}
                    for i, (n, total) in sums.items()])
        schema.set_meta(s, TEMPLATES_META, {"version": 1})
    return len(sums)


def template_problems(gallery: EmbeddingSource, tolerance: float = 1e-5) -> list[str]:
    """Identities whose stored template differs from one recomputed from their faces (`gallery check
    --deep`); an empty list when all agree."""
    with gallery.session() as s:
        expected = _sums_from_shards(gallery, s)
        stored = template_rows(s, set(expected) | set(s.scalars(select(IdentityTemplate.identity_id))))
    problems = []
    for identity_id in sorted(set(expected) | set(stored)):
        if identity_id not in stored or identity_id not in expected:
            problems.append(f"identity {identity_id}: template {'missing' if identity_id not in stored else 'left'}")
            continue
        (n0, t0), (n1, t1) = expected[identity_id], stored[identity_id]
        if n0 != n1 or float(np.max(np.abs(normalised(t0) - normalised(t1)))) > tolerance:
            problems.append(f"identity {identity_id}: template of {n1} faces, {n0} expected")
    return problems


def normalised(total: np.ndarray) -> np.ndarray:
    """The template (unit vector, float32) of a sum; zeros for an all-zero sum."""
    norm = float(np.linalg.norm(total))
    return (total / norm).astype(np.float32) if norm > 0 else np.zeros_like(total, np.float32)
