"""The request guard: authenticate first, then take the body up to a cap, before the app sees anything.

A pure ASGI middleware, in front of FastAPI's body parsing:

1. Under ``/api/v1`` a request without a valid bearer token is answered 401 before one byte of its
   body is read (malformed JSON without a token is a 401, never a 422). Which scope a route needs
   (read or admin) stays with the routes' dependencies, which also declare the scheme in OpenAPI.
2. Every request body is capped (``max_body_bytes``, 1 MiB by default): a ``Content-Length`` over the
   cap is refused at once, and a chunked or lying body is counted while it streams and refused when
   it passes the cap, so the server never holds more than the cap of one request (uvicorn itself
   buffers at most 64 KiB before it stops reading the socket). Both answers are 413 with skiff's
   JSON error body and ``Connection: close`` (the rest of the body is never read).

The body that passed is handed to the app whole, so handlers read it as usual.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from skiff.api.auth import TokenSet
from skiff.api.errors import error_response

__all__ = ["RequestGuard", "DEFAULT_MAX_BODY_BYTES"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())  # the ASGI spec's shape
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestGuard:
    def __init__(self, app: ASGIApp, *, tokens: TokenSet, protected_prefix: str,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.tokens = tokens
        self.prefix = protected_prefix.rstrip("/")
        self.max_body_bytes = max_body_bytes

    def _protected(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    def _auth_problem(self, scope: Scope) -> str | None:
        value = _header(scope, b"authorization") or ""
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "missing bearer token: send 'Authorization: Bearer <token>'"
        if self.tokens.scope_of(token) is None:
            return "invalid bearer token"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._protected(scope["path"]):
            problem = self._auth_problem(scope)
            if problem is not None:
                await error_response(401, problem, headers={"WWW-Authenticate": "Bearer", "Connection": "close"})(
                    scope, receive, send)
                return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isascii() or not declared.strip().isdigit():
                await error_response(400, "Content-Length must be a number of bytes",
                                     headers={"Connection": "close"})(scope, receive, send)
                return
            if int(declared) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nothing to answer
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect, as the app expects

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(
            413, f"request body over the server's limit of {self.max_body_bytes} bytes; send less (or raise "
            "`skiff api --max-body-bytes`)", error="PayloadTooLarge",
            detail={"max_body_bytes": self.max_body_bytes}, headers={"Connection": "close"})(scope, receive, send)
