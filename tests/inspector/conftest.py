"""A provider on a flat replayed market with its paper broker, and inspectors on it, over Redis.

The replay holds 300 one-minute candles of BTC/USDT at 100; the last 20 are streamed at full
speed, so the paper broker has a mark when a test starts. Tests then drive prices by handing
the provider's own paper broker closed candles (`Market.candle`): the fills, the order and
position events and the REST answers are the provider's, exactly as in a replay.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import polling
from barfinex_cli.bus.base import matches
from barfinex_cli.bus.redis_streams import FIELD, RedisStreamsBus
from barfinex_cli.contracts.advisor import DecisionMade
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import BookUpdated, CandleClosed
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.inspector.service import Inspector
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.provider.service import Provider, ProviderOptions
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.config import InspectorConfig
from barfinex_cli.runtime.settings import Settings, load_settings
from barfinex_cli.store.market import CandleRow
from conftest import REDIS_URL

START_MS = 1_704_067_200_000
MINUTE = 60_000
ROWS = 300
HISTORY = 280


def write_market(folder: Path) -> Path:
    """Write a flat BTC/USDT 1m file at 100 and return its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["time,open,high,low,close,volume"]
    for i in range(ROWS):
        hour, minute = divmod(i, 60)
        rows.append(f"2024-01-01T{hour:02d}:{minute:02d}:00Z,100,100.5,99.5,100,1000")
    (folder / "BTC_USDT-1m.csv").write_text("\n".join(rows) + "\n")
    (folder / "ETH_USDT-1m.csv").write_text(
        "\n".join(
            [rows[0], *(r.replace(",100,100.5,99.5,100,", ",50,50.2,49.8,50,") for r in rows[1:])]
        )
        + "\n"
    )
    return folder


async def until(predicate: Callable[[], Any], within_s: float = 30.0) -> None:
    """Poll `predicate` (sync or async) until it holds: the suite's `polling.until`."""
    await polling.until(predicate, within_s)


def armed(inspector: Inspector, symbol: str) -> bool:
    """Tell whether `symbol` has a runtime position whose stop and take-profit are open."""
    position = inspector.store.position(symbol)
    if position is None or position.status != "open":
        return False
    for order_id in (position.stop_order, position.tp_order):
        order = inspector.store.order(order_id) if order_id else None
        if order is None or order.status != "open":
            return False
    return True


@dataclass
class Market:
    """The running provider and helpers to move its paper broker's market."""

    settings: Settings
    provider: Provider
    bus: RedisStreamsBus
    client: GatewayClient
    next_ms: int = START_MS + ROWS * MINUTE
    events: list[Envelope[Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.provider.gateway_url is not None
        return self.provider.gateway_url

    async def candle(
        self, symbol: str, open_: float, high: float, low: float, close: float, volume: float = 1000
    ) -> None:
        """Close one 1m candle: the paper broker matches resting orders against it, and its
        `market.candle` goes on the bus as the provider's stream would put it."""
        runtime = self.provider.runtime
        assert runtime is not None and runtime.fed is not None
        row = CandleRow(self.next_ms, open_, high, low, close, volume)
        candle = CandleClosed(
            exchange="replay", symbol=symbol, timeframe="1m", open_time=from_ms(self.next_ms),
            open=Decimal(str(open_)), high=Decimal(str(high)), low=Decimal(str(low)),
            close=Decimal(str(close)), volume=Decimal(str(volume)),
        )  # fmt: skip
        self.next_ms += MINUTE
        await runtime.fed.on_candle(symbol, "1m", row, self.next_ms)
        await self.bus.publish(make_event(candle, source="provider/replay"))

    async def book(self, symbol: str, bid: str, ask: str, size: str = "10") -> None:
        """Hand the provider a one-level book as its feed would: kept for `/orderbook`, fed to
        the paper broker, published as `market.book`."""
        runtime = self.provider.runtime
        assert runtime is not None
        payload = BookUpdated(
            exchange="replay", symbol=symbol, bids=[(Decimal(bid), Decimal(size))],
            asks=[(Decimal(ask), Decimal(size))], time=from_ms(self.next_ms),
        )  # fmt: skip
        await runtime.apply(runtime.pipeline.feed(payload))

    async def decide(
        self, symbol: str = "BTC/USDT", side: str = "buy", entry: str = "100",
        stop: str = "98", take_profit: str = "104", strategy: str = "momentum",
        order_type: str = "market", size_hint: str = "1", signal_id: str | None = None,
    ) -> Envelope[Any]:  # fmt: skip
        """Publish an `advisor.decision` as the advisor would (of a new signal unless named)."""
        payload = DecisionMade(
            signal_id=signal_id or f"sig-{uuid.uuid4().hex[:12]}", exchange="replay",
            symbol=symbol, side=side,
            order_type=order_type, entry=Decimal(entry), stop=Decimal(stop),
            take_profit=Decimal(take_profit), size=Decimal(size_hint), conviction=0.7,
            reasoning="test", strategy=strategy,
        )  # fmt: skip
        event = make_event(payload, source="advisor/advisor")
        await self.bus.publish(event)
        return event

    async def published(self, pattern: str) -> list[Envelope[Any]]:
        """Return every event of a type pattern published so far, oldest first."""
        out: list[Envelope[Any]] = []
        for kind in await self.bus.stream_types():
            if matches(kind, [pattern]):
                raw = await self.bus.redis.xrange(self.bus.key(kind))
                out.extend(
                    self.bus.decode(
                        fields[FIELD.encode() if isinstance(FIELD, str) else FIELD], kind
                    )
                    for _, fields in raw
                )
        return sorted(out, key=lambda e: e.id)


@pytest.fixture
async def market(tmp_path: Path, namespace: str) -> AsyncIterator[Market]:
    """Yield a provider replaying the flat market, with the paper broker, on Redis."""
    settings = load_settings(
        home=tmp_path / "home", namespace=namespace, redis_url=REDIS_URL, token="t0ken"
    )
    options = ProviderOptions(
        replay=write_market(tmp_path / "data"), symbols=("BTC/USDT", "ETH/USDT"),
        timeframes=("1m",), speed=None, history=HISTORY, exit_at_end=False, port=0,
        health_interval_s=1, record=False,
    )  # fmt: skip
    kernel = Kernel(settings)
    provider = await kernel.provider(options)
    stop = asyncio.Event()
    task = asyncio.create_task(provider.run(stop))
    await asyncio.wait_for(provider.ready.wait(), 30)
    await asyncio.wait_for(provider.replay_done.wait(), 30)
    bus = RedisStreamsBus(REDIS_URL, namespace)
    client = GatewayClient(provider.gateway_url or "", "t0ken")
    try:
        yield Market(settings, provider, bus, client)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await kernel.close()
        await client.aclose()
        await bus.delete_namespace()
        await bus.close()


Started = tuple[Inspector, asyncio.Event, asyncio.Task[int]]
StartInspector = Callable[..., Awaitable[Started]]


@pytest.fixture
async def start_inspector(market: Market) -> AsyncIterator[StartInspector]:
    """Yield `start(**config)`: an inspector on its own kernel, ready; all stopped afterwards."""
    running: list[tuple[Kernel, asyncio.Event, asyncio.Task[int]]] = []

    async def start(
        *, client: GatewayClient | None = None, home: Path | None = None, **config: Any
    ) -> Started:
        settings = market.settings
        if home is not None:
            settings = settings.model_copy(update={"home": home})
        options = {
            "provider_url": market.url, "port": 0, "clock": "wall", "kpi_interval_s": 3600,
            "reconcile_interval_s": 3600, "retry_s": 0.2, "heartbeat_s": 0.5, **config,
        }  # fmt: skip
        kernel = Kernel(settings)
        inspector = await kernel.inspector(InspectorConfig(**options), client=client)
        stop = asyncio.Event()
        task = asyncio.create_task(inspector.run(stop))
        running.append((kernel, stop, task))
        await asyncio.wait_for(inspector.ready.wait(), 30)
        return inspector, stop, task

    try:
        yield start
    finally:
        for kernel, stop, task in reversed(running):
            stop.set()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
            await kernel.close()
