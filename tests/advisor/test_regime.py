"""Regime detection: the documented thresholds, their precedence and the confidence scale."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from barfinex_cli.advisor.features import WINDOW, features_at
from barfinex_cli.advisor.regime import RegimeConfig, detect_regime


def reading(er: float, rank: float, ret: float = 0.01) -> dict[str, float]:
    return {"efficiency_ratio_20": er, "atr_pct_rank_100": rank, "ret_20": ret}


@pytest.mark.parametrize(
    ("er", "rank", "regime"),
    [
        (0.5, 0.5, "trend"),
        (0.3, 0.79, "trend"),  # on the trend threshold: trend
        (0.29, 0.5, "range"),
        (0.1, 0.8, "high_vol"),  # on the volatility threshold: high_vol
        (0.9, 0.95, "high_vol"),  # a burst wins over a trend
    ],
)
def test_regime_follows_the_documented_thresholds(er: float, rank: float, regime: str) -> None:
    assert detect_regime(reading(er, rank)).regime == regime


def test_thresholds_are_configurable() -> None:
    strict = RegimeConfig(trend_efficiency=0.6, high_vol_rank=0.95)
    assert detect_regime(reading(0.5, 0.9), strict).regime == "range"
    assert detect_regime(reading(0.7, 0.9), strict).regime == "trend"


def test_confidence_is_half_on_a_threshold_and_full_at_the_end_of_the_scale() -> None:
    assert detect_regime(reading(0.3, 0.5)).confidence == pytest.approx(0.5)
    assert detect_regime(reading(1.0, 0.5)).confidence == pytest.approx(1.0)
    assert detect_regime(reading(0.0, 1.0)).confidence == pytest.approx(1.0)
    assert detect_regime(reading(0.0, 0.0)).confidence == pytest.approx(1.0)
    assert 0.5 < detect_regime(reading(0.2, 0.6)).confidence < 1.0


def test_the_reading_carries_its_measures_and_the_direction() -> None:
    r = detect_regime(reading(0.4, 0.3, ret=-0.02))
    assert (r.efficiency_ratio, r.atr_pct_rank, r.direction) == (0.4, 0.3, "down")
    assert detect_regime(reading(0.4, 0.3, ret=0.0)).direction == "flat"


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_a_threshold_outside_zero_and_one_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        RegimeConfig(trend_efficiency=bad)


def series(close: np.ndarray, spread: np.ndarray) -> list[dict[str, float]]:
    n = close.size
    return pl.DataFrame({
        "open_ms": np.arange(n, dtype=np.int64), "open": close, "high": close + spread,
        "low": close - spread, "close": close, "volume": np.ones(n),
    }).rows(named=True)  # fmt: skip


def test_built_series_read_as_trend_range_and_volatility_burst() -> None:
    n = WINDOW + 20
    calm = np.full(n, 0.05)
    rise = series(np.linspace(100, 110, n) + np.tile([0.0, 0.02], n // 2), calm)
    zigzag = series(100 + np.tile([0.0, 0.3], n // 2), calm)
    burst = series(100 + np.tile([0.0, 0.3], n // 2), np.r_[calm[:-3], [2.0, 2.5, 3.0]])
    assert detect_regime(features_at(rise)).regime == "trend"
    assert detect_regime(features_at(rise)).direction == "up"
    assert detect_regime(features_at(zigzag)).regime == "range"
    assert detect_regime(features_at(burst)).regime == "high_vol"
