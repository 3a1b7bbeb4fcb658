"""Helpers for gateway tests: a real uvicorn server on a free loopback port, and a real context.

`serving(app)` runs any ASGI app (the gateway, a tiny app to proxy to, a webhook receiver) in a
background task of the test's own event loop, so it shares the loop with the in-process bus, and
yields its base URL once it answers. `make_context` builds a `GatewayContext` over a real
`MarketStore` in a temporary directory, the given bus and a `PaperBroker` whose events are
published on that bus.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from barfinex_cli.bus.base import Bus
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import BookUpdated
from barfinex_cli.contracts.types import Payload
from barfinex_cli.provider.connectors.base import MarketConnector
from barfinex_cli.provider.gateway.app import bind, serve
from barfinex_cli.provider.gateway.context import GatewayContext, GatewayOptions
from barfinex_cli.provider.gateway.registry import AppRegistry
from barfinex_cli.provider.gateway.webhooks import WebhookSender
from barfinex_cli.provider.paper.broker import PaperBroker
from barfinex_cli.store.market import MarketStore, TradeRow

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def serving(app: Any, *, ready_path: str | None = None) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 and a free port until the block ends; yield its base URL."""
    sock = bind("127.0.0.1", 0)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, stop, sock))
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(500):
                if task.done():
                    task.result()  # startup failed: raise its error here
                try:
                    await client.get(ready_path or "/")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.01)
            else:
                raise TimeoutError(f"server on {base} did not answer")
        yield base
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def make_broker(bus: Bus, price: str = "100") -> PaperBroker:
    """Return a paper broker publishing on `bus`, with a last price for BTC/USDT."""

    async def emit(event: Envelope[Any]) -> None:
        await bus.publish(event)

    broker = PaperBroker(emit, source="provider", accounts={"paper": {"USDT": Decimal(10_000)}})
    broker.on_trade("BTC/USDT", TradeRow(0, "t0", float(price), 1.0, "buy"))
    return broker


def make_context(
    tmp_path: Path,
    bus: Bus,
    *,
    broker: PaperBroker | None = None,
    connectors: Mapping[str, MarketConnector] | None = None,
    books: Mapping[str, BookUpdated] | None = None,
    registry: AppRegistry | None = None,
    webhooks: WebhookSender | None = None,
    options: GatewayOptions | None = None,
) -> GatewayContext:
    """Return a gateway context over a real store in `tmp_path` and `bus`."""

    async def publish(payload: Payload) -> None:
        await bus.publish(make_event(payload, source="provider"))

    return GatewayContext(
        bus=bus,
        market=MarketStore(tmp_path / "market.db"),
        token=TOKEN,
        publish=publish,
        registry=registry or AppRegistry(),
        broker=broker,
        connectors=connectors or {},
        books=books or {},
        webhooks=webhooks,
        options=options or GatewayOptions(),
    )


@contextlib.asynccontextmanager
async def gateway(ctx: GatewayContext) -> AsyncIterator[httpx.AsyncClient]:
    """Serve the gateway over `ctx`; yield an httpx client on its base URL carrying the token."""
    from barfinex_cli.provider.gateway.app import create_app

    try:
        async with (
            serving(create_app(ctx), ready_path="/api/v1/health") as base,
            httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10) as client,
        ):
            yield client
    finally:
        ctx.market.close()
