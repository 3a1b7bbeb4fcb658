"""The exchange failing under the real ccxt client: 5xx answers, timeouts, an order's lost answer.

The loopback Binance-shaped server of the provider tests (`provider/fake_exchange.py`) is reused;
websocket drops with gap repair, 429s with rate-limit waits and an unreachable websocket are
already proven in `provider/test_ccxt.py`. Here are the faults it leaves out: an exchange that
answers 503, a request that gets no answer in time, and the worst one for money — an order the
exchange accepted whose answer never came back, which must be resolved by asking the exchange
for our client order id, never by sending it again. Each test also reads the connector's health:
the count of its fault, the time and text of the last one, `degraded` while failing and `ok`
after the next answer. The last tests serve that health through the gateway (`/health`,
`/connectors`, `/metrics`) and run a provider that repairs a reconnect's hole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.contracts.orders import OrderAccepted, OrderFilled, OrderSubmitted
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import ServiceUnreachable
from barfinex_cli.provider.connectors.base import OrderRequest
from barfinex_cli.provider.connectors.ccxt_conn import CcxtConnector
from barfinex_cli.provider.service import ProviderOptions
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.market import MarketStore, SeriesKey
from conftest import Kernels
from provider.fake_exchange import FakeBinance, kline_message
from provider.gateway_server import gateway, make_context

MINUTE = 60_000


class StallingBinance(FakeBinance):
    """The fake exchange, able to do a request's work and then sit on its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.stalls: dict[tuple[str, str], float] = {}
        self.released = 0
        """Stalled answers sent so far (after their stall)."""

    def stall_next(self, method: str, path: str, seconds: float) -> None:
        """Handle the next `method /api/v3/{path}` fully, then wait `seconds` before answering."""
        self.stalls[(method, path)] = seconds

    async def _rest(self, request: web.Request) -> web.Response:
        response = await super()._rest(request)
        delay = self.stalls.pop((request.method, request.match_info["endpoint"]), 0.0)
        if delay:
            await asyncio.sleep(delay)
            self.released += 1
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
        before = datetime.now(UTC)
        with pytest.raises(ServiceUnreachable, match="is not available") as caught:
            await conn.fetch_candles("BTC/USDT", "1m", since, since + 4 * MINUTE)
        failing = conn.health()
        rows = await conn.fetch_candles("BTC/USDT", "1m", since, since + 4 * MINUTE)
        recovered = conn.health()
    finally:
        await conn.stop()
    assert [r.open_ms for r in rows] == [since + i * MINUTE for i in range(5)]
    assert (failing.status, failing.consecutive_failures, failing.unavailable) == ("degraded", 1, 1)
    assert (failing.timeouts, failing.unreachable) == (0, 0)
    last = failing.last_errors["unavailable"]
    assert last.error == str(caught.value) and before <= last.at <= datetime.now(UTC)
    assert (recovered.status, recovered.consecutive_failures) == ("ok", 0)
    assert recovered.unavailable == 1 and recovered.last_errors["unavailable"] == last


async def test_a_request_without_an_answer_in_time_says_it_timed_out_and_the_next_succeeds(
    fake: StallingBinance,
) -> None:
    conn = make(fake, timeout_ms=300)
    try:
        await conn.start()
        fake.stall_next("GET", "klines", 2.0)
        since = minute_ago(10)
        with pytest.raises(ServiceUnreachable, match="timed out"):
            await conn.fetch_candles("BTC/USDT", "1m", since, since + 4 * MINUTE)
        assert fake.released == 0  # the timeout ended the wait: the stalled answer is not out yet
        failing = conn.health()
        rows = await conn.fetch_candles("BTC/USDT", "1m", since, since + 4 * MINUTE)
        recovered = conn.health()
    finally:
        await conn.stop()
    assert len(rows) == 5
    assert (failing.status, failing.timeouts, failing.unavailable) == ("degraded", 1, 0)
    assert "request timed out" in failing.last_errors["timeout"].error
    assert (recovered.status, recovered.consecutive_failures, recovered.timeouts) == ("ok", 0, 1)


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
        health = conn.health()
    finally:
        await conn.stop()
    assert (health.lost_order_answers, health.lost_orders_resolved, health.timeouts) == (1, 1, 1)
    assert health.status == "ok"  # the lookup was answered: the exchange serves again
    lost = health.last_errors["lost_order_answer"].error
    assert lost.startswith("order dec-lost-1 (BTC/USDT): no answer to the create")
    assert lost.endswith("found by looking up its client order id")
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
        unresolved = conn.health()
        retried = await conn.place(request)  # later: the exchange answers "duplicate"; found
        resolved = conn.health()
    finally:
        await conn.stop()
    assert (unresolved.lost_order_answers, unresolved.lost_orders_resolved) == (1, 0)
    assert (unresolved.timeouts, unresolved.unavailable) == (1, 1)  # the create, then the lookup
    assert "is not available" in unresolved.last_errors["unavailable"].error  # not the timeout
    assert (unresolved.status, unresolved.consecutive_failures) == ("degraded", 2)
    assert "the lookup failed too" in unresolved.last_errors["lost_order_answer"].error
    assert (resolved.lost_order_answers, resolved.lost_orders_resolved) == (1, 1)
    assert (resolved.status, resolved.consecutive_failures) == ("ok", 0)
    assert resolved.last_errors["lost_order_answer"].error.endswith(
        "found by a retry refused as a duplicate"
    )
    assert len(fake.orders) == 1
    assert [r.method for r in fake.requests if r.path == "order"] == ["POST", "GET", "POST", "GET"]
    assert retried.order_id == str(fake.orders["dec-lost-2"]["orderId"])


async def test_the_gateway_shows_the_exchange_failing_in_health_connectors_and_metrics(
    fake: StallingBinance, tmp_path: Path
) -> None:
    conn = make(fake)
    ctx = make_context(tmp_path, MemoryBus("exchange-faults"), connectors={"binance": conn})
    since = minute_ago(10)
    try:
        async with gateway(ctx) as client:
            await conn.start()
            assert (await client.get("/api/v1/health")).json()["connectors"] == {"binance": "ok"}
            fake.fail_next("klines", 503, body="Service Unavailable")
            with pytest.raises(ServiceUnreachable):
                await conn.fetch_candles("BTC/USDT", "1m", since, since + MINUTE)
            failing = (await client.get("/api/v1/health")).json()
            (status,) = (await client.get("/api/v1/connectors")).json()["connectors"]
            metrics = (await client.get("/metrics")).text
            await conn.fetch_candles("BTC/USDT", "1m", since, since + MINUTE)
            recovered = (await client.get("/api/v1/health")).json()
    finally:
        await conn.stop()
    assert failing["status"] == "degraded" and failing["connectors"] == {"binance": "degraded"}
    assert (status["status"], status["unavailable"], status["consecutive_failures"]) == (
        "degraded",
        1,
        1,
    )
    assert "is not available" in status["last_errors"]["unavailable"]["error"]
    assert 'bfx_connector_faults_total{connector="binance",kind="unavailable"} 1.0' in metrics
    assert 'bfx_connector_faults_total{connector="binance",kind="timeout"} 0.0' in metrics
    assert 'bfx_connector_degraded{connector="binance"} 1.0' in metrics
    assert recovered["status"] == "ok" and recovered["connectors"] == {"binance": "ok"}


async def test_a_provider_repairs_the_hole_a_websocket_drop_left_and_its_health_counts_both(
    fake: StallingBinance,
    tmp_path: Path,
    namespace: str,
    kernels: Kernels,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    t0 = minute_ago(20)
    fake.ws_scripts["btcusdt@kline_1m"] = [
        [
            kline_message("BTCUSDT", t0, final=True),
            kline_message("BTCUSDT", t0 + MINUTE, final=False),
        ],  # then the server drops the socket: t0+1m..t0+3m never arrive
        [
            kline_message("BTCUSDT", t0 + 4 * MINUTE, final=True),
            kline_message("BTCUSDT", t0 + 5 * MINUTE, final=False),
        ],
    ]
    settings = load_settings(home=tmp_path, namespace=namespace, bus="memory", token="t0ken")
    options = ProviderOptions(
        exchange="binance", symbols=("BTC/USDT",), timeframes=("1m",), port=0,
        health_interval_s=0.2, record=False,
    )  # fmt: skip
    provider = await (await kernels(settings)).provider(options)
    stop = asyncio.Event()
    task = asyncio.create_task(provider.run(stop))
    try:
        await asyncio.wait_for(provider.ready.wait(), 60)
        assert provider.runtime is not None and provider.gateway_url is not None
        connector = provider.runtime.connector
        for _ in range(1200):  # the reconnect waits 0.5 s, the repair loop ticks every 0.5 s
            if connector.health().gaps_repaired >= 1 or task.done():
                break
            await asyncio.sleep(0.05)
        auth = {"Authorization": "Bearer t0ken"}
        async with httpx.AsyncClient(base_url=provider.gateway_url, headers=auth) as client:
            (shown,) = (await client.get("/api/v1/connectors")).json()["connectors"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert (shown["gaps"], shown["gaps_repaired"]) == (1, 1)
    assert shown["ws_drops"] >= 1 and shown["reconnects"] >= 1
    assert shown["last_errors"]["gap"]["error"].startswith("BTC/USDT 1m: 3 candle(s) from")
    assert "stream failed" in shown["last_errors"]["ws_drop"]["error"]
    with MarketStore(settings.market_path) as market:
        held = [r.open_ms for r in market.candles(SeriesKey("binance", "BTC/USDT", "1m"))]
    assert held == [t0 + i * MINUTE for i in range(5)]  # the hole refilled from REST history
