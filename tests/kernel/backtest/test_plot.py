"""Terminal charts of a backtest: a long curve keeps its extremes, axes carry dates."""

from __future__ import annotations

import re

import numpy as np

from barfinex_cli.kernel.backtest.plot import charts, drawdown_pct, envelope
from barfinex_cli.kernel.backtest.result import EquityCurve

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_bucketing_keeps_each_buckets_lowest_and_highest_value() -> None:
    values = np.ones(1_000)
    values[503] = 0.2  # one sharp dip must survive the bucketing
    values[10] = 3.0
    low, high, starts = envelope(values, 100)
    assert len(low) == len(high) == len(starts) == 100
    assert low.min() == 0.2 and high.max() == 3.0
    short = np.arange(5.0)
    low, high, starts = envelope(short, 100)
    assert low.tolist() == high.tolist() == short.tolist() and starts.tolist() == [0, 1, 2, 3, 4]


def test_drawdown_counts_the_initial_equity_as_the_first_peak() -> None:
    draw = drawdown_pct(np.array([90.0, 120.0, 60.0, 130.0]), 100.0)
    np.testing.assert_allclose(draw, [-10.0, 0.0, -50.0, 0.0])


def test_charts_draw_equity_and_drawdown_with_date_labels_in_the_width() -> None:
    n = 20_000
    times = 1_704_067_200_000 + np.arange(n, dtype=np.int64) * 60_000
    equity = 10_000 * np.cumprod(1 + np.random.default_rng(2).normal(0, 0.001, n))
    text = ANSI.sub("", charts(EquityCurve(times, equity), 10_000.0, width=80, height=12))
    lines = text.splitlines()
    assert "equity" in lines[0] and any("drawdown %" in line for line in lines)
    assert all(len(line) <= 80 for line in lines)
    assert "2024-01-01" in text and "2024-01-14" in text  # 13.9 days: daily labels
    assert any("\u2800" < ch <= "\u28ff" for ch in text)  # braille dots
    assert f"{equity.max():.1f}"[:4] in text  # the y axis reaches the top of the curve
