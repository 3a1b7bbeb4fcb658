"""Candles: the live aggregator and the polars batch path give the same candles, bit for bit."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barfinex_cli.errors import UsageError
from barfinex_cli.market.candles import (
    TIMEFRAMES,
    CandleAggregator,
    bucket_start,
    frame_rows,
    polars_sum,
    resample,
    timeframe_ms,
    to_event,
    trades_to_candles,
)
from barfinex_cli.store.market import CandleRow, SeriesKey

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z, a Monday
MIN = 60_000

prices = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
amounts = st.floats(min_value=1e-8, max_value=1e4, allow_nan=False, allow_infinity=False)
# Steps mix bursts inside one minute (buckets of hundreds of trades, past polars' 128-value
# blocks) with jumps over minutes, hours and days (empty buckets, week boundaries).
steps = st.one_of(
    st.integers(0, 400),
    st.integers(0, 3 * MIN),
    st.integers(0, 7 * 60 * MIN),
    st.integers(0, 3 * 1_440 * MIN),
)


@st.composite
def trade_streams(draw: st.DrawFn) -> list[tuple[int, float, float]]:
    start = T0 + draw(st.integers(-10 * 1_440 * MIN, 10 * 1_440 * MIN))
    n = draw(st.integers(1, 700))
    step = draw(steps)
    times, t = [], start
    for _ in range(n):
        t += draw(st.integers(0, step))
        times.append(t)
    return [(ms, draw(prices), draw(amounts)) for ms in times]


def run_live(
    trades: list[tuple[int, float, float]], timeframes: tuple[str, ...]
) -> dict[str, list[CandleRow]]:
    agg = CandleAggregator(timeframes)
    out: dict[str, list[CandleRow]] = {tf: [] for tf in timeframes}
    for ms, price, amount in trades:
        for tf, row in agg.add_trade(ms, price, amount):
            out[tf].append(row)
    for tf, row in agg.flush_until(2**60):
        out[tf].append(row)
    return out


def trade_frame(trades: list[tuple[int, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        trades,
        schema={"time_ms": pl.Int64, "price": pl.Float64, "amount": pl.Float64},
        orient="row",
    )


@settings(max_examples=80, deadline=None)
@given(trade_streams())
def test_live_candles_equal_batch_candles_at_every_timeframe(
    trades: list[tuple[int, float, float]],
) -> None:
    live = run_live(trades, TIMEFRAMES)
    base = trades_to_candles(trade_frame(trades), "1m")
    assert live["1m"] == frame_rows(base)
    for tf in TIMEFRAMES[1:]:
        assert live[tf] == frame_rows(resample(base, tf)), tf


@settings(max_examples=60, deadline=None)
@given(trade_streams(), st.sampled_from(["1m", "5m", "1h", "1w"]))
def test_a_single_timeframe_built_from_trades_equals_polars(
    trades: list[tuple[int, float, float]], timeframe: str
) -> None:
    live = run_live(trades, (timeframe,))
    assert live[timeframe] == frame_rows(trades_to_candles(trade_frame(trades), timeframe))


@settings(max_examples=200, deadline=None)
@given(st.lists(amounts, min_size=0, max_size=1_200))
def test_polars_sum_adds_in_the_order_polars_does(values: list[float]) -> None:
    assert polars_sum(values) == pl.Series(values, dtype=pl.Float64).sum()


@settings(max_examples=40, deadline=None)
@given(trade_streams())
def test_higher_timeframes_from_lower_candles_equal_batch_resample(
    trades: list[tuple[int, float, float]],
) -> None:
    one_minute = frame_rows(trades_to_candles(trade_frame(trades), "1m"))
    agg = CandleAggregator(("1m", "3m", "15m", "4h", "1d", "1w"))
    built: dict[str, list[CandleRow]] = {}
    for row in one_minute:
        for tf, closed in agg.add_candle("1m", row):
            built.setdefault(tf, []).append(closed)
    for tf, closed in agg.flush_until(2**60):
        built.setdefault(tf, []).append(closed)
    frame = pl.DataFrame(one_minute, schema=list(CandleRow._fields), orient="row")
    for tf in ("3m", "15m", "4h", "1d", "1w"):
        assert built.get(tf, []) == frame_rows(resample(frame, tf)), tf


def test_weeks_start_on_monday_like_polars() -> None:
    thursday = 0  # the epoch
    assert bucket_start("1w", thursday) == -3 * 1_440 * MIN
    stamp = pl.Series([T0 + 3 * 1_440 * MIN]).cast(pl.Datetime("ms"))
    assert stamp.dt.truncate("1w").cast(pl.Int64)[0] == bucket_start("1w", T0 + 3 * 1_440 * MIN)
    assert (
        datetime.fromtimestamp(bucket_start("1w", T0 + 5 * 1_440 * MIN) / 1000, UTC).weekday() == 0
    )


def test_the_last_candle_closes_on_the_clock_without_another_trade() -> None:
    agg = CandleAggregator(("1m", "5m"))
    assert agg.add_trade(T0 + 1_000, 10.0, 1.0) == []
    assert agg.add_trade(T0 + 2_000, 12.0, 2.0) == []
    assert agg.flush_until(T0 + MIN - 1) == []
    closed = agg.flush_until(T0 + MIN)
    assert closed == [("1m", CandleRow(T0, 10.0, 12.0, 10.0, 12.0, 3.0, 2))]
    assert agg.forming("5m") == CandleRow(T0, 10.0, 12.0, 10.0, 12.0, 3.0, 2)
    assert agg.flush_until(T0 + 5 * MIN) == [("5m", CandleRow(T0, 10.0, 12.0, 10.0, 12.0, 3.0, 2))]


def test_a_higher_candle_closes_when_its_last_lower_candle_arrives() -> None:
    agg = CandleAggregator(("1m", "3m"))
    rows = [CandleRow(T0 + i * MIN, 1.0 + i, 2.0 + i, 0.5, 1.5 + i, 1.0, 4) for i in range(3)]
    assert agg.add_candle("1m", rows[0]) == []
    assert agg.add_candle("1m", rows[1]) == []
    assert agg.add_candle("1m", rows[2]) == [("3m", CandleRow(T0, 1.0, 4.0, 0.5, 3.5, 3.0, 12))]


def test_late_trades_are_dropped_and_no_bucket_is_emitted_twice() -> None:
    agg = CandleAggregator(("1m", "5m"))
    agg.add_trade(T0 + 10, 1.0, 1.0)
    agg.add_trade(T0 + 2 * MIN, 2.0, 1.0)
    assert agg.add_trade(T0 + MIN, 3.0, 1.0) == []  # bucket older than the forming one
    closed = agg.flush_until(T0 + 6 * MIN)
    assert [tf for tf, _ in closed] == ["1m", "5m"]
    assert agg.add_trade(T0 + 4 * MIN, 4.0, 1.0) == []  # its 5m bucket has been closed
    assert agg.late == 2
    assert agg.flush_until(T0 + 100 * MIN) == []


def test_a_repeated_lower_candle_is_not_counted_twice() -> None:
    agg = CandleAggregator(("1m", "5m"))
    row = CandleRow(T0, 1.0, 1.0, 1.0, 1.0, 2.0, 1)
    agg.add_candle("1m", row)
    agg.add_candle("1m", row)
    assert agg.late == 1
    assert agg.flush_until(T0 + 5 * MIN) == [("5m", row)]


def test_one_aggregator_refuses_a_second_feed() -> None:
    agg = CandleAggregator(("1m", "5m"))
    agg.add_trade(T0, 1.0, 1.0)
    with pytest.raises(UsageError, match="fed from trades"):
        agg.add_candle("1m", CandleRow(T0, 1.0, 1.0, 1.0, 1.0, 1.0, 1))


def test_timeframes_that_do_not_nest_are_refused() -> None:
    with pytest.raises(UsageError, match="cannot be built from 3m"):
        CandleAggregator(("3m", "5m"))
    with pytest.raises(UsageError, match="unknown timeframe '7m'"):
        timeframe_ms("7m")


def test_a_closed_candle_becomes_an_event_with_decimal_prices_from_the_float_repr() -> None:
    row = CandleRow(T0, 0.1, 0.30000000000000004, 0.1, 0.2, 1.5, 7)
    event = to_event(SeriesKey("binance", "BTC/USDT", "1m"), "1m", row)
    assert event.open == Decimal("0.1")
    assert event.high == Decimal("0.30000000000000004")
    assert event.open_time == datetime(2024, 1, 1, tzinfo=UTC)
    assert (event.exchange, event.symbol, event.timeframe, event.trades) == (
        "binance", "BTC/USDT", "1m", 7,
    )  # fmt: skip
    with pytest.raises(ValueError, match="does not hold 5m"):
        to_event(SeriesKey("binance", "BTC/USDT", "1m"), "5m", row)


def test_batch_path_sorts_unsorted_trades_stably() -> None:
    trades = [(T0 + 5, 2.0, 1.0), (T0 + 1, 1.0, 1.0), (T0 + 5, 3.0, 1.0)]
    (row,) = frame_rows(trades_to_candles(trade_frame(trades), "1m"))
    assert row == CandleRow(T0, 1.0, 3.0, 1.0, 3.0, 3.0, 3)


@settings(max_examples=60, deadline=None)
@given(trade_streams(), st.data())
def test_order_flow_from_trade_sides_is_identical_live_and_batch_at_every_timeframe(
    trades: list[tuple[int, float, float]], data: st.DataObject
) -> None:
    sides = [data.draw(st.sampled_from(["buy", "sell"])) for _ in trades]
    agg = CandleAggregator(TIMEFRAMES)
    live: dict[str, list[CandleRow]] = {tf: [] for tf in TIMEFRAMES}
    for (ms, price, amount), side in zip(trades, sides, strict=True):
        for tf, row in agg.add_trade(ms, price, amount, side):
            live[tf].append(row)
    for tf, row in agg.flush_until(2**60):
        live[tf].append(row)
    frame = trade_frame(trades).with_columns(pl.Series("side", sides))
    base = trades_to_candles(frame, "1m")
    assert live["1m"] == frame_rows(base)
    for row in live["1m"]:
        assert row.buy_volume is not None and row.sell_volume is not None
    for tf in TIMEFRAMES[1:]:
        assert live[tf] == frame_rows(resample(base, tf)), tf


def test_a_trade_without_its_side_leaves_that_candles_order_flow_unknown() -> None:
    agg = CandleAggregator(("1m",))
    agg.add_trade(T0, 10.0, 1.0, "buy")
    agg.add_trade(T0 + 1, 10.0, 2.0, None)
    ((_, first),) = agg.add_trade(T0 + MIN, 11.0, 1.5, "sell")
    assert first.volume == 3.0 and first.buy_volume is None and first.sell_volume is None
    ((_, second),) = agg.flush_until(2**60)
    assert (second.buy_volume, second.sell_volume) == (0.0, 1.5)
