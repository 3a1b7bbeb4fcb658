"""The provider's gateway: one FastAPI app serving REST `/api/v1`, WebSocket `/ws` and MCP `/mcp`.

`create_app` wires a `GatewayContext` (the bus, the market store, the broker, the connectors, the
registry, the token) into the app; its lifespan runs the background work: the WebSocket fan-out
reader, the registry's lost-app sweep, the webhook sender and the MCP session manager. The shared
state lives in `context`, routes in `routes`, the WebSocket hub in `ws`, the MCP tools in `mcp`,
the Prometheus metrics in `metrics`, the proxy in `proxy`; this module assembles them, maps errors
to statuses and runs uvicorn.

Every route but `/api/v1/health` and `/api/v1/ready` (and the OpenAPI schema) needs the bearer
token; `/metrics` does too unless `GatewayOptions.metrics_public` is set. The `guard` middleware
checks it, and caps the body size, before FastAPI reads a byte of the body. A request the schemas
refuse gets 422 naming the field; no input reaches a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route

from barfinex_cli import __version__
from barfinex_cli.errors import (
    BfxError,
    NotFound,
    RiskViolation,
    ServiceUnreachable,
    TransientError,
    UsageError,
)
from barfinex_cli.provider.gateway import mcp as gateway_mcp
from barfinex_cli.provider.gateway import proxy as gateway_proxy
from barfinex_cli.provider.gateway import routes as gateway_routes
from barfinex_cli.provider.gateway import ws as gateway_ws
from barfinex_cli.provider.gateway.context import (
    GatewayContext,
    GatewayOptions,
    GatewayState,
    Publish,
    require_token,
)
from barfinex_cli.provider.gateway.guard import OPEN_PATHS, Guard
from barfinex_cli.provider.gateway.metrics import CONTENT_TYPE, MetricsMiddleware
from barfinex_cli.provider.gateway.registry import NameTaken
from barfinex_cli.runtime.health import serve_until

__all__ = [
    "GatewayContext",
    "GatewayOptions",
    "GatewayState",
    "Publish",
    "bind",
    "create_app",
    "make_server",
    "serve",
]

log = logging.getLogger("bfx.provider.gateway")


def _status_of(exc: BfxError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, RiskViolation | NameTaken):
        return 409
    if isinstance(exc, ServiceUnreachable | TransientError):
        return 503
    if isinstance(exc, UsageError):
        return 422
    return 400


async def _bfx_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BfxError)
    return JSONResponse({"detail": str(exc)}, status_code=_status_of(exc))


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """Answer 422 in FastAPI's shape, with inputs JSON cannot carry (NaN, 1e400) as text."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _printable(jsonable_encoder(exc.errors()))}, status_code=422)


def _printable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


def create_app(ctx: GatewayContext) -> FastAPI:
    """Build the gateway app over `ctx`; serve it with `serve` or any ASGI server."""
    state = GatewayState(ctx)
    mcp = gateway_mcp.build(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        hub = state.hub = gateway_ws.Hub(ctx.bus, state.metrics, ctx.options.ws_queue_size)
        async with httpx.AsyncClient(timeout=ctx.options.proxy_timeout_s) as http, mcp.run():
            state.http = http
            tasks = [
                asyncio.create_task(hub.run(), name="gateway-ws-hub"),
                asyncio.create_task(ctx.registry.watch(ctx.publish, stop), name="registry"),
            ]
            if ctx.webhooks is not None:
                tasks.append(asyncio.create_task(ctx.webhooks.run(stop), name="webhooks"))
            try:
                yield
            finally:
                stop.set()
                tasks[0].cancel()
                for result in await asyncio.gather(*tasks, return_exceptions=True):
                    if isinstance(result, Exception):
                        log.error("gateway task failed", exc_info=result)
                state.http = None

    app = FastAPI(
        title="barfinex provider gateway",
        version=__version__,
        lifespan=lifespan,
        description="Market data, orders, the app registry and a proxy to the other roles.",
    )
    app.state.gateway = state
    open_paths = OPEN_PATHS | ({"/metrics"} if ctx.options.metrics_public else set())
    max_body = ctx.config.max_body_bytes
    app.add_middleware(Guard, token=ctx.token, max_body_bytes=max_body, open_paths=open_paths)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outside: counts refusals too
    app.add_exception_handler(BfxError, _bfx_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    protected = [Depends(require_token)]
    app.include_router(gateway_routes.open_router)
    app.include_router(gateway_routes.router, dependencies=protected)
    app.include_router(gateway_proxy.router, dependencies=protected)

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        tags=["health"],
        summary="Prometheus metrics",
        dependencies=[] if ctx.options.metrics_public else protected,
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    app.add_api_websocket_route("/ws", gateway_ws.endpoint)
    app.router.routes.append(Route("/mcp", mcp.asgi, include_in_schema=False))
    return app


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the caller's lifecycle."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8081) -> uvicorn.Server:
    """Return a uvicorn server for `app` that does not install signal handlers."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    return _Server(config)


def bind(host: str = "127.0.0.1", port: int = 8081) -> socket.socket:
    """Return a socket bound to `host:port` (port 0 picks a free one) for `serve`.

    Raises:
        ServiceUnreachable: The address is taken or not ours.
    """
    _warn_if_exposed(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServiceUnreachable(
            f"gateway cannot listen on {host}:{port} ({exc.strerror}) — is another provider "
            "running? Choose another port."
        ) from None
    return sock


def _warn_if_exposed(host: str) -> None:
    """Warn when the gateway listens beyond loopback: the token then crosses the network."""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return
    if host.lower() == "localhost":
        return
    log.warning(
        f"gateway listens on {host}, beyond loopback, and speaks plain HTTP: the bearer token "
        "crosses the network in clear unless TLS is in front — put a TLS-terminating proxy "
        "before it, or keep the default 127.0.0.1",
        extra={"host": host},
    )


async def serve(app: Any, stop: asyncio.Event, sock: socket.socket) -> None:
    """Serve `app` on the bound socket `sock` (see `bind`) until `stop` is set, then shut down."""
    host, port = sock.getsockname()[:2]
    # shut down within the provider's grace, and completely even if cancelled (`serve_until`)
    await serve_until(make_server(app, host, port), sock, stop)
