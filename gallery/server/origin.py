"""What a server without API keys answers: only requests addressed to it, and writes only from itself.

A keyless server trusts whoever can connect, which on loopback means every program on the machine,
web browsers included. A web page on another site can make the browser send requests to it:
- cross-site writes (a form or `fetch` POST of `text/plain` needs no preflight): refused when the
  request carries an `Origin` other than the server's own, or `Sec-Fetch-Site` other than
  same-origin/none (both are set by the browser, never by the page);
- DNS rebinding (a name of the attacker's that resolves to 127.0.0.1, so the page is "same origin"
  with the server): refused by the `Host` check, since the browser sends the attacker's name. `Host`
  must be the bound address (any IP literal when bound to all addresses), `localhost` on loopback,
  or a name the operator allowed with `--allow-host`.
Programs that send no `Origin` (curl, scripts) are served as before. A server with keys needs none
of this: a browser never attaches an `X-Api-Key` header by itself.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from gallery.server.config import is_ip, is_loopback
from gallery.server.limits import _send_json

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
WILDCARDS = {"0.0.0.0", "::", ""}


def split_host(value: str) -> tuple[str, int | None]:
    """('name or address', port) of a Host header or an origin's netloc, lowercased."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


class HostGuard:
    """ASGI middleware for a keyless server (see the module docstring)."""

    def __init__(self, app: Any, bound: str, allowed: list[str]) -> None:
        self.app = app
        self.bound = bound.strip("[]").lower()
        self.allowed = {a.lower() for a in allowed}

    def host_allowed(self, name: str) -> bool:
        if name in self.allowed:
            return True
        if name == "localhost":
            return is_loopback(self.bound) or self.bound == "localhost"
        if not is_ip(name):
            return False
        if self.bound in WILDCARDS:
            return True
        if self.bound == "localhost" or is_loopback(self.bound):
            return ipaddress.ip_address(name).is_loopback
        return ipaddress.ip_address(name) == ipaddress.ip_address(self.bound)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get(b"host", "")
        name, port = split_host(host)
        if not self.host_allowed(name):
            await _send_json(send, 403, {"error": "forbidden_host", "detail": (
                f"This server has no API keys and answers only requests addressed to it; Host '{host[:100]}' is not "
                "its address (start it with --allow-host NAME to allow a name, or create an API key).")})
            return
        if scope["method"] not in SAFE_METHODS:
            site = headers.get(b"sec-fetch-site")
            origin = headers.get(b"origin")
            cross = site is not None and site not in ("same-origin", "none")
            if origin is not None:
                try:
                    o = urlsplit(origin)
                    o_port = o.port or {"http": 80, "https": 443}.get(o.scheme)
                    cross = cross or (o.hostname or "").lower() != name or o_port != (port or 80)
                except ValueError:  # not an origin at all ("null" parses; a bad port does not)
                    cross = True
            if cross:
                await _send_json(send, 403, {"error": "cross_origin", "detail": (
                    f"This server has no API keys: it accepts changes only from its own page, not from origin "
                    f"'{(origin or site or '')[:100]}'. Create an API key to let other sites' pages call it.")})
                return
        await self.app(scope, receive, send)
