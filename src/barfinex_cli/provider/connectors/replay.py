"""Replay: a market connector that plays files, or the bundled synthetic market, as a live feed.

It emits what a live feed emits and nothing more: a `CandleClosed` when a base-timeframe candle
closes, `TradeExecuted` for each trade a source holds (the synthetic market makes them per minute
when `trades` is on), and a `BookUpdated` at each synthetic close. Higher timeframes are not built
here: `timeframes` says which ones the provider's candle builder should make from the stream.

Time runs on a replay clock. `speed=60` plays a minute per second; `speed=None` ("max") plays as
fast as the consumer takes events, yielding to the loop every `yield_every` events. The part of
the source before `start_ms` (or before the first `skip` candle opens) is history: it is never
streamed, and `fetch_candles` serves it for warm-up. Like an exchange, `fetch_candles` never answers
a candle that has not closed on the replay clock, so a backtest cannot read the future.

The module runs past ~400 lines because loading, the history/live split, pacing and health all
read and move the one replay clock; split apart, each would need the others' internals.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from barfinex_cli.contracts.market import (
    BookUpdated,
    ConnectorHealth,
    Timeframe,
    TradeExecuted,
)
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import NotFound, UsageError
from barfinex_cli.market.candles import CandleAggregator, timeframe_ms, to_event
from barfinex_cli.provider.connectors.base import ConnectorBase
from barfinex_cli.store.market import CandleRow, TradeRow

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".json", ".parquet", ".feather", ".zip", ".gz")
_CANDLE, _BOOK, _TRADE = 0, 1, 2  # order at one instant: a candle closes before the next trades


class ReplayConfig(BaseModel):
    """What to replay and how fast; `source=None` means the synthetic market."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Path | None = None
    exchange: str | None = Field(None, description="series exchange name (default: replay)")
    symbols: tuple[str, ...] | None = Field(None, description="subset to play (default: all)")
    symbol: str | None = Field(None, description="symbol of a file whose name does not say it")
    timeframes: tuple[Timeframe, ...] = Field(("1m",), description="for the candle builder")
    speed: float | None = Field(None, gt=0, description="times real time; None plays at max")
    start_ms: int | None = Field(None, description="the live part starts at this open time")
    end_ms: int | None = Field(None, description="play nothing that happens after this time")
    skip: int = Field(0, ge=0, description="or after this many candle opens of history")
    trades: bool = Field(False, description="synthetic: emit a trade tape per minute")
    book: bool = Field(True, description="synthetic: emit a top of book at each close")
    seed: int = 7
    days: float = Field(7.0, gt=0, description="synthetic: days of candles")
    synthetic_start_ms: int | None = Field(None, description="synthetic: first open time")
    yield_every: int = Field(256, ge=1)

    @field_validator("speed", mode="before")
    @classmethod
    def _speed(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip().lower()
            return None if text in ("max", "") else text.removesuffix("x")
        return value


Barrier = Callable[[int, int | None], Awaitable[None]]
"""Called with the moment just played and the next one (None at the end), before the next."""


class _Item(NamedTuple):
    time_ms: int
    order: int
    symbol: str
    seq: int
    row: CandleRow | TradeRow


class _RateMeter:
    """Messages per second over a sliding window of one-second buckets."""

    def __init__(self, window_s: int = 10) -> None:
        self.window_s = window_s
        self.buckets: deque[list[int]] = deque()
        self.first: float | None = None

    def add(self, now: float) -> None:
        second = int(now)
        if self.first is None:
            self.first = now
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([second, 1])
            while self.buckets[0][0] <= second - self.window_s:
                self.buckets.popleft()

    def rate(self, now: float) -> float:
        if self.first is None:
            return 0.0
        horizon = int(now) - self.window_s
        count = sum(n for second, n in self.buckets if second > horizon)
        return count / max(min(float(self.window_s), now - self.first), 1e-3)


class ReplayConnector(ConnectorBase):
    """A `MarketConnector` over candle/trade files, a directory of them, or the synthetic market."""

    def __init__(
        self, config: ReplayConfig | None = None, *, name: str = "replay", **options: Any
    ) -> None:
        if config is not None and options:
            raise TypeError("give a ReplayConfig or keyword options, not both")
        try:
            self.config = config or ReplayConfig(**options)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UsageError(f"replay option {first['loc'][0]}: {first['msg']}") from None
        source = self.config.source
        if source is None and self.config.exchange not in (None, "synthetic"):
            raise UsageError("the synthetic market is always labelled exchange 'synthetic'")
        self.name = name
        self.exchange = "synthetic" if source is None else (self.config.exchange or "replay")
        self.timeframes = self.config.timeframes
        self.base_timeframe: Timeframe = "1m"
        self.candle_symbols: frozenset[str] = frozenset()
        """Symbols whose closed candles the stream emits; the others are trade tapes."""
        self.live_start_ms = 0
        self._resume: dict[str, int] = {}
        """Per symbol: items at or before this time were replayed by an earlier run; skip them."""
        self._loaded = False
        self._candles: dict[str, list[CandleRow]] = {}
        self._opens: dict[str, list[int]] = {}
        self._trades: dict[str, list[TradeRow]] = {}
        self._stop = asyncio.Event()
        self._streaming = False
        self._clock_ms = 0
        self._lag_ms = 0.0
        self._rate = _RateMeter()
        self._gaps = 0
        self._last_open: dict[str, int] = {}
        self._last_trade_ms: int | None = None
        self._last_candle_ms: int | None = None
        self._last_key: tuple[int, int, str, int] | None = None
        self.barrier: Barrier | None = None
        """Called before each later market moment is played (lock-step); None: no waits."""
        self.moments = 0
        """Distinct market times played so far."""

    @property
    def tf_ms(self) -> int:
        """Return the length of the base timeframe in milliseconds."""
        return timeframe_ms(self.base_timeframe)

    async def start(self) -> None:
        """Load the source (read off the event loop); a stopped replay may then stream on."""
        await self._ensure_loaded()
        self._stop = asyncio.Event()

    async def _ensure_loaded(self) -> None:
        if not self._loaded:
            await asyncio.to_thread(self._load)

    async def stop(self) -> None:
        """End the stream at the next event."""
        self._stop.set()
        self._streaming = False

    async def symbols(self) -> list[str]:
        """Return the symbols of the source."""
        await self._ensure_loaded()
        return sorted(self._candles)

    async def fetch_candles(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int,
        until_ms: int | None = None,
        limit: int | None = None,
    ) -> list[CandleRow]:
        """Return closed base-timeframe candles, `since_ms <= open_ms <= until_ms`, oldest first."""
        await self._ensure_loaded()
        if symbol not in self._candles:
            raise NotFound(f"replay has no {symbol}; it has {', '.join(sorted(self._candles))}")
        if timeframe != self.base_timeframe:
            raise UsageError(
                f"replay holds {self.base_timeframe} candles, not {timeframe}; "
                "higher timeframes come from the candle builder"
            )
        closed_until = self._clock_ms - self.tf_ms  # nothing that has not closed yet
        upper = closed_until if until_ms is None else min(until_ms, closed_until)
        opens = self._opens[symbol]
        rows = self._candles[symbol][
            bisect.bisect_left(opens, since_ms) : bisect.bisect_right(opens, upper)
        ]
        return rows if limit is None else rows[:limit]

    def resume_after(self, marks: Mapping[str, int]) -> None:
        """Resume a replay an earlier run stopped: skip each symbol's items up to its mark.

        The provider passes the close time of the last base candle it stored per symbol, so a
        restarted replay publishes no candle twice; pacing continues from there.
        """
        self._resume = {s: ms for s, ms in marks.items() if ms >= self.live_start_ms}
        if self._resume:
            self._clock_ms = max(self._clock_ms, min(self._resume.values()))

    async def stream(self) -> AsyncGenerator[Payload, None]:
        """Yield the live part of the source in time order, paced by `speed`.

        With a `barrier`, each later market moment waits for it first (lock-step: the barrier
        returns once the stack has handled the moment before); time spent there is added to
        the pacing schedule, so lock-step only ever adds waits. A second stream (after `stop`
        and `start`) resumes after the last event emitted.
        """
        await self._ensure_loaded()
        speed, every, end_ms = self.config.speed, self.config.yield_every, self.config.end_ms
        loop = asyncio.get_running_loop()
        real0, virtual0 = loop.time(), self._clock_ms
        since_yield = 0
        last: int | None = None
        self._streaming = True
        try:
            for item in heapq.merge(*(self._items(s) for s in sorted(self._candles))):
                if self._stop.is_set():
                    return
                if self._last_key is not None and item[:4] <= self._last_key:
                    continue
                mark = self._resume.get(item.symbol, -1)
                if item.time_ms < mark or (item.time_ms == mark and item.order != _TRADE):
                    continue  # a trade at the mark opens the next candle: it was not used yet
                if end_ms is not None and item.time_ms > end_ms:
                    break
                if item.time_ms != last:
                    if last is not None and self.barrier is not None:
                        held = loop.time()
                        await self.barrier(last, item.time_ms)
                        real0 += loop.time() - held
                        if self._stop.is_set():
                            return
                    last = item.time_ms
                    self.moments += 1
                since_yield += 1
                if speed is not None:
                    due = real0 + (item.time_ms - virtual0) / 1000.0 / speed
                    delay = due - loop.time()
                    if delay > 0:
                        since_yield = 0
                        try:
                            await asyncio.wait_for(self._stop.wait(), delay)
                            return
                        except TimeoutError:
                            pass
                    self._lag_ms = max(0.0, loop.time() - due) * 1000.0
                if since_yield >= every:
                    since_yield = 0
                    await asyncio.sleep(0)
                self._clock_ms = max(self._clock_ms, item.time_ms)
                self._last_key = (item.time_ms, item.order, item.symbol, item.seq)
                yield self._payload(item)
            if last is not None and self.barrier is not None and not self._stop.is_set():
                await self.barrier(last, None)  # the last moment settles before the end
        finally:
            self._streaming = False

    def health(self) -> ConnectorHealth:
        """Return what the replay measured: streaming or not, rate, lag behind schedule, holes."""
        return ConnectorHealth(
            connector=self.name,
            exchange=self.exchange,
            connected=self._streaming,
            last_trade_at=_maybe_utc(self._last_trade_ms),
            last_candle_at=_maybe_utc(self._last_candle_ms),
            lag_ms=self._lag_ms,
            messages_per_s=self._rate.rate(time.monotonic()),
            reconnects=0,
            gaps=self._gaps,
            rate_limit_waits=0,
        )

    # --- the source ------------------------------------------------------------------------

    def _load(self) -> None:
        if self.config.source is None:
            self._load_synthetic()
        else:
            self._load_files(self.config.source)
        wanted = self.config.symbols
        if wanted is not None:
            unknown = sorted(set(wanted) - set(self._candles))
            if unknown:
                raise UsageError(
                    f"replay source has no {', '.join(unknown)}; "
                    f"it has {', '.join(sorted(self._candles))}"
                )
            self._candles = {s: self._candles[s] for s in wanted}
            self.candle_symbols = self.candle_symbols & frozenset(wanted)
            self._trades = {s: self._trades.get(s, []) for s in wanted}
        too_fine = [tf for tf in self.timeframes if timeframe_ms(tf) < self.tf_ms]
        if too_fine:
            raise UsageError(
                f"the replay source holds {self.base_timeframe} candles; it cannot "
                f"give {', '.join(too_fine)}"
            )
        self._opens = {s: [c.open_ms for c in rows] for s, rows in self._candles.items()}
        self.live_start_ms = self._live_start()
        self._clock_ms = self.live_start_ms
        self._loaded = True

    def _load_synthetic(self) -> None:
        from barfinex_cli.market import synthetic

        start = self.config.synthetic_start_ms
        self._candles = synthetic.default_dataset(
            self.config.symbols or synthetic.DEFAULT_SYMBOLS,
            start_ms=synthetic.DEFAULT_START_MS if start is None else start,
            days=self.config.days,
            seed=self.config.seed,
        )
        self.candle_symbols = frozenset(self._candles)

    def _load_files(self, source: Path) -> None:
        from barfinex_cli.market.files import read_file

        if not source.exists():
            raise NotFound(
                f"replay source {source} does not exist — give a CSV/Parquet file or a folder "
                "of them, or omit --replay to replay the synthetic market"
            )
        files = (
            [source]
            if source.is_file()
            else sorted(
                p for p in source.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES)
            )
        )
        if not files:
            raise NotFound(f"replay source {source} holds no .csv/.json/.parquet/.zip files")
        candles: dict[str, dict[int, CandleRow]] = {}
        trades: dict[str, list[TradeRow]] = {}
        timeframes: set[str | None] = set()
        for path in files:
            parsed = read_file(path, symbol=self.config.symbol)
            if parsed.symbol is None:
                raise UsageError(
                    f"{path}: the file name does not say the symbol; name it like "
                    "BTCUSDT-1m-2024-01.csv or give the replay a symbol"
                )
            if parsed.rejected:
                log.warning(
                    "%s: %d rows rejected, first: %s", path, len(parsed.rejected), parsed.errors[0]
                )
            if parsed.kind == "candles":
                timeframes.add(parsed.timeframe)
                candles.setdefault(parsed.symbol, {}).update((c.open_ms, c) for c in parsed.candles)
            else:
                trades.setdefault(parsed.symbol, []).extend(parsed.trades)
        if len(timeframes) > 1:
            mixed = ", ".join(sorted(map(str, timeframes)))
            raise UsageError(
                f"replay source {source} mixes timeframes {mixed}; replay one timeframe at a time"
            )
        self.base_timeframe = cast(Timeframe, timeframes.pop() if timeframes else "1m")
        self._trades = {
            s: sorted(rows, key=lambda t: (t.time_ms, t.trade_id)) for s, rows in trades.items()
        }
        self.candle_symbols = frozenset(candles)
        self._candles = {s: [by_open[k] for k in sorted(by_open)] for s, by_open in candles.items()}
        for symbol, rows in self._trades.items():
            if symbol not in self._candles:  # a trade tape: history candles come from its trades
                self._candles[symbol] = _candles_from_trades(rows, self.base_timeframe)

    def _live_start(self) -> int:
        if self.config.start_ms is not None:
            return self.config.start_ms
        if self.candle_symbols:
            held = (self._candles[s] for s in self.candle_symbols)
            opens = sorted({c.open_ms for rows in held for c in rows})
            skip = self.config.skip
            if not opens:
                return 0
            if skip >= len(opens):
                raise UsageError(
                    f"the replay holds {len(opens)} candle opens and --history {skip} keeps them "
                    "all as history, so nothing would be replayed; lower --history or replay "
                    "more (a longer --days or a longer file)"
                )
            return opens[skip]
        first = min((rows[0].time_ms for rows in self._trades.values() if rows), default=0)
        return first - first % self.tf_ms + self.config.skip * self.tf_ms

    # --- the stream ------------------------------------------------------------------------

    def _items(self, symbol: str) -> Iterator[_Item]:
        start, step = self.live_start_ms, self.tf_ms
        if self.config.source is not None:
            candles: Iterator[_Item] = iter(())
            if symbol in self.candle_symbols:
                opens = self._opens[symbol]
                live = self._candles[symbol][bisect.bisect_left(opens, start) :]
                candles = (
                    _Item(c.open_ms + step, _CANDLE, symbol, i, c) for i, c in enumerate(live)
                )
            tape = self._trades.get(symbol, [])
            first = bisect.bisect_left([t.time_ms for t in tape], start)
            trades = (_Item(t.time_ms, _TRADE, symbol, i, t) for i, t in enumerate(tape[first:]))
            yield from heapq.merge(candles, trades)
            return
        yield from self._synthetic_items(symbol)

    def _synthetic_items(self, symbol: str) -> Iterator[_Item]:
        from barfinex_cli.market import synthetic

        seed, seq = self.config.seed, 0
        opens = self._opens[symbol]
        for candle in self._candles[symbol][bisect.bisect_left(opens, self.live_start_ms) :]:
            if self.config.trades:
                for trade in synthetic.generate_trades([candle], symbol, seed):
                    seq += 1
                    yield _Item(trade.time_ms, _TRADE, symbol, seq, trade)
            close_ms = candle.open_ms + synthetic.MINUTE_MS
            yield _Item(close_ms, _CANDLE, symbol, seq + 1, candle)
            if self.config.book:
                yield _Item(close_ms, _BOOK, symbol, seq + 2, candle)
            seq += 3

    def _payload(self, item: _Item) -> Payload:
        self._rate.add(time.monotonic())
        row, symbol, at = item.row, item.symbol, _utc(item.time_ms)
        if isinstance(row, TradeRow):
            self._last_trade_ms = row.time_ms
            return TradeExecuted(
                exchange=self.exchange,
                symbol=symbol,
                trade_id=row.trade_id,
                price=_dec(row.price),
                amount=_dec(row.amount),
                side="buy" if row.side == "buy" else "sell",
                time=at,
            )
        if item.order == _BOOK:
            from barfinex_cli.market.synthetic import top_of_book

            book = top_of_book(row, symbol, self.config.seed)
            return BookUpdated(
                exchange=self.exchange,
                symbol=symbol,
                bids=[(_dec(p), _dec(a)) for p, a in book.bids],
                asks=[(_dec(p), _dec(a)) for p, a in book.asks],
                snapshot=True,
                sequence=item.seq,
                time=at,
            )
        last = self._last_open.get(symbol)
        if last is not None and row.open_ms - last > self.tf_ms:
            self._gaps += 1  # a hole in the source: the provider's gap checks will see it too
        self._last_open[symbol] = row.open_ms
        self._last_candle_ms = row.open_ms
        return to_event((self.exchange, symbol), self.base_timeframe, row)


def _candles_from_trades(trades: list[TradeRow], timeframe: str) -> list[CandleRow]:
    """Return the candles of a trade tape (only minutes with trades, as an exchange builds them).

    Built by the provider's own aggregator, with each trade's side: history candles equal the
    ones the provider builds live from the same trades, order flow included.
    """
    aggregator = CandleAggregator((timeframe,))
    out = [
        row for t in trades for _, row in aggregator.add_trade(t.time_ms, t.price, t.amount, t.side)
    ]
    return out + [row for _, row in aggregator.flush_until(2**62)]


def _utc(ms: int) -> datetime:
    return from_ms(ms)


def _maybe_utc(ms: int | None) -> datetime | None:
    return None if ms is None else _utc(ms)


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))
