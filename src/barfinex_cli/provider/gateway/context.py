"""What every part of the gateway shares: the context the provider hands in, and the run-time state.

`routes`, `ws`, `mcp` and `app` all import this module and never each other's internals in a
circle: `app` builds the FastAPI app from the routers, the routers read the state through the
`gateway_state` dependency, and the token check `require_token` guards them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal, cast

import httpx
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from barfinex_cli.bus.base import Bus
from barfinex_cli.contracts.market import BookUpdated, ConnectorHealth
from barfinex_cli.contracts.types import Payload
from barfinex_cli.provider.connectors.base import Broker, MarketConnector
from barfinex_cli.provider.gateway import auth
from barfinex_cli.provider.gateway.metrics import GatewayMetrics
from barfinex_cli.provider.gateway.registry import AppRegistry
from barfinex_cli.provider.gateway.webhooks import WebhookSender
from barfinex_cli.runtime.config import GatewayConfig
from barfinex_cli.store.market import MarketStore

if TYPE_CHECKING:  # an annotation only: `ws` imports this module for the state it serves
    from barfinex_cli.provider.gateway.ws import Hub

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
    config: GatewayConfig = field(default_factory=GatewayConfig)
    """The `[gateway]` settings: body size cap, hosts apps may register on."""
    clock: Literal["wall", "market"] = "wall"
    """Which clock the provider runs on: `market` when a replay drives a simulated clock."""
    market_time: Callable[[], datetime | None] | None = None
    replay_done: Callable[[], bool] | None = None
    """Tell whether a replay has reached its end (None: a live feed, which never ends)."""
    """Return the market time the provider has reached (None before the first candle)."""


@dataclass(slots=True)
class GatewayState:
    """What the routes share at run time: the context plus the gateway's own moving parts."""

    ctx: GatewayContext
    started: float = field(default_factory=time.monotonic)
    metrics: GatewayMetrics = field(init=False)
    hub: Hub | None = None
    http: httpx.AsyncClient | None = None
    order_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        ctx = self.ctx

        def webhook_counts() -> dict[str, int] | None:  # webhooks may be attached after this
            return None if ctx.webhooks is None else ctx.webhooks.counts

        def connector_healths() -> list[tuple[str, ConnectorHealth]]:
            return [(name, ctx.connectors[name].health()) for name in sorted(ctx.connectors)]

        self.metrics = GatewayMetrics(ctx.registry, webhook_counts, self.started, connector_healths)


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
