"""The studio's REST snapshot against a real gateway: it asks for the orders it can show.

A real gateway (uvicorn on a loopback port, a real `PaperBroker`) holds more orders than the
snapshot's window; the studio's client records every request it sends.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.contracts.rest import PlaceOrderRequest
from barfinex_cli.provider.gateway.app import create_app
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.studio.sources import Roles, load_snapshot
from provider.gateway_server import TOKEN, make_broker, make_context, serving


class _Recording(httpx.AsyncHTTPTransport):
    """The network transport, keeping the URL of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.URL] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.url)
        return await super().handle_async_request(request)


def _request(cid: str, price: str | None = None) -> PlaceOrderRequest:
    return PlaceOrderRequest(
        client_order_id=cid, account="paper", symbol="BTC/USDT", side="buy",
        type="market" if price is None else "limit", amount=Decimal("0.1"),
        price=None if price is None else Decimal(price),
    )  # fmt: skip


async def test_a_snapshot_asks_for_the_open_orders_and_the_latest_window_not_every_order(
    tmp_path: Path,
) -> None:
    bus = MemoryBus("studio-sources")
    ctx = make_context(tmp_path, bus, broker=make_broker(bus))
    transport = _Recording()
    try:
        async with (
            serving(create_app(ctx), ready_path="/api/v1/health") as base,
            GatewayClient(base, TOKEN, retries=0, transport=transport) as client,
        ):
            await client.place_order(_request("old-open", price="50"))
            for i in range(5):
                await client.place_order(_request(f"f{i}"))
            await client.place_order(_request("new-open", price="50"))
            transport.sent.clear()
            snap = await load_snapshot(client, Roles(base, TOKEN), orders=3)
    finally:
        ctx.market.close()
    assert [(o.client_order_id, o.status) for o in snap.orders] == [
        ("old-open", "open"), ("f3", "filled"), ("f4", "filled"), ("new-open", "open"),
    ]  # fmt: skip
    asked = [url.params for url in transport.sent if url.path == "/api/v1/orders"]
    assert sorted(sorted(params.multi_items()) for params in asked) == [
        [("limit", "3"), ("open_only", "false")],
        [("open_only", "true")],
    ]
