"""The role's health server: `/health` from a status callable, `/metrics` from prometheus_client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry, Counter

from barfinex_cli.runtime.health import bind_first_free, health_app, serve_until
from provider.gateway_server import serving


def _status(ok: bool) -> Any:
    return lambda: {"status": "ok" if ok else "stalled", "evaluations": 3}


async def _get(app: Any, *paths: str) -> list[httpx.Response]:
    """Serve `app` on loopback and GET each path from it."""
    async with (
        serving(app, ready_path="/metrics") as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        return [await http.get(path) for path in paths]


async def test_metrics_render_the_role_registry_and_health_says_ok_or_503() -> None:
    registry = CollectorRegistry()
    evaluations = Counter(
        "bfx_detector_evaluations", "Candles evaluated.", ["instance"], registry=registry
    )
    evaluations.labels("d-1").inc(3)
    health, metrics = await _get(health_app(_status(True), registry), "/health", "/metrics")
    assert (health.status_code, health.json()["evaluations"]) == (200, 3)
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE bfx_detector_evaluations_total counter" in metrics.text
    assert 'bfx_detector_evaluations_total{instance="d-1"} 3.0' in metrics.text
    stalled, again = await _get(health_app(_status(False), lambda: registry), "/health", "/metrics")
    assert stalled.status_code == 503
    assert 'instance="d-1"} 3.0' in again.text


async def test_a_role_still_rendering_its_own_text_is_served_as_it_is() -> None:
    text = "# TYPE bfx_x gauge\nbfx_x 1\n"
    (metrics,) = await _get(health_app(_status(True), lambda: text), "/metrics")
    assert metrics.text == text


def test_two_instances_binding_one_port_get_two_ports() -> None:
    # detectors started together under `bfx up` both ask for 8101 before either serves
    from barfinex_cli.runtime.health import bind_first_free

    first = bind_first_free("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = bind_first_free("127.0.0.1", port)
    try:
        assert second.getsockname()[1] != port
    finally:
        first.close()
        second.close()


def _hanging_server(sock: socket.socket, entered: asyncio.Event) -> uvicorn.Server:
    """A uvicorn server on `sock` whose one route never answers (a request that would hang)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def hang(_: Request) -> Response:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    host, port = sock.getsockname()[:2]
    app = Starlette(routes=[Route("/hang", hang)])
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="critical"))


@contextlib.asynccontextmanager
async def _hanging_request(sock: socket.socket) -> AsyncIterator[asyncio.StreamReader]:
    """Open a connection to the server on `sock`, leave a request hanging on it, close it after."""
    host, port = sock.getsockname()[:2]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /hang HTTP/1.1\r\nHost: test\r\n\r\n")
        await writer.drain()
        yield reader
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_cancelled_server_closes_its_listener_and_every_connection() -> None:
    # cancelled mid-serve, uvicorn used to keep its listener and connections open until the
    # event loop closed, and the garbage collector reported them in whichever test came later
    sock = bind_first_free("127.0.0.1", 0)
    entered = asyncio.Event()
    server = _hanging_server(sock, entered)
    task = asyncio.create_task(serve_until(server, sock, asyncio.Event()))
    async with _hanging_request(sock) as reader:
        await asyncio.wait_for(entered.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sock.fileno() == -1
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the server closed its end
    assert not server.server_state.connections


async def test_a_stop_ends_the_server_within_its_grace_though_a_request_hangs() -> None:
    sock = bind_first_free("127.0.0.1", 0)
    entered = asyncio.Event()
    server = _hanging_server(sock, entered)
    stop = asyncio.Event()
    task = asyncio.create_task(serve_until(server, sock, stop, grace_s=0.5))
    async with _hanging_request(sock) as reader:
        await asyncio.wait_for(entered.wait(), 10)
        stop.set()
        await asyncio.wait_for(task, 10)  # graceful for 0.5 s, then the hanging request is cut
        assert sock.fileno() == -1
        assert await asyncio.wait_for(reader.read(), 10) == b""
    assert not server.server_state.connections
