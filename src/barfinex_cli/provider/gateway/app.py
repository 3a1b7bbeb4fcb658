"""The provider's gateway: one FastAPI app serving REST `/api/v1`, WebSocket `/ws` and MCP `/mcp`.

`create_app` wires a `GatewayContext` (the bus, the market store, the broker, the connectors, the
registry, the token) into the app; its lifespan runs the background work: the WebSocket fan-out
reader, the registry's lost-app sweep, the webhook sender and the MCP session manager. Routes live
in `gateway_routes`, the WebSocket hub in `gateway_ws`, the MCP tools in `gateway_mcp`; this module
holds the context, health, readiness, metrics, error mapping and the uvicorn runner.

Every route but `/api/v1/health` and `/api/v1/ready` (and the OpenAPI schema) needs the bearer
token; `/metrics` does too unless `GatewayOptions.metrics_public` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, cast

import httpx
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from barfinex_cli import __version__
from barfinex_cli.bus.base import Bus
from barfinex_cli.contracts.market import BookUpdated
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import (
    BfxError,
    NotFound,
    RiskViolation,
    ServiceUnreachable,
    TransientError,
    UsageError,
)
from barfinex_cli.provider.gateway import auth
from barfinex_cli.provider.gateway.registry import AppRegistry
from barfinex_cli.store.market import MarketStore

if TYPE_CHECKING:
    from barfinex_cli.provider.connectors.base import Broker, MarketConnector
    from barfinex_cli.provider.gateway.webhooks import WebhookSender
    from barfinex_cli.provider.gateway.ws import Hub

log = logging.getLogger("bfx.provider.gateway")

Publish = Callable[[Payload], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """Switches of the gateway; the defaults are the safe ones."""

    mcp_orders_enabled: bool = False
    """Offer the `place_order` MCP tool."""
    metrics_public: bool = False
    """Serve `/metrics` without the token (for a Prometheus scraper on a private network)."""
    ws_queue_size: int = 1000
    """Events buffered per WebSocket client; a client that falls this far behind is dropped."""
    ws_close_timeout_s: float = 10.0
    proxy_timeout_s: float = 30.0


@dataclass(slots=True)
class GatewayContext:
    """Everything the gateway serves from; the provider builds it and owns what is in it."""

    bus: Bus
    market: MarketStore
    token: str
    publish: Publish
    """Wraps a payload in an envelope and publishes it (registry events go through it)."""
    registry: AppRegistry = field(default_factory=AppRegistry)
    broker: Broker | None = None
    connectors: Mapping[str, MarketConnector] = field(default_factory=dict)
    books: Mapping[str, BookUpdated] = field(default_factory=dict)
    """The last book the provider saw per symbol (any key; looked up by the book's fields)."""
    webhooks: WebhookSender | None = None
    options: GatewayOptions = field(default_factory=GatewayOptions)


class Metrics:
    """Counters the gateway exposes at `/metrics` in the Prometheus text format."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.ws_clients = 0
        self.ws_events = 0
        self.ws_dropped = 0

    def render(self, ctx: GatewayContext, uptime_s: float) -> str:
        """Return every metric as Prometheus exposition text."""
        lines = _family("bfx_gateway_requests_total", "counter", "HTTP requests by route/status.")
        for (method, route, status), n in sorted(self.requests.items()):
            labels = f'method="{method}",route="{_esc(route)}",status="{status}"'
            lines.append(f"bfx_gateway_requests_total{{{labels}}} {n}")
        lines += _family("bfx_gateway_ws_clients", "gauge", "Connected WebSocket clients.")
        lines.append(f"bfx_gateway_ws_clients {self.ws_clients}")
        lines += _family("bfx_gateway_ws_events_total", "counter", "Events sent to WS clients.")
        lines.append(f"bfx_gateway_ws_events_total {self.ws_events}")
        lines += _family("bfx_gateway_ws_dropped_total", "counter", "Slow WS clients dropped.")
        lines.append(f"bfx_gateway_ws_dropped_total {self.ws_dropped}")
        lines += _family("bfx_registry_apps", "gauge", "Registered apps by status.")
        for app_status, apps in sorted(ctx.registry.counts().items()):
            lines.append(f'bfx_registry_apps{{status="{app_status}"}} {apps}')
        if ctx.webhooks is not None:
            lines += _family("bfx_webhook_deliveries_total", "counter", "Webhook outcomes.")
            for outcome, count in sorted(ctx.webhooks.counts.items()):
                lines.append(f'bfx_webhook_deliveries_total{{outcome="{outcome}"}} {count}')
        lines += _family("bfx_gateway_uptime_seconds", "gauge", "Seconds since the app started.")
        lines.append(f"bfx_gateway_uptime_seconds {uptime_s:.3f}")
        return "\n".join(lines) + "\n"


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(slots=True)
class GatewayState:
    """What the routes share at run time: the context plus the gateway's own moving parts."""

    ctx: GatewayContext
    metrics: Metrics = field(default_factory=Metrics)
    started: float = field(default_factory=time.monotonic)
    hub: Hub | None = None
    http: httpx.AsyncClient | None = None
    order_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def gateway_state(request: Request) -> GatewayState:
    """Return the state of the app serving `request` (a FastAPI dependency)."""
    return cast(GatewayState, request.app.state.gateway)


_bearer = HTTPBearer(auto_error=False, description="the gateway token (BFX_TOKEN or <home>/token)")


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse a request without the bearer token (401) or with a wrong one (403)."""
    presented = credentials.credentials if credentials is not None else None
    verdict = auth.check(presented, gateway_state(request).ctx.token)
    if verdict != "ok":
        raise HTTPException(
            auth.status_of(verdict), auth.reason_of(verdict), {"WWW-Authenticate": "Bearer"}
        )


class _MetricsMiddleware:
    """Count HTTP requests by method, matched route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests[(scope["method"], route, status)] += 1


def _status_of(exc: BfxError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, RiskViolation):
        return 409
    if isinstance(exc, ServiceUnreachable | TransientError):
        return 503
    if isinstance(exc, UsageError):
        return 422
    return 400


async def _bfx_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BfxError)
    return JSONResponse({"detail": str(exc)}, status_code=_status_of(exc))


def create_app(ctx: GatewayContext) -> FastAPI:
    """Build the gateway app over `ctx`; serve it with `serve` or any ASGI server."""
    from barfinex_cli.provider.gateway import mcp as gateway_mcp
    from barfinex_cli.provider.gateway import routes as gateway_routes
    from barfinex_cli.provider.gateway import ws as gateway_ws

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
    app.add_middleware(_MetricsMiddleware, metrics=state.metrics)
    app.add_exception_handler(BfxError, _bfx_error)
    protected = [Depends(require_token)]
    app.include_router(gateway_routes.open_router)
    app.include_router(gateway_routes.router, dependencies=protected)
    app.include_router(gateway_routes.proxy_router, dependencies=protected)

    async def metrics(request: Request) -> PlainTextResponse:
        text = state.metrics.render(ctx, time.monotonic() - state.started)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        tags=["health"],
        summary="Prometheus metrics",
        dependencies=[] if ctx.options.metrics_public else protected,
        response_class=PlainTextResponse,
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


async def serve(app: Any, stop: asyncio.Event, sock: socket.socket) -> None:
    """Serve `app` on the bound socket `sock` (see `bind`) until `stop` is set, then shut down."""
    host, port = sock.getsockname()[:2]
    server = make_server(app, host, port)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopper.cancel()
    await task
