"""Photos kept out of a gallery: ingest and sync never read them in again.

Erasure removes a person from every file of the gallery, not from the photo archive: the next ingest
or sync of a folder that still holds their photos would read them in again. So an erasure can keep
its photos out. What it records must not undo the erasure ("an erasure log records that it happened,
never what"), and the content hashes, paths and names are gone with it. What is kept is one keyed
fingerprint per photo: HMAC-SHA-256 of the photo's content hash under a random key of this gallery
(kept in its `meta` table, never shown).

- From the fingerprints alone nothing of the photo or its person can be read back: no name, path,
  face, embedding or content hash, and not the photo's plain SHA-256 either, which would match the
  same file in any other collection of hashes. They answer one question only, for whoever holds both
  the gallery and a photo: "is this one of the photos kept out?" — the question ingest asks.
- The content, not the path: a kept-out photo stays out when it is copied or renamed, and a new photo
  saved under an erased one's path is read as any other.

`gallery photos keep-out PATH...` keeps out photos by their files (after an erasure made without it,
or photos never ingested), `gallery photos admit PATH...` lets them in again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from gallery.store.schema import KeptOut, get_meta, set_meta

if TYPE_CHECKING:
    from gallery.store.gallery import Gallery

KEY_META = "keep_out_key"


def _key(session: Session, create: bool) -> bytes | None:
    value = get_meta(session, KEY_META)
    if value is None and create:
        value = secrets.token_hex(32)
        set_meta(session, KEY_META, value)
    return None if value is None else bytes.fromhex(value)


def fingerprint(key: bytes, sha256: str) -> str:
    """The kept-out fingerprint of a photo's content (its SHA-256, hex) under the gallery's key."""
    return hmac.new(key, bytes.fromhex(sha256), hashlib.sha256).hexdigest()


def keep_out_content(session: Session, sha256s: Iterable[str | None]) -> int:
    """Keep these contents out of future ingests, in the caller's transaction (an erasure records them
    in the transaction that deletes the photos). Returns how many were not kept out already."""
    wanted = {s for s in sha256s if s}
    if not wanted:
        return 0
    key = _key(session, create=True)
    assert key is not None
    prints = sorted({fingerprint(key, s) for s in wanted})
    known: set[str] = set()
    for part in _chunks(prints):
        known |= set(session.scalars(select(KeptOut.fingerprint).where(KeptOut.fingerprint.in_(part))))
    session.add_all(KeptOut(fingerprint=f) for f in prints if f not in known)
    return len(prints) - len(known)


def admit_content(session: Session, sha256s: Iterable[str | None]) -> int:
    """Let these contents in again (the next ingest or sync reads them). Returns how many were kept out."""
    key = _key(session, create=False)
    wanted = {s for s in sha256s if s}
    if key is None or not wanted:
        return 0
    prints = sorted(fingerprint(key, s) for s in wanted)
    return sum(int(session.execute(delete(KeptOut).where(KeptOut.fingerprint.in_(part))).rowcount or 0)
               for part in _chunks(prints))


def _chunks(values: list[str], size: int = 500) -> Iterable[list[str]]:
    """SQLite bounds the variables of one statement."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


class KeptOutSet:
    """The kept-out fingerprints of a gallery, loaded once for an ingest run."""

    def __init__(self, key: bytes | None, prints: set[str]) -> None:
        self._key = key
        self._prints = prints

    @classmethod
    def load(cls, gallery: Gallery) -> KeptOutSet:
        with gallery.session() as s:
            key = _key(s, create=False)
            prints = set(s.scalars(select(KeptOut.fingerprint))) if key is not None else set()
        return cls(key, prints)

    def __len__(self) -> int:
        return len(self._prints)

    def holds(self, sha256: str | None) -> bool:
        """Is this content kept out? (Free when nothing is: no fingerprint is computed.)"""
        if not self._prints or not sha256 or self._key is None:
            return False
        return fingerprint(self._key, sha256) in self._prints


def kept_out_count(gallery: Gallery) -> int:
    with gallery.session() as s:
        return int(s.scalar(select(func.count()).select_from(KeptOut)) or 0)
