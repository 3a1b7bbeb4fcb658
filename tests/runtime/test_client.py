"""`GatewayClient` against a real gateway on loopback: typed answers, refusals, retries.

The gateway is the real app (uvicorn on a free port, a real `MarketStore` in `tmp_path`, the
in-process bus, a real `PaperBroker`); the client talks HTTP to it exactly as the roles do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.contracts.market import BookUpdated
from barfinex_cli.contracts.rest import PlaceOrderRequest
from barfinex_cli.errors import NotFound, ServiceUnreachable, TokenRefused, UsageError
from barfinex_cli.provider.connectors.replay import ReplayConnector
from barfinex_cli.provider.gateway.app import bind, create_app, serve
from barfinex_cli.provider.gateway.context import GatewayContext
from barfinex_cli.runtime import client as client_module
from barfinex_cli.runtime.client import GatewayClient, token_from
from barfinex_cli.runtime.settings import Settings
from barfinex_cli.store.market import CandleRow, SeriesKey, TradeRow
from provider.gateway_server import TOKEN, make_broker, make_context, serving

T0 = 1_700_000_040_000
KEY = SeriesKey("binance", "BTC/USDT", "1m")


class _Counting(httpx.AsyncHTTPTransport):
    """The network transport, counting the requests it was asked to send."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return await super().handle_async_request(request)


def _context(tmp_path: Path) -> GatewayContext:
    bus = MemoryBus("client")
    book = BookUpdated(
        exchange="binance", symbol="BTC/USDT", bids=[(Decimal("99.5"), Decimal(2))],
        asks=[(Decimal("100.5"), Decimal(1))], time=datetime(2024, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    ctx = make_context(
        tmp_path, bus, broker=make_broker(bus), connectors={"replay": ReplayConnector(days=0.05)},
        books={"BTC/USDT": book},
    )  # fmt: skip
    rows = [CandleRow(T0 + i * 60_000, 100 + i, 101 + i, 99 + i, 100.5 + i, 10.0) for i in range(5)]
    ctx.market.upsert_candles(KEY, rows)
    ctx.market.upsert_trades("binance", "BTC/USDT", [TradeRow(T0, "t0", 100.0, 0.5, "buy")])
    return ctx


@pytest.fixture
async def base_url(tmp_path: Path) -> AsyncIterator[str]:
    ctx = _context(tmp_path)
    try:
        async with serving(create_app(ctx), ready_path="/api/v1/health") as base:
            yield base
    finally:
        ctx.market.close()


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(base_url, TOKEN, retries=0) as gateway:
        yield gateway


async def test_market_routes_answer_typed_models(client: GatewayClient) -> None:
    health = await client.health()
    assert (health.status, health.clock, health.market_time) == ("ok", "wall", None)
    assert (await client.ready()).ready is True
    candles = await client.candles("binance", "BTC/USDT", "1m", limit=2)
    assert [c.open_ms for c in candles.candles] == [T0 + 3 * 60_000, T0 + 4 * 60_000]
    assert candles.candles[0].time == datetime.fromtimestamp((T0 + 180_000) / 1000, UTC)
    ranged = await client.candles("binance", "BTC/USDT", "1m", since_ms=T0, until_ms=T0 + 60_000)
    assert [c.close for c in ranged.candles] == [100.5, 101.5]
    series = await client.series()
    assert [(s.exchange, s.symbol, s.rows) for s in series] == [("binance", "BTC/USDT", 5)]
    trades = await client.trades("binance", "BTC/USDT", since_ms=T0)
    assert [t.trade_id for t in trades.trades] == ["t0"]
    book = await client.orderbook("BTC/USDT", depth=1)
    assert book.bids == [(Decimal("99.5"), Decimal(2))]
    symbols = await client.symbols()
    assert symbols[0].symbols == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    assert symbols[0].error is None
    connectors = await client.connectors()
    assert (connectors[0].name, connectors[0].connected) == ("replay", False)


async def test_orders_round_trip_and_a_repeat_is_not_created_twice(client: GatewayClient) -> None:
    request = PlaceOrderRequest(
        client_order_id="c-1", account="paper", symbol="BTC/USDT", side="buy", type="limit",
        amount=Decimal("0.5"), price=Decimal(50),
    )  # fmt: skip
    first = await client.place_order(request)
    again = await client.place_order(request)
    assert (first.created, again.created) == (True, False)
    assert again.order == first.order
    assert [o.client_order_id for o in await client.orders(open_only=True)] == ["c-1"]
    cancelled = await client.cancel_order("c-1")
    assert cancelled.status == "cancelled"
    assert await client.orders(open_only=True) == []
    balances = await client.balances()
    assert [b.balances for b in balances] == [b.balances for b in await client.accounts("paper")]
    assert balances[0].balances["USDT"].total == Decimal(10_000)
    assert await client.positions() == []


async def test_orders_asked_for_by_id_are_read_in_chunks_and_an_empty_ask_sends_nothing(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "ORDER_IDS_PER_CALL", 2)
    transport = _Counting()
    async with GatewayClient(base_url, TOKEN, retries=0, transport=transport) as gateway:
        for i in range(5):
            request = PlaceOrderRequest(
                client_order_id=f"c-{i}", account="paper", symbol="BTC/USDT", side="buy",
                type="limit", amount=Decimal("0.1"), price=Decimal(50),
            )  # fmt: skip
            await gateway.place_order(request)
        await gateway.cancel_order("c-3")
        sent = transport.sent
        asked = ["c-4", "c-3", "c-1", "c-3", "c-0", "never-placed"]
        found = await gateway.orders("paper", ids=asked)
        assert transport.sent - sent == 3  # five distinct ids, two a call
        assert sorted((o.client_order_id, o.status) for o in found) == [
            ("c-0", "open"), ("c-1", "open"), ("c-3", "cancelled"), ("c-4", "open"),
        ]  # fmt: skip
        sent = transport.sent
        assert await gateway.orders("paper", ids=[]) == []
        assert transport.sent == sent


async def test_orders_with_a_limit_are_the_latest_oldest_first_and_not_asked_with_ids(
    client: GatewayClient,
) -> None:
    for i in range(4):
        request = PlaceOrderRequest(
            client_order_id=f"c-{i}", account="paper", symbol="BTC/USDT", side="buy",
            type="limit", amount=Decimal("0.1"), price=Decimal(50),
        )  # fmt: skip
        await client.place_order(request)
    await client.cancel_order("c-3")
    assert [o.client_order_id for o in await client.orders(limit=2)] == ["c-2", "c-3"]
    assert [o.client_order_id for o in await client.orders(open_only=True, limit=2)] == [
        "c-1", "c-2",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not both"):
        await client.orders(ids=["c-0"], limit=1)


async def test_apps_register_heartbeat_and_list(client: GatewayClient) -> None:
    info = await client.register_app("det-1", "detector", url="http://127.0.0.1:8101")
    beat = await client.heartbeat(info.id, "degraded")
    assert (beat.id, beat.health, beat.url) == (info.id, "degraded", "http://127.0.0.1:8101")
    assert [a.name for a in await client.list_apps()] == ["det-1"]
    with pytest.raises(NotFound, match="register it first"):
        await client.heartbeat("nope")


async def test_gateway_refusals_become_the_matching_errors(client: GatewayClient) -> None:
    with pytest.raises(NotFound, match="held series: binance BTC/USDT 1m"):
        await client.candles("binance", "ETH/USDT", "1m")
    with pytest.raises(NotFound, match="never-placed"):
        await client.cancel_order("never-placed")
    with pytest.raises(UsageError, match="since") as bad:
        await client.candles("binance", "BTC/USDT", "1m", since_ms=2**63)
    assert bad.value.exit_code == 2
    with pytest.raises(UsageError, match="limit"):
        await client.trades("binance", "BTC/USDT", limit=0)


async def test_a_wrong_or_missing_token_raises_token_refused_naming_the_fix(base_url: str) -> None:
    async with GatewayClient(base_url, "wrong", retries=0) as wrong:
        assert (await wrong.health()).status == "ok"  # health needs no token
        with pytest.raises(TokenRefused) as refused:
            await wrong.series()
    assert refused.value.exit_code == 4  # refused, not unreachable: the provider answered
    assert not isinstance(refused.value, ServiceUnreachable)
    message = str(refused.value)
    assert "refused the token" in message and "BFX_TOKEN" in message and "--data-dir" in message
    async with GatewayClient(base_url, None, retries=0) as anonymous:
        with pytest.raises(TokenRefused, match="none is set"):
            await anonymous.orders()


async def test_connection_errors_are_retried_then_name_the_url_and_the_fix() -> None:
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there now
    transport = _Counting()
    async with GatewayClient(url, TOKEN, retries=2, transport=transport, backoff_s=0.01) as c:
        with pytest.raises(ServiceUnreachable) as unreachable:
            await c.health()
    assert transport.sent == 3
    assert url in str(unreachable.value)
    assert "bfx provider start" in str(unreachable.value)
    assert unreachable.value.exit_code == 3


async def test_a_provider_that_comes_up_during_the_backoff_is_reached(tmp_path: Path) -> None:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    transport = _Counting()
    ctx = _context(tmp_path)
    async with GatewayClient(
        f"http://127.0.0.1:{port}", TOKEN, retries=20, transport=transport, backoff_s=0.05,
        max_backoff_s=0.2,
    ) as client:  # fmt: skip
        call = asyncio.ensure_future(client.series())
        for _ in range(500):
            if transport.sent >= 1:
                break
            await asyncio.sleep(0.01)
        assert not call.done()
        app = create_app(ctx)
        stop = asyncio.Event()
        server = asyncio.create_task(serve(app, stop, bind("127.0.0.1", port)))
        try:
            series = await asyncio.wait_for(call, 20)
        finally:
            stop.set()
            await asyncio.wait_for(server, 15)
            ctx.market.close()
    assert [s.symbol for s in series] == ["BTC/USDT"]
    assert transport.sent >= 2


def test_token_from_reads_the_environment_then_the_file_and_never_creates_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BFX_TOKEN", raising=False)
    home = tmp_path / "home"
    assert token_from(Settings(home=home)) is None
    assert not (home / "token").exists()
    home.mkdir()
    (home / "token").write_text("from-file\n")
    assert token_from(Settings(home=home)) == "from-file"
    assert token_from(Settings(home=home, token="from-env")) == "from-env"
    (home / "token").write_text("\n")
    assert token_from(Settings(home=home)) is None
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert token_from(Settings(home=not_a_dir)) is None
