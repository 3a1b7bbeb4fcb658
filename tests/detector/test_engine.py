"""Scoring, warm-up, cooldown, directions, actions, broken rules and the signal payload."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pytest

from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.engine import SignalRecord, VectorEngine, prepare_frame, to_payload
from barfinex_cli.detector.engine_incremental import IncrementalEngine, candle_values
from barfinex_cli.detector.strategy import Rule, Strategy, guard
from barfinex_cli.errors import StrategyError, UsageError

FrameOf = Callable[..., pl.DataFrame]
ALWAYS = ta.close > 0


def strategy(*rules: Rule, threshold: float = 1.0, **kw: object) -> Strategy:
    return Strategy("s", ["X/Y"], "1m", list(rules), threshold=threshold, **kw)  # type: ignore[arg-type]


def both(s: Strategy, frame: pl.DataFrame, symbol: str = "X/Y") -> list[SignalRecord]:
    """Run both engines; assert they agree; return the signals."""
    vector = VectorEngine(s).evaluate(frame, symbol=symbol)
    live = IncrementalEngine(s)
    incremental = [
        r for row in prepare_frame(frame).iter_rows(named=True) for r in live.on_candle(symbol, row)
    ]
    assert vector == incremental
    return vector


def test_no_signal_fires_before_the_warm_up(frame_of: FrameOf) -> None:
    frame = frame_of([10.0] * 9)
    s = strategy(Rule("ma", ta.sma("close", 5) > 0, direction="long"), Rule("now", ALWAYS))
    assert s.needed_warmup == 5
    assert [r.candle_index for r in both(s, frame)] == [4, 5, 6, 7, 8]
    later = strategy(Rule("ma", ta.sma("close", 5) > 0, direction="long"), warmup=7)
    assert [r.candle_index for r in both(later, frame)] == [6, 7, 8]


def test_warm_up_shorter_than_the_rules_need_is_refused() -> None:
    with pytest.raises(ValueError, match="warmup=3 is shorter than the 28 candles"):
        strategy(Rule("adx", ta.adx(14) > 25, direction="long"), warmup=3)


def test_cooldown_keeps_a_symbol_quiet_for_n_candles(frame_of: FrameOf) -> None:
    s = strategy(Rule("up", ALWAYS, direction="long"), cooldown=2)
    assert [r.candle_index for r in both(s, frame_of([10.0] * 8))] == [0, 3, 6]
    none = strategy(Rule("up", ALWAYS, direction="long"))
    assert len(both(none, frame_of([10.0] * 8))) == 8


def test_either_rules_add_to_both_sides_but_never_fire_alone(frame_of: FrameOf) -> None:
    frame = frame_of([10.0, 11.0, 12.0])
    filters = strategy(Rule("f1", ALWAYS), Rule("f2", ta.volume > 0), threshold=1.0)
    assert filters.groups == () and both(filters, frame) == []
    s = strategy(
        Rule("long", ta.close > 10.5, 1.0, "long"),
        Rule("trend", ALWAYS, 1.0),
        Rule("short", ta.close < 10.5, 0.5, "short"),
        threshold=2.0,
    )
    records = both(s, frame)
    assert [(r.candle_index, r.direction, r.score, r.rules) for r in records] == [
        (1, "long", 2.0, ("long", "trend")),
        (2, "long", 2.0, ("long", "trend")),
    ]


def test_long_and_short_at_equal_scores_fire_neither(frame_of: FrameOf) -> None:
    tie = strategy(Rule("l", ALWAYS, 1.0, "long"), Rule("s", ALWAYS, 1.0, "short"))
    assert both(tie, frame_of([10.0, 11.0])) == []
    short = strategy(Rule("l", ALWAYS, 1.0, "long"), Rule("s", ALWAYS, 1.5, "short"))
    assert {r.direction for r in both(short, frame_of([10.0, 11.0]))} == {"short"}


def test_close_reduce_and_flip_actions_are_scored_apart_and_carried(frame_of: FrameOf) -> None:
    s = strategy(
        Rule("enter", ta.close > 11.5, 1.0, "long"),
        Rule("exit", ta.close > 12.5, 1.0, "long", action="close"),
        Rule("trim", ta.close < 10.5, 1.0, "short", action="reduce"),
        Rule("turn", ta.close < 10.5, 1.0, "long", action="flip"),
    )
    records = both(s, frame_of([10.0, 12.0, 13.0]))
    assert [(r.candle_index, r.direction, r.action) for r in records] == [
        (0, "short", "reduce"),
        (0, "long", "flip"),
        (1, "long", "open"),
        (2, "long", "open"),
        (2, "long", "close"),
    ]
    payload = to_payload(records[-1], instance="s-1", exchange="binance")
    assert (payload.action, payload.direction, payload.score) == ("close", "long", 1.0)


def test_signal_payload_carries_the_attribution_of_every_rule(frame_of: FrameOf) -> None:
    s = strategy(
        Rule("rsi", ta.rsi(3) > 50, 1.0, "long"), Rule("low", ta.close < 0, 1.0), threshold=1.0
    )
    record = both(s, frame_of([10.0, 11.0, 12.0, 13.0, 14.0]))[0]
    payload = to_payload(record, instance="s-1", exchange="binance")
    assert SignalGenerated.model_validate(payload.model_dump()) == payload
    assert payload.candle_time == datetime(2024, 1, 1, 0, 3, tzinfo=UTC)
    assert payload.timeframe == "1m" and payload.threshold == 1.0
    rsi, low = payload.attribution
    assert (rsi.rule, rsi.held, rsi.weight, rsi.direction) == ("rsi", True, 1.0, "long")
    assert rsi.values == {"rsi(3)": 100.0}
    assert (low.held, low.direction, low.values) == (False, None, {"close": 13.0})


def test_infinite_and_nan_values_are_attributed_as_none_and_never_hold(
    frame_of: FrameOf,
) -> None:
    wild = ta.ema(ta.close / (ta.volume * 0), 2)  # x / 0: infinite, as polars and IEEE say
    s = strategy(Rule("now", ALWAYS, 1.0, "long"), Rule("wild", wild > 0, 5.0, "short"))
    records = both(s, frame_of([10.0, 11.0, 12.0]))
    assert [r.candle_index for r in records] == [1, 2]
    assert records[0].attribution[1].values == {"ema((close / (volume * 0)), 2)": None}
    assert records[0].attribution[1].held is False


def test_a_rule_broken_on_the_data_is_reported_and_the_rest_keeps_firing(
    frame_of: FrameOf,
) -> None:
    s = strategy(
        Rule("flow", ta.flow_imbalance() > 0, 1.0, "long"),
        Rule("price", ta.close > 10.5, 1.0, "long"),
    )
    frame = frame_of([10.0, 11.0, 12.0])  # no buy_volume / sell_volume columns
    vector = VectorEngine(s)
    records = vector.evaluate(frame)
    assert [r.candle_index for r in records] == [1, 2]
    assert list(vector.broken) == ["flow"]
    assert "no buy_volume column" in vector.broken["flow"]
    assert "built from trades" in vector.broken["flow"]
    live = IncrementalEngine(s)
    incremental = [r for row in frame.iter_rows(named=True) for r in live.on_candle("X/Y", row)]
    assert incremental == records
    assert list(live.broken) == ["flow"] and "no buy_volume column" in live.broken["flow"]
    assert all(not r.held[0] for r in records)


def test_a_raw_expression_strategy_can_be_scanned_but_not_run_live(frame_of: FrameOf) -> None:
    s = strategy(
        Rule(
            "peek",
            ta.raw(pl.col("close").shift(-1) > pl.col("close"), "next_up", kind="bool"),
            1.0,
            "long",
        )
    )
    assert [r.candle_index for r in VectorEngine(s).evaluate(frame_of([1.0, 2.0, 1.0]))] == [0]
    assert s.vector_only() == ["peek"]
    with pytest.raises(StrategyError, match=r"rule peek uses ta\.raw.*not run live"):
        IncrementalEngine(s)


def test_a_redelivered_candle_is_ignored(frame_of: FrameOf) -> None:
    live = IncrementalEngine(strategy(Rule("up", ALWAYS, 1.0, "long")))
    rows = list(frame_of([10.0, 11.0]).iter_rows(named=True))
    assert len(live.on_candle("X/Y", rows[0])) == 1
    assert live.on_candle("X/Y", rows[0]) == []
    assert live.on_candle("X/Y", rows[1])[0].candle_index == 1
    assert live.evaluations == 2 and live.firing_rates() == {"up": 1.0}


def test_non_finite_candles_are_refused_by_both_engines(frame_of: FrameOf) -> None:
    frame = frame_of([10.0, 11.0]).with_columns(pl.Series("close", [10.0, float("nan")]))
    s = strategy(Rule("up", ALWAYS, 1.0, "long"))
    with pytest.raises(UsageError, match="close is nan"):
        VectorEngine(s).evaluate(frame)
    live = IncrementalEngine(s)
    with pytest.raises(UsageError, match="close is nan"):
        for row in frame.iter_rows(named=True):
            live.on_candle("X/Y", row)


def test_each_symbol_has_its_own_series_and_cooldown(frame_of: FrameOf) -> None:
    s = strategy(Rule("up", ta.close > ta.close.shift(1), 1.0, "long"), cooldown=1)
    a = frame_of([1.0, 2.0, 3.0, 4.0]).with_columns(pl.lit("A/Q").alias("symbol"))
    b = frame_of([5.0, 4.0, 5.0, 6.0]).with_columns(pl.lit("B/Q").alias("symbol"))
    records = VectorEngine(s).evaluate(pl.concat([b, a]))
    assert [(r.symbol, r.candle_index) for r in records] == [("A/Q", 1), ("B/Q", 2), ("A/Q", 3)]
    live = IncrementalEngine(s)
    rows = sorted(
        [*a.iter_rows(named=True), *b.iter_rows(named=True)],
        key=lambda r: (r["open_ms"], r["symbol"]),
    )
    assert [x for r in rows for x in live.on_candle(r["symbol"], r)] == records


def test_a_candle_event_becomes_an_engine_row() -> None:
    event = CandleClosed(
        exchange="e",
        symbol="X/Y",
        timeframe="1m",
        open_time=datetime(2024, 1, 1, 0, 1, tzinfo=UTC),
        open=Decimal("1.5"),
        high=Decimal(2),
        low=Decimal(1),
        close=Decimal("1.75"),
        volume=Decimal("3.25"),
        trades=7,
    )
    assert candle_values(event) == {
        "open_ms": 1_704_067_260_000,
        "open": 1.5,
        "high": 2.0,
        "low": 1.0,
        "close": 1.75,
        "volume": 3.25,
        "trades": 7.0,
        "buy_volume": None,
        "sell_volume": None,
    }
    flow = event.model_copy(update={"buy_volume": Decimal("2"), "sell_volume": Decimal("1.25")})
    assert candle_values(flow)["buy_volume"] == 2.0
    assert candle_values(flow)["sell_volume"] == 1.25


def test_the_guard_turns_any_failure_into_a_strategy_error() -> None:
    failing = pytest.raises(StrategyError, match="strategy s: loading rules: boom")
    with failing, guard("s", "loading rules"):
        raise RuntimeError("boom")


def test_strategy_definitions_are_validated_with_the_fix() -> None:
    with pytest.raises(ValueError, match="repeated: a"):
        strategy(Rule("a", ALWAYS), Rule("a", ALWAYS))
    with pytest.raises(ValueError, match="timeframe '7m'"):
        Strategy("s", ["X/Y"], "7m", [Rule("a", ALWAYS)], threshold=1.0)
    with pytest.raises(TypeError, match="is a number; compare it"):
        Rule("a", ta.rsi(14))
    with pytest.raises(ValueError, match="direction must be long, short or either"):
        Rule("a", ALWAYS, direction="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold must be a number > 0"):
        strategy(Rule("a", ALWAYS), threshold=0)
