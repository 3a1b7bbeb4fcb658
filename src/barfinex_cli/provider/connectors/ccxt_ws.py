"""The live feed of the ccxt connector: ccxt's websocket `watch_*` loops, closed candles, holes.

One task per subscription (trades, candles, book or ticker of one symbol) awaits ccxt's `watch_*`
in a loop and puts payloads on one queue. A dropped socket is reconnected with exponential backoff
and jitter. ccxt sends candles while they form; `CandleCloser` emits a candle only once the next one
has started. After a reconnect, the candles between the last one seen before the drop and the first
one seen after it may be incomplete: they are reported as a `StreamHole` for the provider to repair
from REST history, never emitted as if they were whole.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from barfinex_cli import backoff
from barfinex_cli.contracts.market import (
    BookUpdated,
    TickerUpdated,
    TradeExecuted,
)
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.market.candles import to_event
from barfinex_cli.provider.connectors.base import StreamHole
from barfinex_cli.provider.connectors.ccxt_errors import translate
from barfinex_cli.provider.connectors.faults import FaultLog
from barfinex_cli.store.market import CandleRow

Channel = Literal["trades", "candles", "book", "ticker"]
WATCH_METHOD: dict[str, str] = {
    "trades": "watchTrades",
    "candles": "watchOHLCV",
    "book": "watchOrderBook",
    "ticker": "watchTicker",
}
RATE_WINDOW_S = 10.0


@dataclass(frozen=True, slots=True)
class Subscription:
    """One `watch_*` loop: a channel of one symbol (and timeframe, for candles)."""

    channel: Channel
    symbol: str
    timeframe: str | None = None
    timeframe_ms: int = 0


@dataclass
class LiveStats:
    """Counters behind `health()`: measured as things happen, never assumed."""

    reconnects: int = 0
    holes: int = 0
    rate_limited: int = 0
    throttle_waits: int = 0
    last_trade_ms: int | None = None
    last_candle_ms: int | None = None
    lag_ms: float = 0.0
    failing: set[Subscription] = field(default_factory=set)
    faults: FaultLog = field(default_factory=FaultLog)
    started: float | None = None
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def received(self, exchange_ms: int | None) -> None:
        """Count one message; `exchange_ms` is its exchange timestamp, for the lag."""
        now = time.time()
        self.arrivals.append(now)
        if exchange_ms is not None:
            self.lag_ms = max(0.0, now * 1000 - exchange_ms)

    def messages_per_s(self) -> float:
        """Return the message rate over the last `RATE_WINDOW_S` seconds."""
        if self.started is None:
            return 0.0
        now = time.time()
        while self.arrivals and self.arrivals[0] < now - RATE_WINDOW_S:
            self.arrivals.popleft()
        span = min(RATE_WINDOW_S, max(now - self.started, 1e-3))
        return len(self.arrivals) / span


class CandleCloser:
    """Turn snapshots of forming candles into closed candles, and spot holes after a drop."""

    def __init__(self, timeframe_ms: int) -> None:
        self.timeframe_ms = timeframe_ms
        self.current: CandleRow | None = None
        self.after_drop = False

    def dropped(self) -> None:
        """Note that the socket dropped: the current candle's last values may be stale."""
        self.after_drop = True

    def feed(
        self, candles: Sequence[Sequence[Any]]
    ) -> tuple[list[CandleRow], tuple[int, int] | None]:
        """Return the candles `candles` closed, and the (first, last) open of a hole if any."""
        closed: list[CandleRow] = []
        hole: tuple[int, int] | None = None
        for row in sorted(
            (r for r in map(candle_row, candles) if r is not None), key=lambda r: r[0]
        ):
            current = self.current
            if current is None:
                self.current, self.after_drop = row, False
            elif row.open_ms < current.open_ms:
                continue  # a late update of a candle already closed
            elif self.after_drop:
                self.after_drop = False
                if row.open_ms > current.open_ms:
                    hole = (current.open_ms, row.open_ms - self.timeframe_ms)
                self.current = row
            elif row.open_ms == current.open_ms:
                self.current = row
            else:
                closed.append(current)
                self.current = row
        return closed, hole


class LiveFeed:
    """Run the `watch_*` loops of a set of subscriptions and yield their payloads."""

    def __init__(
        self,
        exchange: Any,
        subscriptions: Sequence[Subscription],
        stats: LiveStats,
        *,
        holes: asyncio.Queue[StreamHole],
        on_hole: Callable[[StreamHole], Awaitable[None]] | None = None,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        book_depth: int = 20,
    ) -> None:
        self.ex = exchange
        self.exchange_id: str = exchange.id
        self.subscriptions = list(subscriptions)
        self.stats = stats
        self.holes = holes
        self.on_hole = on_hole
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.book_depth = book_depth
        self.queue: asyncio.Queue[Payload | Exception] = asyncio.Queue(maxsize=10_000)

    async def run(self) -> AsyncIterator[Payload]:
        """Yield payloads until the consumer stops; raise the first error no reconnect can fix."""
        self.stats.started = time.time()
        tasks = [asyncio.create_task(self._watch(sub)) for sub in self.subscriptions]
        try:
            while True:
                item = await self.queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, sub: Subscription) -> None:
        """Run one subscription; hand what no reconnect can fix to the consumer."""
        import ccxt

        try:
            await self._watch_forever(sub)
        except ccxt.BaseError as exc:
            await self.queue.put(translate(exc, self.exchange_id, symbol=sub.symbol))
        except Exception as exc:  # a bug: the consumer raises it with its traceback
            await self.queue.put(exc)

    async def _watch_forever(self, sub: Subscription) -> None:
        import ccxt

        failures = 0
        closer = CandleCloser(sub.timeframe_ms) if sub.channel == "candles" else None
        while True:
            try:
                data = await self._call(sub)
            except ccxt.NetworkError as exc:
                failures += 1
                self.stats.failing.add(sub)
                what = f"{sub.channel} {sub.symbol} {sub.timeframe or ''}".rstrip()
                error = translate(exc, self.exchange_id, symbol=sub.symbol)
                self.stats.faults.noted("ws_drop", f"{what} stream failed: {error}")
                if closer is not None:
                    closer.dropped()
                    self._forget_cached_candles(sub)
                delay = backoff.delay(failures, self.reconnect_delay, self.max_reconnect_delay)
                await asyncio.sleep(delay)
                continue
            if failures:
                self.stats.reconnects += 1
                self.stats.failing.discard(sub)
                failures = 0
            for payload in await self._payloads(sub, data, closer):
                await self.queue.put(payload)

    async def _call(self, sub: Subscription) -> Any:
        if sub.channel == "trades":
            return await self.ex.watch_trades(sub.symbol)
        if sub.channel == "candles":
            return await self.ex.watch_ohlcv(sub.symbol, sub.timeframe)
        if sub.channel == "book":
            return await self.ex.watch_order_book(sub.symbol)
        return await self.ex.watch_ticker(sub.symbol)

    def _forget_cached_candles(self, sub: Subscription) -> None:
        """Drop ccxt's cache of this series, so nothing from before the drop looks new."""
        by_symbol = getattr(self.ex, "ohlcvs", None)
        if isinstance(by_symbol, dict) and isinstance(by_symbol.get(sub.symbol), dict):
            by_symbol[sub.symbol].pop(sub.timeframe, None)

    async def _payloads(
        self, sub: Subscription, data: Any, closer: CandleCloser | None
    ) -> list[Payload]:
        if closer is not None:
            return await self._candles(sub, data, closer)
        if sub.channel == "trades":
            return self._trades(sub, data)
        if sub.channel == "book":
            return self._book(sub, data)
        return self._ticker(sub, data)

    async def _candles(
        self, sub: Subscription, data: Sequence[Sequence[Any]], closer: CandleCloser
    ) -> list[Payload]:
        self.stats.received(None)
        closed, hole = closer.feed(data)
        if hole is not None:
            start, end = hole
            found = StreamHole(
                self.exchange_id,
                sub.symbol,
                str(sub.timeframe),
                start,
                end,
                (end - start) // sub.timeframe_ms + 1,
            )
            self.stats.holes += 1
            self.stats.faults.remember(
                "gap",
                f"{sub.symbol} {sub.timeframe}: {found.missing} candle(s) from "
                f"{from_ms(start).isoformat()} to {from_ms(end).isoformat()} lost to a reconnect",
            )
            self.holes.put_nowait(found)
            if self.on_hole is not None:
                await self.on_hole(found)
        out: list[Payload] = []
        for row in closed:
            self.stats.last_candle_ms = row.open_ms
            out.append(to_event((self.exchange_id, sub.symbol), str(sub.timeframe), row))
        return out

    def _trades(self, sub: Subscription, trades: Sequence[dict[str, Any]]) -> list[Payload]:
        out: list[Payload] = []
        for trade in trades:
            ts, side = trade.get("timestamp"), trade.get("side")
            self.stats.received(ts)
            if ts is None or side not in ("buy", "sell") or trade.get("price") is None:
                continue  # the contract needs a time and a side; never guess them
            self.stats.last_trade_ms = int(ts)
            out.append(
                TradeExecuted(
                    exchange=self.exchange_id,
                    symbol=sub.symbol,
                    trade_id=str(trade.get("id")),
                    price=_dec(trade["price"]),
                    amount=_dec(trade.get("amount") or 0),
                    side=side,
                    time=_utc(int(ts)),
                )
            )
        return out

    def _book(self, sub: Subscription, book: dict[str, Any]) -> list[Payload]:
        ts = book.get("timestamp")
        self.stats.received(ts)
        nonce = book.get("nonce")
        depth = self.book_depth
        return [
            BookUpdated(
                exchange=self.exchange_id,
                symbol=sub.symbol,
                bids=[(_dec(p), _dec(a)) for p, a, *_ in book.get("bids", [])[:depth]],
                asks=[(_dec(p), _dec(a)) for p, a, *_ in book.get("asks", [])[:depth]],
                snapshot=True,
                sequence=nonce if isinstance(nonce, int) and nonce >= 0 else None,
                time=_utc(int(ts)) if ts is not None else datetime.now(UTC),
            )
        ]

    def _ticker(self, sub: Subscription, ticker: dict[str, Any]) -> list[Payload]:
        ts = ticker.get("timestamp")
        self.stats.received(ts)
        if ticker.get("last") is None:
            return []
        volume, change = ticker.get("baseVolume"), ticker.get("percentage")
        return [
            TickerUpdated(
                exchange=self.exchange_id,
                symbol=sub.symbol,
                bid=_dec(ticker["bid"]) if ticker.get("bid") is not None else None,
                ask=_dec(ticker["ask"]) if ticker.get("ask") is not None else None,
                last=_dec(ticker["last"]),
                volume_24h=_dec(volume) if volume is not None else None,
                change_24h_pct=float(change) if change is not None else None,
                time=_utc(int(ts)) if ts is not None else datetime.now(UTC),
            )
        ]


def candle_row(values: Sequence[Any]) -> CandleRow | None:
    """Return a candle from ccxt's [t, o, h, l, c, v], or None if a field is missing."""
    if len(values) < 6 or any(v is None for v in values[:6]):
        return None  # a candle without a price or volume is not emitted, it becomes a gap
    t, o, h, low, c, v = values[:6]
    return CandleRow(int(t), float(o), float(h), float(low), float(c), float(v))


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def _utc(ms: int) -> datetime:
    return from_ms(ms)
