"""Look-ahead detection: a rule reading a later candle is named with the candle; examples pass."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.detector.lookahead import check_lookahead, same, sample_points
from barfinex_cli.detector.strategy import Rule, Strategy

FrameOf = Callable[..., pl.DataFrame]
CLOSES = [100.0 + (i * 37 % 17) - (i % 5) * 1.5 + i * 0.2 for i in range(120)]


def test_a_rule_reading_the_next_candle_is_named_with_the_candle(frame_of: FrameOf) -> None:
    peek = ta.raw(pl.col("close").shift(-1), "next_close")
    strategy = Strategy(
        "biased",
        ["X/Y"],
        "1m",
        [
            Rule("honest", ta.rsi(5) > 50, 1.0, "long"),
            Rule("peeks", ta.close < peek, 1.0, "long"),
            Rule(
                "normalised",
                ta.raw((pl.col("close") - pl.col("close").mean()) > 0, "above_mean", kind="bool"),
                1.0,
                "short",
            ),
        ],
        threshold=1.0,
    )
    report = check_lookahead(strategy, frame_of(CLOSES), samples=10)
    assert not report.clean
    found = {b.rule: b for b in report.biased}
    assert sorted(found) == ["normalised", "peeks"]  # "honest" is clean
    assert (found["peeks"].node, found["peeks"].index) == ("next_close", 0)
    assert found["normalised"].node == "above_mean"
    assert found["normalised"].index in report.checked
    first = found["peeks"]
    assert first.full == CLOSES[1] and first.cut is None
    assert first.open_ms == frame_of(CLOSES)["open_ms"][0]


@pytest.mark.parametrize("name", ["trend_ema_adx", "mean_reversion_rsi_bb", "breakout_volume"])
def test_the_example_strategies_do_not_look_ahead(name: str, frame_of: FrameOf) -> None:
    path = Path(__file__).resolve().parents[2] / "strategies" / f"{name}.py"
    report = check_lookahead(load_strategy(path), frame_of(CLOSES), samples=25)
    assert report.clean
    assert len(report.checked) == 25 and report.candles == 120


def test_sample_points_spread_over_all_but_the_last_candle() -> None:
    assert sample_points(1, 5) == []
    assert sample_points(2, 5) == [0]
    assert sample_points(11, 3) == [0, 4, 9]
    assert sample_points(100, 200) == list(range(99))


def test_same_treats_nan_as_equal_and_none_as_distinct() -> None:
    nan = float("nan")
    assert same(nan, nan) and same(None, None) and same(1.5, 1.5)
    assert not same(None, 0.0) and not same(False, None) and not same(1.0, nan)
