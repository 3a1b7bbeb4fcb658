"""Backtest metrics against hand-computed values, and numpy's own formulas on random curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from barfinex_cli.kernel.backtest.metrics import compute_metrics, exposure, periods_per_year
from barfinex_cli.kernel.backtest.result import EquityPoint, Trade

H = 3_600_000


def curve(values: list[float], step: int = H) -> list[EquityPoint]:
    return [EquityPoint(i * step, v) for i, v in enumerate(values)]


def trade(pnl: float, entry: int = 0, exit_: int = H) -> Trade:
    return Trade("BTC/USDT", "long", entry, exit_, 1.0, 100.0, 100.0 + pnl, 0.0, pnl, pnl, "close")


def test_hand_computed_figures_of_a_short_hourly_curve() -> None:
    # 100 -> 110 -> 99 -> 108.9: returns +10 %, -10 %, +10 % from an initial 100
    m = compute_metrics(
        curve([110.0, 99.0, 108.9]),
        [trade(10.0, 0, H), trade(-11.0, H, 2 * H), trade(9.9, 2 * H, 3 * H)],
        fees=1.5,
        timeframe="1h",
        initial_equity=100.0,
    )
    assert m.total_return_pct == pytest.approx(8.9)
    # by hand: mean 1/30, sample std over ddof=1, downside sqrt(0.01 / 3), 8766 hours a year
    r = [0.1, -0.1, 0.1]
    mean = sum(r) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / 2)
    assert m.sharpe == pytest.approx(mean / std * math.sqrt(8766))
    assert m.sortino == pytest.approx(mean / math.sqrt(0.01 / 3) * math.sqrt(8766))
    assert m.max_drawdown_pct == pytest.approx(10.0)
    assert m.win_rate_pct == pytest.approx(200 / 3)
    assert m.profit_factor == pytest.approx(19.9 / 11.0)
    assert m.exposure_pct == pytest.approx(100.0)
    assert m.trades == 3 and m.fees == 1.5
    years = 3 / 8766
    assert m.cagr_pct == pytest.approx((1.089 ** (1 / years) - 1) * 100)


def test_a_year_of_candles_makes_cagr_the_total_return() -> None:
    n = 365 * 4 + 1  # 365.25 days of 6h candles
    values = list(np.linspace(101.0, 120.0, n))
    m = compute_metrics(curve(values, 6 * H), [], 0.0, "6h", initial_equity=100.0)
    assert m.cagr_pct == pytest.approx(m.total_return_pct)
    assert periods_per_year("6h") == pytest.approx(1461.0)


def test_sharpe_and_sortino_equal_numpy_formulas_on_a_random_curve() -> None:
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0002, 0.01, 5_000)
    values = 1_000 * np.cumprod(1 + returns)
    m = compute_metrics(curve(list(values), 60_000), [], 0.0, "1m", initial_equity=1_000.0)
    root = math.sqrt(365.25 * 1440)
    assert m.sharpe == pytest.approx(returns.mean() / returns.std(ddof=1) * root, rel=1e-9)
    downside = np.sqrt(np.mean(np.minimum(returns, 0) ** 2))
    assert m.sortino == pytest.approx(returns.mean() / downside * root, rel=1e-9)
    peak = np.maximum.accumulate(np.r_[1_000.0, values])
    assert m.max_drawdown_pct == pytest.approx(np.max(1 - np.r_[1_000.0, values] / peak) * 100)


def test_no_trade_and_a_flat_curve_give_zeros_not_nan() -> None:
    m = compute_metrics(curve([100.0] * 10), [], 0.0, "1h", initial_equity=100.0)
    assert (m.sharpe, m.sortino, m.max_drawdown_pct, m.win_rate_pct) == (0.0, 0.0, 0.0, 0.0)
    assert (m.profit_factor, m.exposure_pct, m.trades, m.cagr_pct) == (0.0, 0.0, 0, 0.0)


def test_only_winners_make_the_profit_factor_infinite() -> None:
    m = compute_metrics(curve([101.0, 102.0]), [trade(1.0), trade(1.0)], 0.0, "1h",
                        initial_equity=100.0)  # fmt: skip
    assert m.profit_factor == math.inf and m.win_rate_pct == 100.0
    assert m.sortino == math.inf  # no losing candle


def test_exposure_counts_overlapping_trades_once() -> None:
    entries = np.array([0, 5, 20], dtype=np.int64)
    exits = np.array([10, 15, 30], dtype=np.int64)
    assert exposure(entries, exits, 100) == pytest.approx(0.25)  # [0, 15) + [20, 30)


def test_a_wiped_out_account_reports_minus_100_percent() -> None:
    m = compute_metrics(curve([50.0, 0.0]), [trade(-100.0)], 0.0, "1h", initial_equity=100.0)
    assert m.total_return_pct == -100.0 and m.cagr_pct == -100.0
    assert m.max_drawdown_pct == 100.0
