"""Tending a gallery: rename, merge and delete identities; relabel, delete and ignore faces; bulk labels.

Every edit is one SQLite transaction. Open searchers see it at their next query: face records are
read per query, and deletions are noticed through `PRAGMA data_version` (gallery.store.queries).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update

from gallery.errors import LabelConflict, NotInGallery
from gallery.store import schema
from gallery.store.schema import Face, Identity, Image, PendingSync, SourceFile

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class FaceDetail:
    """A face as `identities show` and `labels export` list it."""

    face_id: int
    identity: str | None
    photo: str
    box: list[float]
    det_score: float
    is_main: bool
    deleted: bool
    ignored: bool
    # quality measures (gallery.faces.quality; None: not measured) and the gate's verdict
    quality: dict | None = None


MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger number is no id of this gallery


def image_ids_at_paths(s: Session, paths: list[str]) -> dict[str, int]:
    """path -> photo id for the given paths, as file records or photo paths (identical files share a
    photo); paths the gallery does not hold are absent."""
    found: dict[str, int] = {}
    for part in _chunks(list(dict.fromkeys(paths))):
        found.update((p, i) for p, i in s.execute(select(SourceFile.path, SourceFile.image_id)
                                                  .where(SourceFile.path.in_(part), SourceFile.image_id.is_not(None))))
        found.update((p, i) for p, i in s.execute(select(Image.path, Image.image_id).where(Image.path.in_(part))))
    return found


def _chunks(ids: list, size: int = 900) -> Iterable[list]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _photo_labels_follow_main_faces(s: Session, face_ids: list[int]) -> None:
    """A photo is labeled as its main face: when a main face gets another name (a relabel, a folder
    renamed under `gallery sync`), its photo follows, so that erasing the new name takes the photo
    (with the other faces in it) along. Dropping the emptied old name must not orphan the photo."""
    main_identity = (select(Face.identity_id).where(Face.image_id == Image.image_id, Face.is_main.is_(True))
                     .limit(1).scalar_subquery())
    for part in _chunks(sorted({int(i) for i in face_ids})):
        mains = select(Face.image_id).where(Face.face_id.in_(part), Face.is_main.is_(True))
        s.execute(update(Image).where(Image.image_id.in_(mains)).values(identity_id=main_identity))


def _identity_id(s: Session, name: str) -> int:
    identity_id = s.scalar(select(Identity.identity_id).where(Identity.name == name))
    if identity_id is None:
        raise NotInGallery(f"No identity named '{name}' in this gallery (see: gallery identities --gallery DIR).")
    return int(identity_id)


def _existing_faces(s: Session, face_ids: Iterable[int]) -> list[int]:
    ids = sorted({int(i) for i in face_ids})
    found: set[int] = set()
    for part in _chunks([i for i in ids if 0 <= i <= MAX_ID]):
        found |= set(s.scalars(select(Face.face_id).where(Face.face_id.in_(part))).all())
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotInGallery(f"No face with id {', '.join(map(str, missing[:10]))} in this gallery.")
    return ids


def _quality(row: tuple) -> dict | None:
    """A face's stored quality measures as shown (None: never measured)."""
    size, inside, sharpness, pose, issue = row
    if size is None:
        return None

    def r(v: float | None, d: int) -> float | None:
        return None if v is None else round(float(v), d)

    return {"size": r(size, 1), "inside": r(inside, 3), "sharpness": r(sharpness, 1), "pose": r(pose, 3),
            "ok": issue is None, "issue": issue}


class GalleryEdits:
    """Label and deletion edits; the host class provides `session()`."""

    def session(self) -> AbstractContextManager[Session]:  # pragma: no cover - provided by Gallery
        raise NotImplementedError

    def rename_identity(self, old: str, new: str) -> int:
        """Rename; returns the number of live faces now carrying the new name."""
        new = new.strip()
        if not new:
            raise LabelConflict("An identity name cannot be empty.")
        with self.session() as s, s.begin():
            identity_id = _identity_id(s, old)
            if old != new and s.scalar(select(Identity.identity_id).where(Identity.name == new)) is not None:
                raise LabelConflict(
                    f"'{new}' already exists; to make them one person run: gallery identities merge '{old}' "
                    f"'{new}' --into '{new}'"
                )
            s.execute(update(Identity).where(Identity.identity_id == identity_id).values(name=new))
            return int(s.scalar(select(func.count()).select_from(Face)
                                .where(Face.identity_id == identity_id, Face.deleted.is_(False))) or 0)

    def merge_identities(self, names: list[str], into: str) -> int:
        """Make several identities one (named `into`, created if new); returns its live face count."""
        into = into.strip()
        if not into:
            raise LabelConflict("The merged identity needs a name (--into NAME).")
        with self.session() as s, s.begin():
            sources = {name: _identity_id(s, name) for name in dict.fromkeys(names)}
            target = schema.get_or_create_identity(s, into)
            others = [i for i in sources.values() if i != target]
            if not others:
                raise LabelConflict(f"Nothing to merge: name at least one identity other than '{into}'.")
            s.execute(update(Face).where(Face.identity_id.in_(others)).values(identity_id=target))
            s.execute(update(Image).where(Image.identity_id.in_(others)).values(identity_id=target))
            s.execute(delete(Identity).where(Identity.identity_id.in_(others)))
            return int(s.scalar(select(func.count()).select_from(Face)
                                .where(Face.identity_id == target, Face.deleted.is_(False))) or 0)

    def delete_identity(self, name: str) -> int:
        """Remove the name; its faces stay in the gallery, unlabeled. Returns how many faces it had."""
        with self.session() as s, s.begin():
            identity_id = _identity_id(s, name)
            n = s.execute(update(Face).where(Face.identity_id == identity_id).values(identity_id=None)).rowcount
            s.execute(update(Image).where(Image.identity_id == identity_id).values(identity_id=None))
            s.execute(delete(Identity).where(Identity.identity_id == identity_id))
            return int(n or 0)

    def relabel_faces(self, face_ids: Iterable[int], name: str | None) -> int:
        """Give faces an identity (created if new) or, with None, make them unlabeled."""
        with self.session() as s, s.begin():
            ids = _existing_faces(s, face_ids)
            gone = [f for part in _chunks(ids) for f in s.scalars(select(Face.face_id).where(
                Face.face_id.in_(part), Face.deleted.is_(True)))]
            if gone:
                raise NotInGallery(f"Face {', '.join(map(str, gone[:10]))} is deleted or ignored: nothing to relabel.")
            identity_id = schema.get_or_create_identity(s, name.strip()) if name and name.strip() else None
            for part in _chunks(ids):
                s.execute(update(Face).where(Face.face_id.in_(part)).values(identity_id=identity_id))
            _photo_labels_follow_main_faces(s, ids)
            self._drop_empty_identities(s)
            return len(ids)

    def delete_faces(self, face_ids: Iterable[int], ignore: bool = False) -> int:
        """Hide faces from every answer (ignore=True also remembers them as not wanted: a re-read of
        their photo does not bring them back). Returns how many were live."""
        with self.session() as s, s.begin():
            ids = _existing_faces(s, face_ids)
            values: dict = {"deleted": True, "deleted_at": time.time()}
            if ignore:
                values["ignored"] = True
            n = 0
            for part in _chunks(ids):
                n += s.execute(update(Face).where(Face.face_id.in_(part), Face.deleted.is_(False))
                               .values(**values)).rowcount or 0
                if ignore:  # faces deleted earlier can still be marked as not wanted
                    s.execute(update(Face).where(Face.face_id.in_(part)).values(ignored=True))
            return int(n)

    def delete_photos(self, paths: list[str]) -> int:
        """Delete every face of the photos at these paths (as ingested); returns how many were live."""
        with self.session() as s:
            found = image_ids_at_paths(s, paths)
            missing = [p for p in paths if p not in found]
            if missing:
                raise NotInGallery(f"No photo at {missing[:3]} in this gallery (paths as ingested: absolute).")
            face_ids = [f for part in _chunks(sorted(set(found.values())))
                        for f in s.scalars(select(Face.face_id).where(Face.image_id.in_(part)))]
        return self.delete_faces(face_ids) if face_ids else 0

    def files_under(self, root: str) -> dict[str, tuple[int, int, int | None, str]]:
        """path -> (size, mtime_ns, image_id, status) of the recorded files inside a source folder."""
        prefix = root.rstrip("/") + "/"
        with self.session() as s:
            rows = s.execute(select(SourceFile.path, SourceFile.size, SourceFile.mtime_ns, SourceFile.image_id,
                                    SourceFile.status).where(SourceFile.path.startswith(prefix, autoescape=True)))
            return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def photo_faces(self, image_id: int) -> tuple[list[int], list[tuple[float, float, float, float]]]:
        """(face ids, boxes relative to the photo's size) of a photo's faces: what a photo read again is
        matched against, whatever its new size."""
        with self.session() as s:
            size = s.execute(select(Image.width, Image.height).where(Image.image_id == image_id)).first()
            rows = s.execute(select(Face.face_id, Face.x1, Face.y1, Face.x2, Face.y2)
                             .where(Face.image_id == image_id).order_by(Face.face_id)).all()
        w, h = (float(size[0] or 1), float(size[1] or 1)) if size else (1.0, 1.0)
        return [int(r[0]) for r in rows], [(r[1] / w, r[2] / h, r[3] / w, r[4] / h) for r in rows]

    def carry_curation(self, pairs: list[tuple[int, int]]) -> int:
        """A photo read again (its file changed) has new face rows: each (old face, new face) pair takes
        the old face's label and ignore mark, so the user's work is not tied to rows a re-read replaces.
        Returns how many new faces took something."""
        n = 0
        with self.session() as s, s.begin():
            for old_id, new_id in pairs:
                old, new = s.get(Face, old_id), s.get(Face, new_id)
                if old is None or new is None:
                    continue
                changed = False
                if old.identity_id is not None and new.identity_id != old.identity_id:
                    new.identity_id, changed = old.identity_id, True
                if old.ignored and not new.ignored:
                    new.ignored = new.deleted = changed = True
                    new.deleted_at = time.time()
                n += int(changed)
            self._drop_empty_identities(s)
        return n

    def sync_plan(self, source: str) -> dict | None:
        """The recorded diff of a sync of `source` that did not end (None: none)."""
        with self.session() as s:
            row = s.get(PendingSync, source)
            return json.loads(row.plan) if row is not None else None

    def finish_sync(self, source: str) -> None:
        with self.session() as s, s.begin():
            s.execute(delete(PendingSync).where(PendingSync.source == source))

    def forget_files(self, paths: list[str], sync_source: str | None = None, sync_plan: dict | None = None) -> None:
        """Drop the records of files (gone from disk, or to be read again), and the failed-photo records
        that only they referenced, so that the next ingest reads them as new. With `sync_plan`, the
        sync's diff is recorded in the same transaction (see PendingSync)."""
        with self.session() as s, s.begin():
            if sync_source is not None:
                s.merge(PendingSync(source=sync_source, started_at=time.time(), plan=json.dumps(sync_plan)))
            for start in range(0, len(paths), 900):
                part = paths[start : start + 900]
                failed = set(s.scalars(select(SourceFile.image_id).where(
                    SourceFile.path.in_(part), SourceFile.status == "failed", SourceFile.image_id.is_not(None))))
                s.execute(delete(SourceFile).where(SourceFile.path.in_(part)))
                still = set(s.scalars(select(SourceFile.image_id).where(SourceFile.image_id.in_(failed))))
                s.execute(delete(Image).where(Image.image_id.in_(failed - still), Image.status == "failed"))

    def retire_photos_without_files(self, image_ids: set[int]) -> int:
        """Of these photos, delete the faces of those no recorded file holds any more (their files
        were removed from the archive or now hold other content); returns how many faces."""
        with self.session() as s:
            held = {i for part in _chunks(sorted(image_ids))
                    for i in s.scalars(select(SourceFile.image_id).where(SourceFile.image_id.in_(part)))}
            faces = [f for part in _chunks(sorted(image_ids - held))
                     for f in s.scalars(select(Face.face_id).where(Face.image_id.in_(part), Face.deleted.is_(False)))]
        return self.delete_faces(faces) if faces else 0

    def moved_photos(self, image_ids: set[int]) -> list[tuple[int, str, int | None]]:
        """Photos whose recorded path is no longer one of their files (a renamed file or folder):
        (image id, a current path, main face id)."""
        ids = sorted(image_ids)
        recorded: dict[int, str] = {}
        files: dict[int, list[str]] = {}
        with self.session() as s:
            for start in range(0, len(ids), 900):
                part = ids[start : start + 900]
                recorded.update((i, p) for i, p in s.execute(select(Image.image_id, Image.path)
                                                              .where(Image.image_id.in_(part))))
                rows = s.execute(select(SourceFile.image_id, SourceFile.path).where(SourceFile.image_id.in_(part)))
                for i, p in rows:
                    files.setdefault(i, []).append(p)
            moved = {i: min(files[i]) for i, path in recorded.items() if files.get(i) and path not in files[i]}
            mains = {i: f for part in _chunks(sorted(moved)) for i, f in s.execute(
                select(Face.image_id, Face.face_id).where(Face.image_id.in_(part), Face.is_main.is_(True),
                                                          Face.deleted.is_(False)))}
        return [(i, path, mains.get(i)) for i, path in sorted(moved.items())]

    def move_photo(self, image_id: int, path: str) -> None:
        """The photo now lives at `path` (its file there is its own, not a duplicate any more)."""
        with self.session() as s, s.begin():
            s.execute(update(Image).where(Image.image_id == image_id).values(path=path))
            s.execute(update(SourceFile).where(SourceFile.path == path).values(status="ok"))

    def identity_id(self, name: str) -> int:
        with self.session() as s:
            return _identity_id(s, name)

    def identity_name(self, identity_id: int) -> str:
        """The name of the identity with this id (people are addressable by id: any name works)."""
        with self.session() as s:
            name = s.scalar(select(Identity.name).where(Identity.identity_id == int(identity_id))) \
                if 0 <= int(identity_id) <= MAX_ID else None
        if name is None:
            raise NotInGallery(f"No identity with id {identity_id} in this gallery (see: gallery identities).")
        return str(name)

    def identity_faces(self, name: str) -> list[FaceDetail]:
        with self.session() as s:
            identity_id = _identity_id(s, name)
        return self.face_details(identity_id=identity_id)

    def face_details(self, identity_id: int | None = None, labeled_only: bool = False,
                     low_quality_only: bool = False) -> list[FaceDetail]:
        """Live faces with their photo, box, label and quality (of one identity, or all; or only those
        below the quality gate)."""
        with self.session() as s:
            q = (
                select(Face.face_id, Identity.name, Image.path, Face.x1, Face.y1, Face.x2, Face.y2, Face.det_score,
                       Face.is_main, Face.deleted, Face.ignored, Face.q_size, Face.q_inside, Face.q_sharpness,
                       Face.q_pose, Face.quality_issue)
                .join(Image, Image.image_id == Face.image_id)
                .outerjoin(Identity, Identity.identity_id == Face.identity_id)
                .where(Face.deleted.is_(False))
            )
            if identity_id is not None:
                q = q.where(Face.identity_id == identity_id)
            if labeled_only:
                q = q.where(Face.identity_id.is_not(None))
            if low_quality_only:
                q = q.where(Face.quality_issue.is_not(None))
            rows = s.execute(q.order_by(Face.face_id)).all()
        return [FaceDetail(r[0], r[1], r[2], [round(v, 1) for v in r[3:7]], round(r[7], 4), bool(r[8]), bool(r[9]),
                           bool(r[10]), _quality(r[11:16])) for r in rows]

    def main_face_of_path(self, path: str) -> int | None:
        """The main live face of the photo a file path holds (identical files share one photo)."""
        with self.session() as s:
            image_id = image_ids_at_paths(s, [path]).get(path)
            if image_id is None:
                return None
            return s.scalar(select(Face.face_id).where(Face.image_id == image_id, Face.is_main.is_(True),
                                                       Face.deleted.is_(False)))

    def apply_labels(self, rows: list[tuple[int, str, str | None]], source: str = "labels") -> dict[str, int]:
        """Bulk relabel from (line, path or face id, identity or None) rows in one transaction.

        A row names a face id (digits) or a photo path (its main face). All rows apply or none: a row
        naming no live face of the gallery is an error with its line number. Returns counts."""
        targets: list[tuple[int, str | None]] = []
        with self.session() as s:
            numbered = sorted({int(k) for _, k, _ in rows if k.isdigit() and int(k) <= MAX_ID})
            live = {f for part in _chunks(numbered)
                    for f in s.scalars(select(Face.face_id).where(Face.face_id.in_(part), Face.deleted.is_(False)))}
        unknown: list[str] = []
        for line, key, name in rows:
            face_id = int(key) if key.isdigit() else self.main_face_of_path(key)
            if face_id is None or (key.isdigit() and face_id not in live):
                unknown.append(f"{source}:{line}: {key!r}")
            else:
                targets.append((face_id, name))
        if unknown:
            raise NotInGallery(
                f"{len(unknown)} label rows name no live face of this gallery ({'; '.join(unknown[:3])}): nothing "
                "was changed. Rows need a face id or the path of an ingested photo (as `gallery labels export` "
                "writes them)."
            )
        final = dict(targets)  # a face named twice (by id and by its photo's path): the last row wins
        with self.session() as s, s.begin():
            current: dict[int, str | None] = {}
            ids = sorted(final)
            for start in range(0, len(ids), 900):
                current.update(s.execute(
                    select(Face.face_id, Identity.name).outerjoin(Identity, Identity.identity_id == Face.identity_id)
                    .where(Face.face_id.in_(ids[start : start + 900]))).all())
            changes = {face_id: name for face_id, name in final.items() if current.get(face_id) != name}
            cache: dict[str, int] = {}
            for face_id, name in changes.items():
                identity_id = schema.get_or_create_identity(s, name, cache) if name else None
                s.execute(update(Face).where(Face.face_id == face_id).values(identity_id=identity_id))
            _photo_labels_follow_main_faces(s, [face_id for face_id, _ in targets])
            self._drop_empty_identities(s)
        # changes counted, not rows: importing an unchanged export reports 0 and 0
        named = sum(1 for n in changes.values() if n)
        return {"relabeled": named, "unlabeled": len(changes) - named, "unchanged": len(final) - len(changes)}

    @staticmethod
    def _drop_empty_identities(s: Session) -> None:
        """An identity exists only while a face (live or deleted) carries it; its photos forget it."""
        empty = select(Identity.identity_id).where(
            ~Identity.identity_id.in_(select(Face.identity_id).where(Face.identity_id.is_not(None)))
        )
        s.execute(update(Image).where(Image.identity_id.in_(empty)).values(identity_id=None))
        s.execute(delete(Identity).where(Identity.identity_id.in_(empty)))
