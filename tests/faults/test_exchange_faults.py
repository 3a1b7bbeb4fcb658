"""The exchange failing under the real ccxt client: 5xx answers, timeouts, an order's lost answer.

The loopback Binance-shaped server of the provider tests (`provider/fake_exchange.py`) is reused;
websocket drops with gap repair, 429s with rate-limit waits and an unreachable websocket are
already proven in `provider/test_ccxt.py`. Here are the faults it leaves out: an exchange that
answers 503, a request that gets no answer in time, and the worst one for money — an order the
exchange accepted whose answer never came back, which must be resolved by asking the exchange
for our client order id, never by sending it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

from barfinex_cli.contracts.orders import OrderAccepted, OrderFilled, OrderSubmitted
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import ServiceUnreachable
from barfinex_cli.provider.connectors.base import OrderRequest
from barfinex_cli.provider.connectors.ccxt_conn import CcxtConnector
from provider.fake_exchange import FakeBinance

MINUTE = 60_000


class StallingBinance(FakeBinance):
    """The fake exchange, able to do a request's work and then sit on its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.stalls: dict[tuple[str, str], float] = {}

    def stall_next(self, method: str, path: str, seconds: float) -> None:
        """Handle the next `method /api/v3/{path}` fully, then wait `seconds` before answering."""
        self.stalls[(method, path)] = seconds

    async def _rest(self, request: web.Request) -> web.Response:
        response = await super()._rest(request)
        delay = self.stalls.pop((request.method, request.match_info["endpoint"]), 0.0)
        if delay:
            await asyncio.sleep(delay)
        return response


@pytest.fixture
async def fake() -> AsyncIterator[StallingBinance]:
    server = StallingBinance()
    await server.start()
    yield server
    await server.stop()


def make(fake: FakeBinance, **kwargs: Any) -> CcxtConnector:
    return CcxtConnector("binance", rate_limit_ms=1, **fake.connector_kwargs(), **kwargs)


def minute_ago(n: int) -> int:
    return int(time.time() * 1000) // MINUTE * MINUTE - n * MINUTE


async def test_a_5xx_answer_says_the_exchange_is_not_serving_and_the_next_request_succeeds(
    fake: StallingBinance,
) -> None:
    conn = make(fake)
    try:
        await conn.start()
        fake.fail_next("klines", 503, body="Service Unavailable")
        since = minute_ago(10)
        with pytest.raises(ServiceUnreachable, match="is not available"):
            await conn.fetch_candles("BTC/USDT", "1m", since, since + 4 * MINUTE)
        rows = await conn.fetch_candles("BTC/USDT", "1m", since, since + 4 * MINUTE)
    finally:
        await conn.stop()
    assert [r.open_ms for r in rows] == [since + i * MINUTE for i in range(5)]


async def test_a_request_without_an_answer_in_time_says_it_timed_out_and_the_next_succeeds(
    fake: StallingBinance,
) -> None:
    conn = make(fake, timeout_ms=300)
    try:
        await conn.start()
        fake.stall_next("GET", "klines", 2.0)
        since = minute_ago(10)
        began = time.monotonic()
        with pytest.raises(ServiceUnreachable, match="timed out"):
            await conn.fetch_candles("BTC/USDT", "1m", since, since + 4 * MINUTE)
        assert time.monotonic() - began < 1.5  # the timeout, not the stall, ended the wait
        rows = await conn.fetch_candles("BTC/USDT", "1m", since, since + 4 * MINUTE)
    finally:
        await conn.stop()
    assert len(rows) == 5


async def test_an_order_accepted_whose_answer_is_lost_is_resolved_by_query_and_placed_once(
    fake: StallingBinance, keys: None
) -> None:
    events: list[Payload] = []

    async def emit(payload: Payload) -> None:
        events.append(payload)

    request = OrderRequest("dec-lost-1", "main", "BTC/USDT", "buy", "market", Decimal("0.01"))
    conn = make(fake, timeout_ms=300, emit=emit)
    try:
        fake.stall_next("POST", "order", 2.0)  # the exchange fills it; the answer comes too late
        placed = await conn.place(request)
        again = await conn.place(request)
    finally:
        await conn.stop()
    assert len(fake.seen("order", "POST")) == 1  # sent once, never again
    assert len(fake.orders) == 1
    assert fake.seen("order", "GET"), "the in-flight order was never looked up"
    assert placed.order_id == str(fake.orders["dec-lost-1"]["orderId"])
    assert placed.filled == Decimal("0.01") and again == placed
    assert [type(e) for e in events] == [OrderSubmitted, OrderFilled] or [
        type(e) for e in events
    ] == [OrderSubmitted, OrderAccepted]


async def test_an_order_lost_with_the_exchange_down_stays_unresolved_and_a_retry_places_nothing(
    fake: StallingBinance, keys: None
) -> None:
    request = OrderRequest("dec-lost-2", "main", "BTC/USDT", "buy", "market", Decimal("0.01"))
    conn = make(fake, timeout_ms=300)
    try:
        fake.stall_next("POST", "order", 2.0)
        fake.fail_next("order", 503, after=1, body="Service Unavailable")  # the lookup fails too
        with pytest.raises(ServiceUnreachable):
            await conn.place(request)
        retried = await conn.place(request)  # later: the exchange answers "duplicate"; found
    finally:
        await conn.stop()
    assert len(fake.orders) == 1
    assert [r.method for r in fake.requests if r.path == "order"] == ["POST", "GET", "POST", "GET"]
    assert retried.order_id == str(fake.orders["dec-lost-2"]["orderId"])
