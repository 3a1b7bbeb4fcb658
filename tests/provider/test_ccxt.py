"""The ccxt connector, driving the real ccxt client against a Binance-shaped server on loopback.

Covers history paging, rate limits, repairing a missing range, orders (client ids, idempotent
repeats, refusals), the account, the websocket feed (trades, closed candles, reconnects and the
holes they leave) and the errors a user sees: offline, unknown exchange, bad symbol, bad keys.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from barfinex_cli.contracts.market import CandleClosed, TickerUpdated, TradeExecuted
from barfinex_cli.contracts.orders import (
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import ConfigError, ServiceUnreachable, TransientError, UsageError
from barfinex_cli.provider.connectors.base import OrderRequest
from barfinex_cli.provider.connectors.ccxt_conn import CcxtConnector, last_closed_open
from barfinex_cli.provider.connectors.ccxt_errors import OrderRefused
from barfinex_cli.provider.connectors.ccxt_ws import CandleCloser
from barfinex_cli.store.market import MarketStore, SeriesKey
from provider.fake_exchange import (
    API_KEY,
    FakeBinance,
    expected,
    kline_message,
    ticker_message,
    trade_message,
)

MINUTE = 60_000


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    server = FakeBinance()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def conn(fake: FakeBinance) -> AsyncIterator[CcxtConnector]:
    connector = make(fake)
    yield connector
    await connector.stop()


def make(fake: FakeBinance, **kwargs: Any) -> CcxtConnector:
    """Return a binance connector on the fake server, with a fast limiter and reconnects."""
    return CcxtConnector(
        "binance", rate_limit_ms=1, reconnect_delay=0.02, **fake.connector_kwargs(), **kwargs
    )


def now_minute() -> int:
    return int(time.time() * 1000) // MINUTE * MINUTE


async def test_symbols_are_the_exchange_markets(conn: CcxtConnector) -> None:
    symbols = await conn.symbols()
    assert "BTC/USDT" in symbols and "ETH/BTC" in symbols and len(symbols) == 7
    assert await conn.market_symbol("btcusdt") == "BTC/USDT"


async def test_history_pages_through_more_candles_than_one_page(fake: FakeBinance) -> None:
    conn = make(fake, page_limit=100)
    try:
        since = now_minute() - 250 * MINUTE
        rows = await conn.fetch_candles("BTC/USDT", "1m", since, since + 249 * MINUTE)
    finally:
        await conn.stop()
    assert [tuple(r[:6]) for r in rows] == [
        expected("BTCUSDT", since + i * MINUTE) for i in range(250)
    ]
    starts = [int(r.params["startTime"]) for r in fake.seen("klines")]
    assert starts == [since, since + 100 * MINUTE, since + 200 * MINUTE]
    assert conn.pages == 3


async def test_history_stops_at_until_and_honours_limit(conn: CcxtConnector) -> None:
    since = now_minute() - 60 * MINUTE
    rows = await conn.fetch_candles("BTC/USDT", "1m", since, since + 9 * MINUTE)
    assert [r.open_ms for r in rows] == [since + i * MINUTE for i in range(10)]
    assert len(await conn.fetch_candles("BTC/USDT", "1m", since, limit=5)) == 5


async def test_history_never_includes_the_forming_candle(
    fake: FakeBinance, conn: CcxtConnector
) -> None:
    before = last_closed_open(MINUTE)
    rows = await conn.fetch_candles("BTC/USDT", "1m", now_minute() - 3 * MINUTE)
    after = last_closed_open(MINUTE)
    assert before <= rows[-1].open_ms <= after
    assert rows[-1].open_ms + MINUTE <= time.time() * 1000  # it has closed
    assert len(rows) in (3, 4)  # 4 if the minute turned during the call
    # the server answered up to now, forming candle included: leaving it out is the connector's job
    assert "endTime" not in fake.seen("klines")[0].params


async def test_rate_limited_request_is_counted_and_retried(
    fake: FakeBinance, conn: CcxtConnector
) -> None:
    await conn.start()
    fake.fail_next("klines", 429)
    since = now_minute() - 20 * MINUTE
    rows = await conn.fetch_candles("BTC/USDT", "1m", since, since + 19 * MINUTE)
    assert len(rows) == 20
    assert conn.stats.rate_limited == 1
    health = conn.health()
    assert health.rate_limit_waits >= 1
    assert "rate-limiting" in health.last_errors["rate_limited"].error
    assert (health.status, health.consecutive_failures) == ("ok", 0)  # the retry was answered
    assert len(fake.seen("klines")) == 2


async def test_rate_limit_that_persists_is_a_transient_error(fake: FakeBinance) -> None:
    conn = make(fake, max_rate_limit_retries=2)
    try:
        await conn.start()
        fake.fail_next("klines", 429, times=5)
        with pytest.raises(TransientError, match="rate-limiting"):
            await conn.fetch_candles("BTC/USDT", "1m", now_minute() - 5 * MINUTE)
    finally:
        await conn.stop()
    assert conn.stats.rate_limited == 3
    health = conn.health()
    assert (health.status, health.consecutive_failures) == ("degraded", 1)


async def test_missing_range_is_repaired_by_fetching_exactly_it(
    conn: CcxtConnector, tmp_path: Path
) -> None:
    key = SeriesKey("binance", "BTC/USDT", "1m")
    since = now_minute() - 30 * MINUTE
    with MarketStore(tmp_path / "market.db") as store:
        history = await conn.fetch_candles("BTC/USDT", "1m", since, since + 29 * MINUTE)
        store.upsert_candles(key, history)
        hole = [since + i * MINUTE for i in range(10, 15)]
        store.delete_candles(key, hole)
        missing = await conn.fetch_candles("BTC/USDT", "1m", hole[0], hole[-1])
        assert [r.open_ms for r in missing] == hole
        store.upsert_candles(key, missing)
        held = [r.open_ms for r in store.candles(key)]
    assert held == [since + i * MINUTE for i in range(30)]


async def test_order_carries_client_id_and_a_repeat_places_nothing(
    fake: FakeBinance, keys: None
) -> None:
    events: list[Payload] = []

    async def emit(payload: Payload) -> None:
        events.append(payload)

    request = OrderRequest(
        "dec-0001", "main", "BTC/USDT", "buy", "limit", Decimal("0.01"), price=Decimal("1000")
    )
    conn = make(fake, emit=emit)
    try:
        first = await conn.place(request)
        again = await conn.place(request)
    finally:
        await conn.stop()
    posts = fake.seen("order", "POST")
    assert len(posts) == 1 and posts[0].params["newClientOrderId"] == "dec-0001"
    assert posts[0].params["type"] == "LIMIT" and posts[0].params["price"] == "1000"
    assert again == first and first.order_id == "1001" and first.filled == 0
    assert [type(e) for e in events] == [OrderSubmitted, OrderAccepted]

    restarted = make(fake)  # a new process: nothing cached, the exchange says "duplicate"
    try:
        after_restart = await restarted.place(request)
    finally:
        await restarted.stop()
    assert after_restart.order_id == first.order_id
    assert len(fake.orders) == 1


async def test_market_order_fills_with_its_fee(fake: FakeBinance, keys: None) -> None:
    events: list[Payload] = []

    async def emit(payload: Payload) -> None:
        events.append(payload)

    conn = make(fake, emit=emit)
    try:
        state = await conn.place(
            OrderRequest("dec-0002", "main", "BTC/USDT", "buy", "market", Decimal("0.002"))
        )
    finally:
        await conn.stop()
    assert state.filled == Decimal("0.002") and state.average_price is not None
    assert state.fees == Decimal("0.000002")  # the order state carries the fee too
    filled = events[-1]
    assert isinstance(filled, OrderFilled)
    assert filled.fill.fee == Decimal("0.000002") and filled.fill.fee_currency == "BTC"


async def test_cancel_orders_and_balances_read_the_account(fake: FakeBinance, keys: None) -> None:
    events: list[Payload] = []

    async def emit(payload: Payload) -> None:
        events.append(payload)

    conn = make(fake, symbols=["BTC/USDT"], emit=emit)
    try:
        await conn.place(
            OrderRequest(
                "dec-0003",
                "main",
                "BTC/USDT",
                "sell",
                "limit",
                Decimal("0.1"),
                price=Decimal("90000"),
            )
        )
        assert [o.client_order_id for o in await conn.orders(open_only=True)] == ["dec-0003"]
        cancelled = await conn.cancel("dec-0003", reason="inspector")
        assert await conn.orders(open_only=True) == []
        every = await conn.orders()
        (balance,) = await conn.balances()
        positions = await conn.positions()
    finally:
        await conn.stop()
    assert cancelled.order_id == "1001"
    assert isinstance(events[-1], OrderCancelled) and events[-1].by == "inspector"
    assert [o.client_order_id for o in every] == ["dec-0003"]
    assert fake.seen("order", "DELETE")[0].params["orderId"] == "1001"
    assert balance.balances["BTC"].total == Decimal("0.5")
    usdt = balance.balances["USDT"]
    assert (usdt.total, usdt.free, usdt.used) == (Decimal(10000), Decimal(9000), Decimal(1000))
    assert "ETH" not in balance.balances  # nothing held
    assert positions == []  # a spot account: holdings are balances


async def test_a_limit_keeps_the_latest_orders_the_exchange_listed(
    fake: FakeBinance, keys: None
) -> None:
    async def emit(payload: Payload) -> None:
        return None

    conn = make(fake, symbols=["BTC/USDT"], emit=emit)
    try:
        for cid in ("dec-0005", "dec-0006", "dec-0007"):
            request = OrderRequest(
                cid, "main", "BTC/USDT", "sell", "limit", Decimal("0.1"), price=Decimal("90000")
            )
            await conn.place(request)
        every = [o.client_order_id for o in await conn.orders()]
        latest = [o.client_order_id for o in await conn.orders(limit=2)]
    finally:
        await conn.stop()
    assert every == ["dec-0005", "dec-0006", "dec-0007"]
    assert latest == every[-2:]


async def test_insufficient_funds_is_a_clear_rejection(fake: FakeBinance, keys: None) -> None:
    events: list[Payload] = []

    async def emit(payload: Payload) -> None:
        events.append(payload)

    conn = make(fake, emit=emit)
    try:
        with pytest.raises(OrderRefused, match="binance refused the order: insufficient funds"):
            await conn.place(
                OrderRequest(
                    "dec-0004",
                    "main",
                    "BTC/USDT",
                    "buy",
                    "limit",
                    Decimal("5"),
                    price=Decimal("50000"),
                )
            )
    finally:
        await conn.stop()
    assert isinstance(events[-1], OrderRejected) and events[-1].by == "exchange"


async def test_wrong_secret_is_a_config_error_naming_the_variables(
    fake: FakeBinance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BFX_BINANCE_API_KEY", API_KEY)
    monkeypatch.setenv("BFX_BINANCE_SECRET", "not-the-secret")
    conn = make(fake)
    try:
        with pytest.raises(ConfigError, match="BFX_BINANCE_API_KEY and BFX_BINANCE_SECRET"):
            await conn.balances()
    finally:
        await conn.stop()


async def collect(conn: CcxtConnector, want: int) -> list[Payload]:
    """Return the first `want` payloads of the connector's stream (within 5 s)."""
    got: list[Payload] = []

    async def run() -> None:
        stream = conn.stream()
        try:
            async for payload in stream:
                got.append(payload)
                if len(got) == want:
                    return
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    await asyncio.wait_for(run(), 5.0)
    return got


async def test_stream_yields_trades_tickers_and_only_closed_candles(fake: FakeBinance) -> None:
    t0 = now_minute() - 10 * MINUTE
    now = int(time.time() * 1000)
    fake.ws_scripts["btcusdt@trade"] = [
        [
            trade_message("BTCUSDT", 7, "60000.10", "0.5", now - 40, buyer_is_maker=True),
            trade_message("BTCUSDT", 8, "60000.20", "0.25", now - 20, buyer_is_maker=False),
        ]
    ]
    fake.ws_scripts["btcusdt@kline_1m"] = [
        [
            kline_message("BTCUSDT", t0, final=False),
            kline_message("BTCUSDT", t0, final=True),
            kline_message("BTCUSDT", t0 + MINUTE, final=False),
        ]
    ]
    fake.ws_scripts["btcusdt@miniTicker"] = [[ticker_message("BTCUSDT", "60000.20", now - 10)]]
    conn = make(fake, symbols=["BTC/USDT"], channels=["trades", "candles", "ticker"])
    try:
        got = await collect(conn, 4)
        health = conn.health()
    finally:
        await conn.stop()
    trades = [p for p in got if isinstance(p, TradeExecuted)]
    candles = [p for p in got if isinstance(p, CandleClosed)]
    assert [(t.trade_id, t.side, t.price) for t in trades] == [
        ("7", "sell", Decimal("60000.1")),
        ("8", "buy", Decimal("60000.2")),
    ]
    (ticker,) = [p for p in got if isinstance(p, TickerUpdated)]
    assert (ticker.last, ticker.bid, ticker.ask) == (Decimal("60000.2"), None, None)
    assert ticker.volume_24h == Decimal("21380.30317")
    assert ticker.change_24h_pct == pytest.approx((60000.2 / 60535.95 - 1) * 100, abs=1e-6)
    (candle,) = candles  # t0 closed when t0+1m began; t0+1m is still forming
    row = expected("BTCUSDT", t0)
    assert int(candle.open_time.timestamp() * 1000) == t0
    values = (float(candle.open), float(candle.high), float(candle.low), float(candle.close))
    assert values == row[1:5] and float(candle.volume) == row[5]
    assert health.connected and health.reconnects == 0 and health.messages_per_s > 0
    assert health.last_trade_at is not None and health.last_candle_at == candle.open_time


async def test_reconnect_after_a_drop_is_counted_and_its_hole_recorded(
    fake: FakeBinance,
) -> None:
    t0 = now_minute() - 20 * MINUTE
    fake.ws_scripts["btcusdt@kline_1m"] = [
        [
            kline_message("BTCUSDT", t0, final=True),
            kline_message("BTCUSDT", t0 + MINUTE, final=False),
        ],  # then the server drops us
        [
            kline_message("BTCUSDT", t0 + 4 * MINUTE, final=True),
            kline_message("BTCUSDT", t0 + 5 * MINUTE, final=False),
        ],
    ]
    holes = []

    async def on_hole(hole: Any) -> None:
        holes.append(hole)

    conn = make(fake, symbols=["BTC/USDT"], channels=["candles"], on_hole=on_hole)
    try:
        got = await collect(conn, 2)
        repaired = await conn.fetch_candles("BTC/USDT", "1m", holes[0].start_ms, holes[0].end_ms)
        health = conn.health()
    finally:
        await conn.stop()
    assert [int(c.open_time.timestamp() * 1000) for c in got] == [t0, t0 + 4 * MINUTE]  # type: ignore[attr-defined]
    (hole,) = holes
    assert (hole.start_ms, hole.end_ms, hole.missing) == (t0 + MINUTE, t0 + 3 * MINUTE, 3)
    assert conn.holes.get_nowait() == hole
    assert [r.open_ms for r in repaired] == [t0 + MINUTE, t0 + 2 * MINUTE, t0 + 3 * MINUTE]
    assert health.reconnects == 1 and health.gaps == 1
    assert health.ws_drops == 1 and health.status == "ok"  # back: receiving again
    assert health.last_errors["ws_drop"].error.startswith("candles BTC/USDT 1m stream failed")
    assert health.last_errors["gap"].error.startswith("BTC/USDT 1m: 3 candle(s) from")
    assert fake.ws_subscriptions["btcusdt@kline_1m"] == 2


async def test_unreachable_websocket_is_retried_and_reported_disconnected(
    fake: FakeBinance,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    urls = fake.urls_override
    urls["api"]["ws"] = {"spot": f"ws://127.0.0.1:{dead}/ws"}
    conn = CcxtConnector(
        "binance", symbols=["BTC/USDT"], channels=["trades"], reconnect_delay=0.02,
        options=fake.connector_kwargs()["options"], urls_override=urls,
    )  # fmt: skip
    stream = conn.stream()

    async def first() -> Payload:
        return await anext(stream)

    task = asyncio.create_task(first())
    try:
        for _ in range(600):  # until it has failed and retried at least twice (30 s at most)
            if conn.stats.faults.counts["ws_drop"] >= 2 or task.done():
                break
            await asyncio.sleep(0.05)
        health = conn.health()
        assert not task.done()  # it keeps trying; nothing is made up meanwhile
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await stream.aclose()  # type: ignore[attr-defined]
        await conn.stop()
    assert not health.connected and health.reconnects == 0 and health.last_trade_at is None
    assert health.status == "degraded" and health.ws_drops >= 2
    assert "cannot reach binance" in health.last_errors["ws_drop"].error


def test_candle_closer_emits_on_the_next_open_and_distrusts_a_drop() -> None:
    closer = CandleCloser(MINUTE)
    assert closer.feed([[0, 1, 2, 0.5, 1.5, 10]]) == ([], None)
    closed, hole = closer.feed([[0, 1, 3, 0.5, 2.5, 12], [MINUTE, 2.5, 2.5, 2.5, 2.5, 1]])
    assert [c.high for c in closed] == [3] and hole is None
    closer.dropped()
    assert closer.feed([[MINUTE, 2.5, 2.6, 2.4, 2.6, 5]]) == ([], None)  # same candle: no hole
    closer.dropped()
    closed, hole = closer.feed([[4 * MINUTE, 1, 1, 1, 1, 1]])
    assert closed == [] and hole == (MINUTE, 3 * MINUTE)


async def test_offline_exchange_says_so_in_one_line() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}/api/v3"
    conn = CcxtConnector(
        "binance",
        urls_override={"api": {"public": base, "private": base}},
        options={"fetchMarkets": {"types": ["spot"]}},
    )
    try:
        with pytest.raises(ServiceUnreachable) as caught:
            await conn.start()
        health = conn.health()
    finally:
        await conn.stop()
    assert (health.status, health.unreachable, health.consecutive_failures) == ("degraded", 1, 1)
    assert health.last_errors["unreachable"].error == str(caught.value)
    assert str(caught.value) == (
        "cannot reach binance (offline?): connection refused — check the network, or use --replay"
    )
    assert caught.value.exit_code == 3


def test_unknown_exchange_suggests_close_matches() -> None:
    with pytest.raises(UsageError, match="unknown exchange 'binanse'; did you mean binance"):
        CcxtConnector("binanse")


async def test_bad_symbol_suggests_close_matches(conn: CcxtConnector) -> None:
    with pytest.raises(UsageError, match="no market 'BTC/USDX'; close matches: BTC/USDT"):
        await conn.fetch_candles("BTC/USDX", "1m", now_minute() - MINUTE)
    with pytest.raises(UsageError, match="unknown timeframe '7m'"):
        await conn.fetch_candles("BTC/USDT", "7m", now_minute() - MINUTE)
