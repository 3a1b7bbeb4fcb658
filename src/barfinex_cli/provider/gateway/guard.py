"""The gateway's front door: the token is checked and the body size capped before anything parses.

FastAPI reads and parses a request's body before its dependencies run, so the `require_token`
dependency alone let a caller without a token make the gateway read (and parse) ten megabytes.
`Guard` is a pure ASGI middleware that sits in front of everything FastAPI does:

- a request to a route other than the open ones (health, readiness, the OpenAPI schema and docs,
  and `/metrics` when it is public) is answered 401/403 with the usual message before one byte of
  its body is read;
- a body larger than `max_body_bytes` is answered 413: at once when `Content-Length` says so, and
  when a chunked body crosses the cap while it streams in (the rest is never read).

WebSocket handshakes pass through: `ws` checks its token itself. `/mcp` accepts `?token=` as well
as the header, for clients that can only send a URL; its token is checked here too (before the
body cap, so a caller without the token learns nothing, not even the cap), and again by `mcp`.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from barfinex_cli.provider.gateway import auth

OPEN_PATHS = frozenset(
    {
        "/api/v1/health",
        "/api/v1/ready",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
    }
)
"""Paths served without the token: probes, and the schema (which holds no data)."""
SELF_GUARDED = frozenset({"/mcp"})
"""Paths that accept the token as `?token=` too (their app checks it again)."""


class BodyTooLarge(Exception):
    """Raised into the app reading a body that crossed the cap; the guard has answered 413."""


class Guard:
    """Refuse unauthenticated requests and oversized bodies before the app reads anything."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        max_body_bytes: int,
        open_paths: Collection[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path not in self.open_paths:
            query: dict[str, str] = {}
            if path.rstrip("/") in SELF_GUARDED:  # /mcp takes `?token=` too; REST the header only
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            verdict = auth.check_scope(scope["headers"], query, self.token)
            if verdict != "ok":
                await _answer(
                    send,
                    auth.status_of(verdict),
                    auth.reason_of(verdict),
                    [(b"www-authenticate", b"Bearer")],
                )
                return
        declared = _content_length(scope["headers"])
        if declared == -1:
            await _answer(send, 400, "Content-Length is not a number")
            return
        if declared is not None and declared > self.max_body_bytes:
            await _answer(send, 413, self._too_large())
            return
        await self._capped(scope, receive, send)

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, counting body bytes as it reads them; answer 413 when they cross the cap."""
        received = 0
        started = answered = False

        async def counted_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    if not started and not answered:
                        answered = True
                        await _answer(send, 413, self._too_large())
                    raise BodyTooLarge(self._too_large())
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if answered:  # the app's own answer to the aborted read goes nowhere
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if not answered:  # the app had started answering: all we can do is stop
                raise

    def _too_large(self) -> str:
        return (
            f"request body larger than {self.max_body_bytes} bytes "
            "(the [gateway] max_body_bytes setting)"
        )


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """Return the declared body length, None if none is declared, -1 if it is not a number."""
    for key, value in headers:
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else -1
    return None


async def _answer(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
