"""Orders placed with ids derived from the decision: a slow provider and a retry make one order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from barfinex_cli.contracts.rest import PlaceOrderRequest
from barfinex_cli.inspector.execution import Executor, client_order_id
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.health import bind_first_free, serve_health
from barfinex_cli.store.inspector import InspectorStore, OrderRecord
from inspector.conftest import Market, StartInspector, armed, until


class SlowProxy:
    """A loopback HTTP server in front of the provider that answers the first order late."""

    def __init__(self, upstream: str, delay_s: float) -> None:
        self.upstream = upstream
        self.delay_s = delay_s
        self.order_posts = 0
        self.url = ""

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def forward(request: Request) -> Response:
            async with httpx.AsyncClient(base_url=self.upstream) as http:
                answer = await http.request(
                    request.method, request.url.path, params=dict(request.query_params),
                    content=await request.body(),
                    headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                )  # fmt: skip
            if request.method == "POST" and request.url.path == "/api/v1/orders":
                self.order_posts += 1
                if self.order_posts == 1:  # placed at the provider, answered too late
                    await asyncio.sleep(self.delay_s)
            return Response(answer.content, answer.status_code, media_type="application/json")

        return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "DELETE"])])


@pytest.fixture
async def slow(market: Market) -> AsyncIterator[SlowProxy]:
    proxy = SlowProxy(market.url, delay_s=1.5)
    sock = bind_first_free("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    proxy.url = f"http://{host}:{port}"
    stop = asyncio.Event()
    task = asyncio.create_task(serve_health(proxy.app(), sock, stop))
    yield proxy
    stop.set()
    await task


async def test_a_slow_provider_and_a_retry_place_the_order_once(
    market: Market, start_inspector: StartInspector, slow: SlowProxy
) -> None:
    client = GatewayClient(slow.url, "t0ken", timeout=0.5, retries=3, backoff_s=0.01)
    try:
        inspector, _, _ = await start_inspector(client=client)
        decision = await market.decide()
        entry_id = client_order_id(decision.id, "entry")
        await until(lambda: inspector.store.position("BTC/USDT") is not None)
        assert slow.order_posts >= 2  # the first answer timed out and the client sent it again
        orders = [o for o in await market.client.orders("paper") if o.client_order_id == entry_id]
        assert len(orders) == 1 and orders[0].status == "filled"
        submitted = [
            e for e in await market.published("order.submitted")
            if e.payload.order.client_order_id == entry_id
        ]  # fmt: skip
        assert len(submitted) == 1
        stored = inspector.store.order(entry_id)
        assert stored is not None and stored.status == "filled"
    finally:
        await client.aclose()


async def test_an_order_with_no_answer_stays_in_flight_and_is_settled_from_the_provider(
    market: Market, tmp_path: Any
) -> None:
    store = InspectorStore(tmp_path / "inspector.db")
    down = GatewayClient("http://127.0.0.1:9", "t0ken", retries=0)
    order = OrderRecord(
        client_order_id="i-test-decision-e", decision_id="test-decision", role="entry",
        symbol="BTC/USDT", side="buy", type="market", amount=Decimal(1),
        intended_price=Decimal(100),
    )  # fmt: skip
    try:
        sent = await Executor(down, store, "paper").submit(order, 1)
        assert sent.status == "in_flight"  # not assumed failed
        assert store.order(order.client_order_id).status == "in_flight"
        # the provider got it after all (it was placed, the answer was lost)
        await market.client.place_order(PlaceOrderRequest(
            client_order_id=order.client_order_id, account="paper", symbol="BTC/USDT",
            side="buy", type="market", amount=Decimal(1),
        ))  # fmt: skip
        executor = Executor(market.client, store, "paper")
        settled = await executor.resolve(2)
        assert [o.status for o in settled] == ["filled"]
        assert executor.sent == 0  # settled from the provider's list, never sent again
        mine = [o for o in await market.client.orders("paper")
                if o.client_order_id == order.client_order_id]  # fmt: skip
        assert len(mine) == 1
    finally:
        await down.aclose()
        store.close()


def test_client_order_ids_are_derived_from_the_decision_and_fit_the_gateway() -> None:
    decision = "01a21802-8e64-7000-badf-5e7be4c3ed0b"
    assert client_order_id(decision, "entry") == client_order_id(decision, "entry")
    ids = {client_order_id(decision, r, g) for r in ("stop_loss", "take_profit", "close")
           for g in (1, 2)}  # fmt: skip
    assert len(ids) == 6
    for value in ids | {client_order_id(decision, "entry")}:
        PlaceOrderRequest(client_order_id=value, account="paper", symbol="BTC/USDT",
                          side="buy", type="market", amount=Decimal(1))  # fmt: skip


class DownForOneOrder:
    """A loopback HTTP server in front of the provider that is down for the first order sent.

    The first `POST /api/v1/orders` never reaches the provider: it is answered 503, as a
    provider being restarted by its supervisor is unreachable (the inspector's client maps both
    to `ServiceUnreachable`). Everything else is passed through.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.order_posts = 0
        self.url = ""

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def forward(request: Request) -> Response:
            if request.method == "POST" and request.url.path == "/api/v1/orders":
                self.order_posts += 1
                if self.order_posts == 1:
                    return Response('{"detail": "restarting"}', 503, media_type="application/json")
            async with httpx.AsyncClient(base_url=self.upstream) as http:
                answer = await http.request(
                    request.method, request.url.path, params=dict(request.query_params),
                    content=await request.body(),
                    headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                )  # fmt: skip
            return Response(answer.content, answer.status_code, media_type="application/json")

        return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "DELETE"])])


@pytest.fixture
async def down_once(market: Market) -> AsyncIterator[DownForOneOrder]:
    proxy = DownForOneOrder(market.url)
    sock = bind_first_free("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    proxy.url = f"http://{host}:{port}"
    stop = asyncio.Event()
    task = asyncio.create_task(serve_health(proxy.app(), sock, stop))
    yield proxy
    stop.set()
    await task


async def _placed_once(market: Market, entry_id: str) -> bool:
    held = [o for o in await market.client.orders("paper") if o.client_order_id == entry_id]
    return len(held) == 1 and held[0].status == "filled"


async def test_an_entry_sent_while_the_provider_was_down_is_placed_when_it_answers_again(
    market: Market, start_inspector: StartInspector, down_once: DownForOneOrder
) -> None:
    # seen in the 1,000-candle role-kill run: the entry was sent while the provider was being
    # restarted, stayed in flight, and was only to be settled at the inspector's next start —
    # so it was never placed and no order.* event of it ever reached the bus
    client = GatewayClient(down_once.url, "t0ken", retries=0)
    try:
        inspector, _, _ = await start_inspector(client=client, heartbeat_s=0.2)
        decision = await market.decide()
        entry_id = client_order_id(decision.id, "entry")
        await until(lambda: down_once.order_posts >= 1)
        await until(lambda: _placed_once(market, entry_id))  # the next heartbeat settled it
        assert down_once.order_posts >= 2  # sent again under the same id, not a new order
        await until(lambda: armed(inspector, "BTC/USDT"))  # its guards placed on the fill
        submitted = [
            e for e in await market.published("order.submitted")
            if e.payload.order.client_order_id == entry_id
        ]  # fmt: skip
        assert len(submitted) == 1
        stored = inspector.store.order(entry_id)
        assert stored is not None and stored.status == "filled"
        assert not inspector.executor.unsettled
    finally:
        await client.aclose()


async def test_an_entry_left_in_flight_is_settled_before_the_next_decision_is_judged(
    market: Market, start_inspector: StartInspector, down_once: DownForOneOrder
) -> None:
    # no heartbeat comes in time (one an hour): the next decision settles it, before judging
    client = GatewayClient(down_once.url, "t0ken", retries=0)
    try:
        inspector, _, _ = await start_inspector(client=client, heartbeat_s=3600)
        first = await market.decide()
        entry_id = client_order_id(first.id, "entry")
        await until(lambda: inspector.executor.unsettled and down_once.order_posts == 1)
        stored = inspector.store.order(entry_id)
        assert stored is not None and stored.status == "in_flight"  # the 503: no answer
        second = await market.decide(symbol="ETH/USDT", entry="50", stop="49", take_profit="52")
        await until(lambda: inspector.store.decision(second.id).get("status") == "judged")
        assert await _placed_once(market, entry_id)
        stored = inspector.store.order(entry_id)
        assert stored is not None and stored.status == "filled"
        await until(lambda: armed(inspector, "BTC/USDT"))
    finally:
        await client.aclose()
