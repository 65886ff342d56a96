"""Request limits as ASGI middleware: a body larger than the upload limit is answered 413 (before
it is read when Content-Length says so, else as soon as the count passes it), and a request that
runs past the timeout is answered 504. Both answer with the API's JSON error shape."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import HTTPException

Scope = dict[str, Any]


class BodyTooLarge(HTTPException):
    """Raised from inside body reading; an HTTPException so that FastAPI's body parsing passes it on."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is over the {limit:,}-byte upload limit (--max-upload-mb).")


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class Limits:
    """Upload limit and per-request timeout around the whole application."""

    def __init__(self, app: Any, max_body_bytes: int, timeout_s: float) -> None:
        self.app, self.max_body_bytes, self.timeout_s = app, max_body_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_json(send, 413, {"error": "too_large", "detail": BodyTooLarge(limit).detail})
            return
        received = 0
        started = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, counted_receive, tracked_send), self.timeout_s)
        except BodyTooLarge as exc:
            if not started:
                await _send_json(send, 413, {"error": "too_large", "detail": exc.detail})
        except asyncio.TimeoutError:
            if not started:
                await _send_json(send, 504, {"error": "timeout", "detail": (
                    f"The request took longer than {self.timeout_s:g} s (--request-timeout); the server may be "
                    "busy with other searches. Try again, or ask for less (smaller photo, fewer photos).")})
