"""API keys on every /v1 request: `X-Api-Key`, checked against the hashes stored in the gallery.

No key: 401. A key without the scope the endpoint needs: 403. Scopes nest (admin > enrol > search).
A server started without keys on loopback (or with --insecure) lets every request through.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from gallery.server.service import ApiError
from gallery.store.keys import SCOPES, KeyInfo

HEADER = "X-Api-Key"
_scheme = APIKeyHeader(name=HEADER, auto_error=False, description="A key from `gallery keys create`.")


def require(scope: str) -> Callable[..., KeyInfo | None]:
    """A FastAPI dependency: the caller's key, which must allow `scope`."""
    assert scope in SCOPES

    def dependency(request: Request, key: str | None = Security(_scheme)) -> KeyInfo | None:
        state = request.app.state
        if not state.config.auth:
            return None
        if not key:
            raise ApiError(401, "unauthorized", f"This server needs an API key in the {HEADER} header "
                                                "(create one with: gallery keys create --gallery DIR --name NAME "
                                                f"--scope {scope}).")
        info = state.verify_key(key)
        if info is None:
            raise ApiError(401, "unauthorized", "Unknown or revoked API key (see: gallery keys list).")
        if not info.allows(scope):
            raise ApiError(403, "forbidden", f"Key '{info.name}' has scopes {' '.join(info.scopes)}; this needs "
                                             f"'{scope}'.")
        return info

    return dependency

