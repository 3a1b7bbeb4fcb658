"""The gateway's guarantees, enumerated from the app itself so that a new route cannot slip through.

Every route the FastAPI app holds (REST, proxy, `/metrics`, `/ws`, `/mcp`) is listed from
`app.routes` and asked without a token and with a wrong one: all but the open probes refuse. The
same requests announce a 10 MB body they never send: an answer proves the token was checked before
the body was read. The OpenAPI document is compared with the routes, so the schemathesis pass
(`test_fuzz_gateway.py`) covers every HTTP route there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route, WebSocketRoute
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.provider.gateway.app import bind, create_app
from barfinex_cli.provider.gateway.context import GatewayOptions
from barfinex_cli.provider.gateway.guard import OPEN_PATHS
from barfinex_cli.runtime.config import ProviderConfig
from provider.gateway_server import TOKEN, gateway, make_broker, make_context

HUGE = 10 * 1024 * 1024


def _routes(tmp_path: Path) -> list[tuple[str, str, str]]:
    """Return (kind, method, path) for every route of a gateway app, path parameters filled."""
    app = create_app(make_context(tmp_path, MemoryBus("enum")))
    found = []
    for prefix, route in _flat(app.routes, ""):
        path = re.sub(r"\{[^}:]+(:path)?\}", "x", prefix + getattr(route, "path", ""))
        if isinstance(route, WebSocketRoute):
            found.append(("ws", "GET", path))
        elif isinstance(route, APIRoute | Route):
            for method in sorted(route.methods or {"GET", "POST"}):
                found.append(("http", method, path))
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    return found


def _flat(routes: Iterable[Any], prefix: str) -> Iterator[tuple[str, Any]]:
    """Yield every route with its prefix, descending into included routers (FastAPI >= 0.16x)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat(inner.routes, prefix + route.include_context.prefix)
        else:
            yield prefix, route


def test_every_http_route_but_the_open_ones_is_in_the_openapi_document(tmp_path: Path) -> None:
    app = create_app(make_context(tmp_path, MemoryBus("enum")))
    documented = {
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, item in app.openapi()["paths"].items()
        for method in item
    }
    undocumented = {
        (method, path)
        for kind, method, path in _routes(tmp_path)
        if kind == "http" and (method, path) not in documented and method != "HEAD"
    }
    # /mcp speaks JSON-RPC (its own schema); the docs pages are not API routes
    assert (
        undocumented
        - {(m, p) for m in ("GET", "POST") for p in ("/mcp",)}
        - {("GET", p) for p in OPEN_PATHS}
        == set()
    )


async def _head(base: str, method: str, path: str, auth: str | None) -> tuple[int, str]:
    """Send a request head announcing a 10 MB body, send none; return the status and reason."""
    url = httpx.URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        if auth is not None:
            head += f"Authorization: {auth}\r\n"
        writer.write((head + f"Content-Length: {HUGE}\r\n\r\n").encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        rest = await asyncio.wait_for(reader.read(4096), 5)
        return int(status.split()[1]), rest.decode("latin-1")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_every_route_but_health_refuses_a_missing_or_wrong_token_before_the_body(
    tmp_path: Path,
) -> None:
    routes = [r for r in _routes(tmp_path) if r[0] == "http"]
    assert len(routes) >= 30  # REST, proxy methods, /metrics, /mcp: the enumeration found them
    bus = MemoryBus("guarantees")
    ctx = make_context(tmp_path, bus, broker=make_broker(bus))
    async with gateway(ctx) as http:
        base = str(http.base_url)
        for _, method, path in routes:
            if path in OPEN_PATHS:
                continue
            missing, body = await _head(base, method, path, None)
            said = method == "HEAD" or "missing bearer token" in body  # HEAD answers carry no body
            assert (missing, said) == (401, True), (method, path)
            wrong, body = await _head(base, method, path, "Bearer nope")
            said = method == "HEAD" or "wrong bearer token" in body
            assert (wrong, said) == (403, True), (method, path)
            scheme, _ = await _head(base, method, path, f"Basic {TOKEN}")
            assert scheme == 401, (method, path)
        query, _ = await _head(base, "GET", "/api/v1/series?token=" + TOKEN, None)
        assert query == 401  # REST takes the header only; ?token= is for /ws and /mcp
        async with httpx.AsyncClient(base_url=base) as bare:
            for path in sorted(OPEN_PATHS):
                assert (await bare.get(path)).status_code == 200, path


async def test_metrics_is_guarded_unless_made_public(tmp_path: Path) -> None:
    bus = MemoryBus("metrics")
    ctx = make_context(tmp_path, bus, options=GatewayOptions(metrics_public=True))
    async with gateway(ctx) as http, httpx.AsyncClient(base_url=http.base_url) as bare:
        assert (await bare.get("/metrics")).status_code == 200
        assert (await bare.get("/api/v1/series")).status_code == 401


async def test_every_websocket_route_refuses_a_missing_or_wrong_token(tmp_path: Path) -> None:
    ws_routes = [path for kind, _, path in _routes(tmp_path) if kind == "ws"]
    assert ws_routes == ["/ws"]
    bus = MemoryBus("ws-guard")
    async with gateway(make_context(tmp_path, bus)) as http:
        base = str(http.base_url).replace("http://", "ws://").rstrip("/")
        for path in ws_routes:
            for suffix, status in (("", 401), ("?token=nope", 403), ("?token=", 401)):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(base + path + suffix, proxy=None):
                        pass
                assert refused.value.response.status_code == status, suffix
            async with connect(base + path + f"?token={TOKEN}", proxy=None) as ws:
                await ws.send('{"ping": 1}')
                assert await asyncio.wait_for(ws.recv(), 5) == '{"pong": 1}'


def test_the_gateway_binds_loopback_unless_told_and_warns_when_exposed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert ProviderConfig().host == "127.0.0.1"
    with caplog.at_level(logging.WARNING, logger="bfx.provider.gateway"):
        bind("127.0.0.1", 0).close()
        assert not [r for r in caplog.records if "TLS" in r.getMessage()]
        bind("0.0.0.0", 0).close()
    [warning] = [r for r in caplog.records if "TLS" in r.getMessage()]
    assert "0.0.0.0" in warning.getMessage()
