"""The core property: live (one candle at a time) and vectorised evaluation agree exactly.

Over random candle series (flat stretches, zero volumes, day boundaries, tiny and huge prices),
every node of every strategy has the same value at every candle in both engines (compared with
==, NaN equal to NaN), and the signals are equal records: same candles, scores, attributions.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.engine import VectorEngine, prepare_frame
from barfinex_cli.detector.engine_incremental import IncrementalEngine
from barfinex_cli.detector.indicators_core import Column, Const
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.detector.lookahead import same
from barfinex_cli.detector.strategy import Rule, Strategy

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "strategies").glob("*.py"))
T0 = 1_704_067_200_000
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def candle_series(draw: st.DrawFn, max_size: int = 70) -> pl.DataFrame:
    """Draw a plausible candle series with the awkward cases real data has."""
    n = draw(st.integers(1, max_size))
    price = draw(st.sampled_from([0.0004, 1.0, 97.3, 31_000.0, 2.5e7]))
    move = st.one_of(st.just(0.0), st.floats(-0.08, 0.08, allow_nan=False))
    wick = st.one_of(st.just(0.0), st.floats(0.0, 0.03, allow_nan=False))
    volume = st.one_of(st.just(0.0), st.floats(0.0, 5_000.0, allow_nan=False))
    step = draw(st.sampled_from([60_000, 3_600_000, 4 * 3_600_000]))
    rows = []
    close = price
    for i in range(n):
        open_ = close
        close = max(open_ * (1.0 + draw(move)), 1e-9)
        high = max(open_, close) * (1.0 + draw(wick))
        low = min(open_, close) * (1.0 - draw(wick))
        vol = draw(volume)
        buy = vol * draw(st.floats(0.0, 1.0))
        rows.append((T0 + i * step, open_, high, low, close, vol, buy, vol - buy))
    names = ["open_ms", "open", "high", "low", "close", "volume", "buy_volume", "sell_volume"]
    return pl.DataFrame(rows, schema=names, orient="row")


def kitchen_sink() -> Strategy:
    """Every indicator and operator, with short periods so short series define them."""
    m, b = ta.macd(3, 5, 2), ta.bollinger(4, 1.5)
    rules = [
        Rule("ma", ta.crosses_above(ta.ema("close", 3), ta.sma("close", 5)), 1.0, "long"),
        Rule("ma_down", ta.crosses_below(ta.rma("close", 3), ta.sma("close", 4)), 1.0, "short"),
        Rule("rsi", (ta.rsi(3) > 60) | (ta.rsi(4, "open") < 40), 1.0, "long"),
        Rule("macd", (m.hist > 0) & (m.line >= m.signal), 0.5, "long"),
        Rule("bands", (ta.close < b.lower) | (ta.close > b.upper) | (ta.close == b.mid), 0.5),
        Rule("dmi", (ta.plus_di(3) > ta.minus_di(3)) & (ta.adx(3) > 20), 1.0, "long", "reduce"),
        Rule("range", ta.true_range() > ta.atr(3), 0.5, "short", "flip"),
        Rule("vwap", (ta.close > ta.vwap()) & ~(ta.close < ta.vwap(3)), 0.5, "long"),
        Rule("zs", (ta.zscore("close", 4) < -1) | (ta.volume_zscore(3) != 0), 0.5, "short"),
        Rule("ext", ta.close >= ta.highest("high", 4).shift(1), 1.0, "long", "close"),
        Rule("ext2", ta.low <= ta.lowest("low", 3), 1.0, "short", "close"),
        Rule("flow", (ta.flow_imbalance() > 0.2) & (ta.flow_delta() > 0), 1.0, "long"),
        Rule("ratio", ta.close / (ta.volume - ta.volume) > 0, 0.5, "either"),
        Rule("arith", (100 / ta.volume) + abs(-ta.stdev("close", 3)) * 2 - 1 > 0, 0.5, "long"),
        Rule("shift", ta.shift(ta.close, 2) < ta.close.shift(1), 0.5, "short"),
    ]
    return Strategy("sink", ["X/Y"], "1m", rules, threshold=1.5, cooldown=2)


def assert_nodes_agree(strategy: Strategy, frame: pl.DataFrame) -> None:
    """Assert every node has the same value at every candle in both engines."""
    prepared = prepare_frame(frame)
    vector = VectorEngine(strategy)
    nodes, failed = vector.node_frame(prepared)
    assert failed == {}
    live = IncrementalEngine(strategy)
    plan = vector.plan
    columns = {
        s: nodes[f"__n{s}"].to_list()
        for s, node in enumerate(plan.nodes)
        if not isinstance(node, Column | Const)
    }
    for t, row in enumerate(prepared.iter_rows(named=True)):
        live.on_candle("X/Y", row)
        values = live.series["X/Y"].values
        for slot, column in columns.items():
            expected, got = column[t], values[slot]
            assert same(expected, got), f"{plan.nodes[slot]} at candle {t}: {expected!r} != {got!r}"


def signals_both_ways(strategy: Strategy, frame: pl.DataFrame) -> tuple[list[object], list[object]]:
    vector = VectorEngine(strategy).evaluate(frame, symbol="X/Y")
    live = IncrementalEngine(strategy)
    incremental = []
    for row in prepare_frame(frame).iter_rows(named=True):
        incremental += live.on_candle("X/Y", row)
    return list(vector), incremental


@SETTINGS
@given(candle_series())
def test_every_node_of_every_indicator_agrees_bit_for_bit(frame: pl.DataFrame) -> None:
    assert_nodes_agree(kitchen_sink(), frame)


@SETTINGS
@given(candle_series())
def test_dense_strategy_fires_the_same_signals_live_and_vectorised(frame: pl.DataFrame) -> None:
    vector, incremental = signals_both_ways(kitchen_sink(), frame)
    assert vector == incremental


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@SETTINGS
@given(frame=candle_series(max_size=90))
def test_example_strategies_agree_live_and_vectorised(path: Path, frame: pl.DataFrame) -> None:
    strategy = load_strategy(path)
    assert_nodes_agree(strategy, frame.drop("buy_volume", "sell_volume"))
    vector, incremental = signals_both_ways(strategy, frame)
    assert vector == incremental


def test_example_strategies_agree_on_a_long_series_with_many_signals() -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    n = 6_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.r_[close[0], close[:-1]]
    frame = pl.DataFrame({
        "open_ms": T0 + np.arange(n, dtype=np.int64) * 60_000,
        "open": open_,
        "high": np.maximum(open_, close) * (1 + rng.random(n) * 0.003),
        "low": np.minimum(open_, close) * (1 - rng.random(n) * 0.003),
        "close": close,
        "volume": rng.gamma(1.5, 4.0, n),
    })  # fmt: skip
    total = 0
    for path in EXAMPLES:
        vector, incremental = signals_both_ways(load_strategy(path), frame)
        assert vector == incremental
        assert [r.attribution for r in vector] == [r.attribution for r in incremental]  # type: ignore[attr-defined]
        total += len(vector)
    assert total > 50  # the comparison covered real signals, not two empty lists
