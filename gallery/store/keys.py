"""API keys for `gallery serve`, kept in the gallery they open: only a key's SHA-256 is stored.

A key is a random 256-bit token shown once, at creation. Scopes are nested: `admin` includes
`enrol`, which includes `search`, so a key names the most it may do.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from gallery.errors import GalleryError, NotInGallery
from gallery.store.schema import ApiKey

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SCOPES = ("search", "enrol", "admin")  # each includes the ones before it
KEY_PREFIX = "fg_"
SHOWN_PREFIX = 10  # characters of a key kept in clear, to tell keys apart in lists
TOUCH_EVERY_S = 60.0  # last_used_at is written at most this often per key (no write per request)


class KeyProblem(GalleryError):
    """A bad scope or key name."""


@dataclass(frozen=True)
class KeyInfo:
    """A key as lists show it (never the key itself)."""

    key_id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        """Nested scopes: a key allows its own and every lesser scope."""
        wanted = SCOPES.index(scope)
        return any(SCOPES.index(s) >= wanted for s in self.scopes if s in SCOPES)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_scopes(scopes: list[str]) -> list[str]:
    """Known scopes, deduplicated, in their order; an unknown one is an error naming the known ones."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise KeyProblem(f"Unknown scope {', '.join(map(repr, unknown)) or '(none given)'}: use "
                        f"{', '.join(SCOPES)} (admin includes enrol, enrol includes search).")
    return [s for s in SCOPES if s in scopes]


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.key_id, row.name, row.prefix, row.scopes.split(), row.created_at, row.last_used_at,
                   row.revoked_at)


class GalleryKeys:
    """API key methods; the host class provides `session()`."""

    def session(self) -> AbstractContextManager[Session]:  # pragma: no cover - provided by Gallery
        raise NotImplementedError

    def create_key(self, name: str, scopes: list[str]) -> tuple[KeyInfo, str]:
        """A new key: (its record, the key itself). The key is not stored and cannot be shown again."""
        name = name.strip()
        if not name:
            raise KeyProblem("A key needs a name (who or what uses it), e.g. --name photo-app.")
        scopes = check_scopes(scopes)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(name=name, prefix=key[:SHOWN_PREFIX], key_hash=hash_key(key), scopes=" ".join(scopes),
                     created_at=time.time())
        with self.session() as s, s.begin():
            s.add(row)
            s.flush()
            info = _info(row)
        return info, key

    def list_keys(self, include_revoked: bool = True) -> list[KeyInfo]:
        with self.session() as s:
            q = select(ApiKey).order_by(ApiKey.key_id)
            if not include_revoked:
                q = q.where(ApiKey.revoked_at.is_(None))
            return [_info(r) for r in s.scalars(q)]

    def has_active_keys(self) -> bool:
        with self.session() as s:
            return s.scalar(select(ApiKey.key_id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None

    def revoke_key(self, which: str) -> KeyInfo:
        """Revoke by id, name or shown prefix (which must name exactly one active key)."""
        with self.session() as s, s.begin():
            rows = list(s.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))))
            found = [r for r in rows if which in (str(r.key_id), r.name, r.prefix)]
            if not found:
                raise NotInGallery(f"No active key with id, name or prefix '{which}' (see: gallery keys list).")
            if len(found) > 1:
                raise KeyProblem(f"'{which}' names {len(found)} active keys ("
                                f"{', '.join(str(r.key_id) for r in found)}): revoke by id.")
            found[0].revoked_at = time.time()
            s.flush()
            return _info(found[0])

    def verify_key(self, key: str) -> KeyInfo | None:
        """The active key this presented key is, or None. The stored hash is compared in constant
        time; last use is recorded at most once a minute."""
        digest = hash_key(key)
        with self.session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
            if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
                return None
            info = _info(row)
        now = time.time()
        if info.last_used_at is None or now - info.last_used_at > TOUCH_EVERY_S:
            with self.session() as s, s.begin():
                s.execute(update(ApiKey).where(ApiKey.key_id == info.key_id).values(last_used_at=now))
        return info
