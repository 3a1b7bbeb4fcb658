"""The headline figures of a backtest, computed the same way for every kind of run.

Both backtest paths (the vectorised detector-only pass and the event-driven pipeline) and every
`bfx optimize` trial score themselves here, so a Sharpe ratio means one thing everywhere.

Conventions (docs/backtest.md repeats them):
- Returns are simple per-candle returns of the equity curve, the first one measured from the
  initial equity, so a curve of n points gives n returns.
- Annualisation counts calendar time: crypto trades around the clock, so a year is 365.25 days
  and holds `365.25 days / timeframe` candles (525,960 one-minute candles).
- Sharpe is mean / sample standard deviation (ddof=1) of the per-candle returns times the square
  root of the candles per year, with a risk-free rate of 0. Sortino is the mean over the
  downside deviation, sqrt(mean(min(r, 0)^2)) over all returns (empyrical's and vectorbt's
  convention), times the same root. A ratio with no spread (flat equity) is 0; a Sortino with
  no losing candle but a positive mean is `inf`.
- CAGR compounds the total return over the curve's span: the candles it covers, each one
  timeframe long.
- Max drawdown is the deepest fall of equity below its running peak, the initial equity counting
  as the first peak, in percent of that peak.
- Win rate, profit factor and the trade count are over round trips (`Trade`), net of fees.
  Profit factor is gross profit / gross loss: `inf` with profit and no loss, 0 with no profit.
- Exposure is the share of the curve's span during which a position was open: the union of the
  trades' [entry, exit) intervals over the candles' total time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from barfinex_cli.kernel.backtest.result import EquityPoint, Metrics, Trade
from barfinex_cli.market.candles import timeframe_ms

YEAR_MS = 365.25 * 86_400_000


def periods_per_year(timeframe: str) -> float:
    """Return how many candles of `timeframe` a calendar year holds (365.25 days, 24/7)."""
    return YEAR_MS / timeframe_ms(timeframe)


def compute_metrics(
    equity: Sequence[EquityPoint],
    trades: Sequence[Trade],
    fees: float,
    timeframe: str,
    *,
    initial_equity: float | None = None,
) -> Metrics:
    """Return the headline metrics of an equity curve and its round trips.

    Args:
        equity: Equity at each candle's close, oldest first.
        trades: The run's round trips.
        fees: Fees paid over the run, in quote currency.
        timeframe: The candles' timeframe (annualises Sharpe, Sortino and CAGR).
        initial_equity: Equity before the first candle (default: the first point's).
    """
    values = np.fromiter((p.equity for p in equity), dtype=np.float64, count=len(equity))
    start = float(values[0]) if initial_equity is None and len(values) else initial_equity
    return metrics_of_arrays(
        values,
        np.fromiter((t.pnl for t in trades), dtype=np.float64, count=len(trades)),
        np.fromiter((t.entry_ms for t in trades), dtype=np.int64, count=len(trades)),
        np.fromiter((t.exit_ms for t in trades), dtype=np.int64, count=len(trades)),
        fees,
        timeframe,
        initial_equity=float(start or 0.0),
    )


def metrics_of_arrays(
    values: npt.NDArray[np.float64],
    pnl: npt.NDArray[np.float64],
    entry_ms: npt.NDArray[np.int64],
    exit_ms: npt.NDArray[np.int64],
    fees: float,
    timeframe: str,
    *,
    initial_equity: float,
) -> Metrics:
    """Return the metrics of an equity curve and trades given as columns (see `compute_metrics`).

    Args:
        values: Equity at each candle's close, oldest first.
        pnl: Each round trip's net P&L.
        entry_ms: Each round trip's entry time.
        exit_ms: Each round trip's exit time.
        fees: Fees paid over the run.
        timeframe: The candles' timeframe.
        initial_equity: Equity before the first candle.
    """
    n, count = len(values), len(pnl)
    span_ms = n * timeframe_ms(timeframe)
    if n == 0 or initial_equity <= 0:
        return Metrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, count, float(fees))
    final = float(values[-1])
    total = final / initial_equity - 1.0
    years = span_ms / YEAR_MS
    if final <= 0:
        cagr = -1.0
    elif total:
        cagr = math.exp(math.log(final / initial_equity) / years) - 1.0
    else:
        cagr = 0.0
    returns = np.empty(n)
    returns[0] = values[0] / initial_equity
    np.divide(values[1:], values[:-1], out=returns[1:])
    if float(values[:-1].min(initial=initial_equity)) <= 0:  # a bust: no return off nothing
        with np.errstate(divide="ignore", invalid="ignore"):
            returns[1:] = np.where(values[:-1] > 0, values[1:] / values[:-1], 1.0)
    returns -= 1.0
    root = math.sqrt(periods_per_year(timeframe))
    mean = float(returns.mean())
    std = float(returns.std(ddof=1)) if n > 1 else 0.0
    sharpe = mean / std * root if std > 0 else 0.0
    losses = np.minimum(returns, 0.0, out=returns)  # the returns are not needed after this
    downside = math.sqrt(float(np.dot(losses, losses)) / n)
    no_downside = math.inf if mean > 0 else 0.0
    sortino = mean / downside * root if downside > 0 else no_downside
    peak = np.maximum.accumulate(values)
    np.maximum(peak, initial_equity, out=peak)
    drawdown = 1.0 - float(np.min(np.divide(values, peak, out=peak)))
    gain = float(pnl[pnl > 0].sum())
    loss = -float(pnl[pnl < 0].sum())
    no_loss = math.inf if gain > 0 else 0.0
    factor = gain / loss if loss > 0 else no_loss
    return Metrics(
        total_return_pct=total * 100.0,
        cagr_pct=cagr * 100.0,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown_pct=max(drawdown, 0.0) * 100.0,
        win_rate_pct=float(np.count_nonzero(pnl > 0)) / count * 100.0 if count else 0.0,
        profit_factor=factor,
        exposure_pct=exposure(entry_ms, exit_ms, span_ms) * 100.0,
        trades=count,
        fees=float(fees),
    )


def exposure(
    entry_ms: npt.NDArray[np.int64], exit_ms: npt.NDArray[np.int64], span_ms: int
) -> float:
    """Return the share of `span_ms` covered by the union of the [entry, exit) intervals."""
    if len(entry_ms) == 0 or span_ms <= 0:
        return 0.0
    order = np.argsort(entry_ms, kind="stable")
    start, stop = entry_ms[order], exit_ms[order]
    reach = np.maximum.accumulate(stop)  # the furthest any earlier interval reaches
    before = np.empty_like(reach)
    before[0] = start[0]
    before[1:] = reach[:-1]
    covered = np.maximum(stop - np.maximum(start, before), 0).sum()
    return min(float(covered) / span_ms, 1.0)
