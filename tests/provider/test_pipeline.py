"""The provider's pure pipeline refuses candles and trades dated too far ahead."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from barfinex_cli.contracts.market import CandleClosed, TradeExecuted
from barfinex_cli.contracts.times import from_ms, to_ms
from barfinex_cli.provider.pipeline import KeepCandle, Pipeline, Publish, Refuse

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MINUTE = 60_000
YEAR_2100 = to_ms(datetime(2100, 1, 1, tzinfo=UTC))


def _candle(open_ms: int, symbol: str = "BTC/USDT") -> CandleClosed:
    price = Decimal("100")
    return CandleClosed(
        exchange="synthetic", symbol=symbol, timeframe="1m", open_time=from_ms(open_ms),
        open=price, high=price, low=price, close=price, volume=Decimal("1"),
    )  # fmt: skip


def _trade(time_ms: int) -> TradeExecuted:
    return TradeExecuted(
        exchange="synthetic", symbol="BTC/USDT", trade_id=str(time_ms), price=Decimal("100"),
        amount=Decimal("1"), side="buy", time=from_ms(time_ms),
    )  # fmt: skip


def test_a_replayed_candle_dated_2100_is_refused_and_the_series_goes_on() -> None:
    pipeline = Pipeline(["1m", "5m"])
    for i in range(3):
        pipeline.feed(_candle(T0 + i * MINUTE))
    clock = pipeline.clock_ms

    step = pipeline.feed(_candle(YEAR_2100))
    assert len(step.actions) == 1 and isinstance(step.actions[0], Refuse)
    refusal = step.actions[0]
    assert refusal.open_ms == YEAR_2100 and refusal.key.timeframe == "1m"
    assert "past the last close of its series" in refusal.reason
    assert pipeline.clock_ms == clock and pipeline.refused == 1

    after = pipeline.feed(_candle(T0 + 3 * MINUTE))
    assert not any(isinstance(a, Refuse) for a in after.actions)
    assert any(isinstance(a, KeepCandle) for a in after.actions)
    assert any(isinstance(a, Publish) for a in after.actions)
    assert pipeline.clock_ms == T0 + 4 * MINUTE


def test_a_replay_tolerates_a_weekend_hole_but_not_a_year() -> None:
    pipeline = Pipeline(["1m"])
    pipeline.feed(_candle(T0))
    weekend = pipeline.feed(_candle(T0 + 3 * 86_400_000))
    assert not any(isinstance(a, Refuse) for a in weekend.actions)
    year = pipeline.feed(_candle(T0 + 3 * 86_400_000 + 365 * 86_400_000))
    assert isinstance(year.actions[0], Refuse)


def test_the_first_candle_of_a_series_is_judged_against_the_data_clock() -> None:
    pipeline = Pipeline(["1m"])
    pipeline.feed(_candle(T0, "BTC/USDT"))
    step = pipeline.feed(_candle(YEAR_2100, "ETH/USDT"))
    assert isinstance(step.actions[0], Refuse)
    assert step.actions[0].key.symbol == "ETH/USDT"


def test_live_candles_are_judged_against_the_wall_clock() -> None:
    pipeline = Pipeline(["1m"])
    now = T0 + 10 * MINUTE
    on_time = pipeline.feed(_candle(now - MINUTE), now_ms=now)
    assert not any(isinstance(a, Refuse) for a in on_time.actions)
    skewed = pipeline.feed(_candle(now + MINUTE), now_ms=now)  # 2 minutes ahead: clock skew
    assert not any(isinstance(a, Refuse) for a in skewed.actions)
    ahead = pipeline.feed(_candle(now + 5 * MINUTE), now_ms=now)
    assert isinstance(ahead.actions[0], Refuse)
    assert "past the wall clock" in ahead.actions[0].reason


def test_max_candle_ahead_s_sets_the_bound() -> None:
    pipeline = Pipeline(["1m"], max_ahead_s=120)
    pipeline.feed(_candle(T0))
    assert not any(isinstance(a, Refuse) for a in pipeline.feed(_candle(T0 + MINUTE)).actions)
    assert isinstance(pipeline.feed(_candle(T0 + 10 * MINUTE)).actions[0], Refuse)


def test_a_trade_dated_2100_is_refused_too() -> None:
    pipeline = Pipeline(["1m"], candle_symbols=frozenset())
    pipeline.feed(_trade(T0))
    step = pipeline.feed(_trade(YEAR_2100))
    assert isinstance(step.actions[0], Refuse) and step.actions[0].key.timeframe == "trade"
    assert pipeline.clock_ms == T0
