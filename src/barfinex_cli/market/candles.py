"""Candles from trades, and higher timeframes from lower ones: incrementally and in batch, alike.

The provider builds candles live, one trade at a time (`CandleAggregator`), and over history in one
vectorised pass (`trades_to_candles`, `resample`, polars `group_by_dynamic`). Both must give the
same candles bit for bit, or a backtest would not replay what the live detector saw. Open, high,
low and close are exact either way (first, max, min, last). A float volume is only the same if it
is added up in the same order: the batch path uses polars' own `sum`, and the live path replays
polars' documented summation order (`polars_sum`: a sequential remainder, then 128-value blocks
added in 16 lanes and combined pairwise). A property test pins the two together, so a polars
release that changed its order would fail loudly rather than drift.

Buckets are UTC-aligned: every timeframe up to `1d` starts on multiples of its length since the
epoch; `1w` starts on Monday 00:00 UTC, as polars' `every="1w"` and `dt.truncate("1w")` do.

The aggregator emits only closed candles. A candle closes when data of a later bucket arrives,
when its last lower-timeframe candle arrives, or when `flush_until` says the clock has passed its
end; anything older than the forming bucket is late and dropped (counted in `late`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import reduce
from operator import add
from typing import TYPE_CHECKING, Protocol

from barfinex_cli.contracts.market import CandleClosed, Timeframe
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.errors import UsageError
from barfinex_cli.store.market import CandleRow, SeriesKey

if TYPE_CHECKING:
    import polars as pl

MINUTE_MS = 60_000
DAY_MS = 1_440 * MINUTE_MS
TIMEFRAME_MS: dict[str, int] = {
    "1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS, "1h": 60 * MINUTE_MS, "2h": 120 * MINUTE_MS, "4h": 240 * MINUTE_MS,
    "6h": 360 * MINUTE_MS, "12h": 720 * MINUTE_MS, "1d": DAY_MS, "1w": 7 * DAY_MS,
}  # fmt: skip
TIMEFRAMES: tuple[str, ...] = tuple(TIMEFRAME_MS)
WEEK_OFFSET_MS = 4 * DAY_MS
"""The epoch fell on a Thursday; weeks start on Monday, four days later."""

_BLOCK, _LANES = 128, 16
_NEVER = -(2**62)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timeframe_ms(timeframe: str) -> int:
    """Return a timeframe's length in milliseconds; raise `UsageError` naming the valid ones."""
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise UsageError(
            f"unknown timeframe {timeframe!r}; use one of {', '.join(TIMEFRAMES)}"
        ) from None


def grid_offset(timeframe: str) -> int:
    """Return where the timeframe's grid starts relative to the epoch (Monday for `1w`)."""
    return WEEK_OFFSET_MS if timeframe == "1w" else 0


def bucket_start(timeframe: str, time_ms: int) -> int:
    """Return the open time of the candle of `timeframe` that contains `time_ms`."""
    step = timeframe_ms(timeframe)
    return time_ms - (time_ms - grid_offset(timeframe)) % step


def polars_sum(values: Sequence[float]) -> float:
    """Add floats in the order polars' Float64 `sum` does, so both give the same bits.

    polars-compute `float_sum`: the first `len % 128` values are added one by one; the rest is cut
    into 128-value blocks, each added as 16 lanes folded halves-onto-halves, and blocks are
    combined by pairwise recursion. Below 128 values this is a plain left-to-right sum. Equal
    up to the sign of a zero sum (which `==` does not see).
    """
    n = len(values)
    rest = n % _BLOCK
    head = reduce(add, values[:rest], 0.0)
    if n == rest:
        return 0.0 + head
    return _pairwise(values[rest:]) + head


def _pairwise(values: Sequence[float]) -> float:
    blocks = len(values) // _BLOCK
    if blocks > 1:
        left = (blocks // 2) * _BLOCK
        return _pairwise(values[:left]) + _pairwise(values[left:])
    # One block: 16 lanes, lane j adding values j, j+16, ... in order. Unrolled into locals
    # because it runs at every candle close of a busy symbol (3x faster than slicing lanes).
    # fmt: off
    a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q = values[:_LANES]
    for at in range(_LANES, _BLOCK, _LANES):
        a2, b2, c2, d2, e2, f2, g2, h2, i2, j2, k2, m2, n2, o2, p2, q2 = values[at : at + _LANES]
        a += a2; b += b2; c += c2; d += d2; e += e2; f += f2; g += g2; h += h2  # noqa: E702
        i += i2; j += j2; k += k2; m += m2; n += n2; o += o2; p += p2; q += q2  # noqa: E702
    a += i; b += j; c += k; d += m; e += n; f += o; g += p; h += q  # noqa: E702
    a += e; b += f; c += g; d += h  # noqa: E702
    # fmt: on
    return float((a + c) + (b + d))


class _Forming:
    """A candle still open: its bucket and what has been folded in so far."""

    __slots__ = ("buys", "close", "end", "high", "low", "open", "sells", "start", "trades",
                 "volumes")  # fmt: skip

    def __init__(self, start: int, end: int, row: CandleRow) -> None:
        self.start, self.end = start, end
        self.open, self.high, self.low, self.close = row.open, row.high, row.low, row.close
        self.volumes = [row.volume]
        self.trades = row.trades
        # Order flow stays known only while every folded candle knows it.
        self.buys = None if row.buy_volume is None else [row.buy_volume]
        self.sells = None if row.sell_volume is None else [row.sell_volume]

    def fold(self, row: CandleRow) -> None:
        if row.high > self.high:
            self.high = row.high
        if row.low < self.low:
            self.low = row.low
        self.close = row.close
        self.volumes.append(row.volume)
        self.trades = (
            None if self.trades is None or row.trades is None else self.trades + row.trades
        )
        if self.buys is not None:
            self.buys = None if row.buy_volume is None else [*self.buys, row.buy_volume]
        if self.sells is not None:
            self.sells = None if row.sell_volume is None else [*self.sells, row.sell_volume]

    def row(self) -> CandleRow:
        return CandleRow(
            self.start, self.open, self.high, self.low, self.close,
            polars_sum(self.volumes), self.trades,
            None if self.buys is None else polars_sum(self.buys),
            None if self.sells is None else polars_sum(self.sells),
        )  # fmt: skip


class CandleAggregator:
    """Build closed candles of every configured timeframe from one feed, one input at a time.

    Feed it trades (`add_trade`: the smallest configured timeframe is built from them, the others
    from it) or closed candles of one timeframe (`add_candle`), not both. Every call returns the
    candles that closed, as `(timeframe, row)`, lower timeframes first.

    Args:
        timeframes: Timeframes to emit; each must be a multiple of the smallest one.
    """

    def __init__(self, timeframes: Sequence[str] = TIMEFRAMES) -> None:
        if not timeframes:
            raise UsageError("give at least one timeframe to build candles for")
        self.timeframes = tuple(sorted(set(timeframes), key=timeframe_ms))
        self.base = self.timeframes[0]
        base_ms = timeframe_ms(self.base)
        for tf in self.timeframes[1:]:
            if timeframe_ms(tf) % base_ms:
                raise UsageError(
                    f"timeframe {tf} cannot be built from {self.base}; add a timeframe that "
                    f"divides both (1m always does)"
                )
        self.late = 0
        """Inputs dropped because their bucket had already closed (or a repeated candle)."""
        self._source: str | None = None
        self._forming: dict[str, _Forming] = {}
        self._closed_end: dict[str, int] = {}
        self._targets_of: dict[str, tuple[str, ...]] = {}
        self._last_in = _NEVER
        # The trade bucket lives in plain attributes: `add_trade` runs once per trade. An empty
        # range (start > end) means no bucket is forming; `_floor` is the first start still open.
        self._start, self._end, self._floor = 1, 0, _NEVER
        self._open = self._high = self._low = self._close = 0.0
        self._amounts: list[float] = []
        self._buys: list[float] = []
        self._sells: list[float] = []
        self._unsided = False  # a trade of this bucket came without its taker side

    def add_trade(
        self, time_ms: int, price: float, amount: float, side: str | None = None
    ) -> list[tuple[str, CandleRow]]:
        """Fold one trade in; return the candles this trade closed (usually none).

        `side` is the taker's side ("buy" or "sell"); with it, candles carry order flow
        (`buy_volume`, `sell_volume`), without it those stay unknown (None).
        """
        if self._start <= time_ms < self._end:
            if price > self._high:
                self._high = price
            elif price < self._low:
                self._low = price
            self._close = price
            self._amounts.append(amount)
            # Both lists keep one entry per trade (0.0 for the other side), so each sums in
            # exactly the order polars sums the masked amount column: identical floats.
            if side == "buy":
                self._buys.append(amount)
                self._sells.append(0.0)
            elif side == "sell":
                self._buys.append(0.0)
                self._sells.append(amount)
            else:
                self._unsided = True
            return []
        return self._roll(time_ms, price, amount, side)

    def _roll(
        self, time_ms: int, price: float, amount: float, side: str | None
    ) -> list[tuple[str, CandleRow]]:
        if self._source != "trades":
            self._claim("trades")
        step = timeframe_ms(self.base)
        start = time_ms - (time_ms - grid_offset(self.base)) % step
        if start < self._floor:
            self.late += 1
            return []
        closed = self._close_trade_bucket() if self._amounts else []
        self._start = self._floor = start
        self._end = start + step
        self._open = self._high = self._low = self._close = price
        self._amounts = [amount]
        self._buys = [amount if side == "buy" else 0.0]
        self._sells = [amount if side == "sell" else 0.0]
        self._unsided = side not in ("buy", "sell")
        closed.extend(self._close_higher(time_ms))
        return closed

    def _trade_row(self) -> CandleRow:
        known = not self._unsided
        return CandleRow(
            self._start, self._open, self._high, self._low, self._close,
            polars_sum(self._amounts), len(self._amounts),
            polars_sum(self._buys) if known else None,
            polars_sum(self._sells) if known else None,
        )  # fmt: skip

    def _close_trade_bucket(self) -> list[tuple[str, CandleRow]]:
        row = self._trade_row()
        self._amounts = []
        self._floor, self._start, self._end = self._end, 1, 0
        return [(self.base, row), *self._fold(self.base, row)]

    def add_candle(self, timeframe: str, row: CandleRow) -> list[tuple[str, CandleRow]]:
        """Fold one closed candle of `timeframe` into every higher timeframe built from it.

        Returns the higher candles that closed: those whose next bucket this candle opens, and
        the one this candle completes. A candle at or before the last one given is dropped.
        """
        self._claim(timeframe)
        if row.open_ms <= self._last_in:
            self.late += 1
            return []
        self._last_in = row.open_ms
        return self._fold(timeframe, row)

    def _fold(self, timeframe: str, row: CandleRow) -> list[tuple[str, CandleRow]]:
        closed: list[tuple[str, CandleRow]] = []
        row_end = row.open_ms + timeframe_ms(timeframe)
        for tf in self._targets(timeframe):
            forming = self._forming.get(tf)
            if forming is not None and row.open_ms >= forming.end:
                closed.append(self._emit(tf, forming))
                forming = None
            if forming is None:
                start = bucket_start(tf, row.open_ms)
                if start < self._closed_end.get(tf, _NEVER):
                    continue  # that bucket was closed by the clock; never emit it twice
                forming = self._forming[tf] = _Forming(start, start + timeframe_ms(tf), row)
            else:
                forming.fold(row)
            if row_end >= forming.end:
                closed.append(self._emit(tf, forming))
        return closed

    def _emit(self, timeframe: str, forming: _Forming) -> tuple[str, CandleRow]:
        del self._forming[timeframe]
        self._closed_end[timeframe] = forming.end
        return timeframe, forming.row()

    def flush_until(self, time_ms: int) -> list[tuple[str, CandleRow]]:
        """Close every candle whose bucket ends at or before `time_ms` (the clock, minus any grace).

        Call it from a timer so the last candle closes without waiting for the next trade.
        """
        closed: list[tuple[str, CandleRow]] = []
        if self._amounts and self._end <= time_ms:
            closed = self._close_trade_bucket()
        if self._source == "trades":
            self._floor = max(self._floor, bucket_start(self.base, time_ms))
        closed.extend(self._close_higher(time_ms))
        return closed

    def _close_higher(self, time_ms: int) -> list[tuple[str, CandleRow]]:
        closed = []
        for tf in self.timeframes:
            forming = self._forming.get(tf)
            if forming is not None and forming.end <= time_ms:
                closed.append(self._emit(tf, forming))
        return closed

    def forming(self, timeframe: str) -> CandleRow | None:
        """Return the candle of `timeframe` still forming (never emitted), or None."""
        if timeframe == self.base and self._source == "trades":
            if not self._amounts:
                return None
            return self._trade_row()
        forming = self._forming.get(timeframe)
        return forming.row() if forming is not None else None

    def _targets(self, timeframe: str) -> tuple[str, ...]:
        targets = self._targets_of.get(timeframe)
        if targets is None:
            step = timeframe_ms(timeframe)
            targets = self._targets_of[timeframe] = tuple(
                tf
                for tf in self.timeframes
                if timeframe_ms(tf) > step and not timeframe_ms(tf) % step
            )
        return targets

    def _claim(self, source: str) -> None:
        if self._source is None:
            self._source = source
        elif self._source != source:
            raise UsageError(
                f"this aggregator is fed from {self._source}; use another one for {source} "
                "(two feeds into one would count volume twice)"
            )


def to_event(key: SeriesKey | tuple[str, str], timeframe: str, row: CandleRow) -> CandleClosed:
    """Return the `market.candle` payload of a closed candle; prices are Decimal of the float repr.

    Args:
        key: Exchange and symbol (a `SeriesKey` must name the same timeframe).
        timeframe: The candle's timeframe.
        row: The closed candle.
    """
    if isinstance(key, SeriesKey) and key.timeframe != timeframe:
        raise ValueError(f"series {key} does not hold {timeframe} candles")
    timeframe_ms(timeframe)
    tf: Timeframe = timeframe  # type: ignore[assignment]  # checked just above
    return CandleClosed(
        exchange=key[0],
        symbol=key[1],
        timeframe=tf,
        open_time=from_ms(row.open_ms),
        open=Decimal(repr(row.open)),
        high=Decimal(repr(row.high)),
        low=Decimal(repr(row.low)),
        close=Decimal(repr(row.close)),
        volume=Decimal(repr(row.volume)),
        trades=row.trades,
        buy_volume=None if row.buy_volume is None else Decimal(repr(row.buy_volume)),
        sell_volume=None if row.sell_volume is None else Decimal(repr(row.sell_volume)),
    )


def trades_to_candles(frame: pl.DataFrame, every: str) -> pl.DataFrame:
    """Return the candles of `every` built from trades (`time_ms`, `price`, `amount`), eagerly.

    Trades are taken in time order (a stable sort keeps the arrival order of equal times). The
    result has the `MarketStore` candle columns and equals what `CandleAggregator` emits.
    """
    import polars as pl

    aggs = [
        pl.col("price").first().alias("open"),
        pl.col("price").max().alias("high"),
        pl.col("price").min().alias("low"),
        pl.col("price").last().alias("close"),
        pl.col("amount").sum().alias("volume"),
        pl.len().cast(pl.Int64).alias("trades"),
    ]
    if "side" in frame.columns:  # order flow: taker buy and sell volume, known if every side is
        sided = pl.col("side").is_in(["buy", "sell"]).fill_null(False).all()
        for name in ("buy", "sell"):
            # Masked, not filtered: the sum runs over every trade of the bucket in the order
            # `polars_sum` follows live (a filtered column would be summed in another order).
            masked = pl.when(pl.col("side") == name).then(pl.col("amount")).otherwise(0.0)
            aggs.append(pl.when(sided).then(masked.sum()).otherwise(None).alias(f"{name}_volume"))
    return _group(frame, "time_ms", every, aggs)


def resample(frame: pl.DataFrame, every: str) -> pl.DataFrame:
    """Return candles of `every` built from candles of a lower timeframe (the store's columns).

    `trades` is null in a bucket where any input candle lacks a trade count.
    """
    import polars as pl

    aggs = [
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").sum(),
        pl.when(pl.col("trades").null_count() == 0)
        .then(pl.col("trades").sum())
        .otherwise(None)
        .cast(pl.Int64)
        .alias("trades"),
    ]
    for name in ("buy_volume", "sell_volume"):
        if name in frame.columns:
            known = pl.col(name).null_count() == 0
            aggs.append(pl.when(known).then(pl.col(name).sum()).otherwise(None).alias(name))
    return _group(frame, "open_ms", every, aggs)


def _group(frame: pl.DataFrame, time_col: str, every: str, aggs: list[pl.Expr]) -> pl.DataFrame:
    import polars as pl

    timeframe_ms(every)
    if not frame[time_col].is_sorted():
        frame = frame.sort(time_col, maintain_order=True)
    if frame.n_chunks() > 1:
        frame = frame.rechunk()  # a group split across chunks would be summed in another order
    # Order is checked above, so flag it: polars would otherwise scan the column once more.
    stamp = pl.col(time_col).cast(pl.Datetime("ms")).set_sorted().alias("_t")
    out = frame.with_columns(stamp).group_by_dynamic("_t", every=every).agg(aggs)
    return out.select(
        pl.col("_t").cast(pl.Int64).alias("open_ms"), *(a.meta.output_name() for a in aggs)
    )


def frame_rows(frame: pl.DataFrame) -> list[CandleRow]:
    """Return the rows of a candle frame as `CandleRow`s."""
    columns = ["open_ms", "open", "high", "low", "close", "volume", "trades"]
    columns += [c for c in ("buy_volume", "sell_volume") if c in frame.columns]
    return [CandleRow(*r) for r in frame.select(columns).iter_rows()]


class HistorySource(Protocol):
    """Anything that serves closed candles from history: a connector, a file, a test's list."""

    async def fetch_candles(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int,
        until_ms: int | None = None,
        limit: int | None = None,
    ) -> list[CandleRow]:
        """Return closed candles with `since_ms <= open_ms <= until_ms`, at most `limit`."""
        ...
