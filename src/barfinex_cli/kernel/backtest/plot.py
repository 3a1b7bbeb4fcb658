"""The equity curve and its drawdown as terminal charts, for `bfx backtest`.

Drawn with plotext in braille dots: at 90 columns that is 180 dots across and 4 per text row,
with a y axis in money and an x axis in dates, which reads better than a one-line sparkline
(which has eight levels and no axes) and needs no terminal graphics protocol. A million-candle
curve is first bucketed to two dots per column, keeping each bucket's lowest and highest value,
so a sharp fall is never smoothed away. Output is plain text with ANSI colour codes; the caller
decides where it goes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from barfinex_cli.kernel.backtest.result import EquityCurve


def envelope(
    values: npt.NDArray[np.float64], buckets: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Return per bucket of `values` its lowest and highest value and its first index."""
    n = len(values)
    if n <= buckets:
        index = np.arange(n, dtype=np.int64)
        return values.copy(), values.copy(), index
    starts = np.linspace(0, n, buckets + 1).astype(np.int64)[:-1]
    return np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts), starts


def drawdown_pct(equity: npt.NDArray[np.float64], initial: float) -> npt.NDArray[np.float64]:
    """Return the fall below the running peak at each point, in percent (0 or negative)."""
    peak = np.maximum.accumulate(np.maximum(equity, initial))
    result: npt.NDArray[np.float64] = (equity / peak - 1.0) * 100.0
    return result


def charts(curve: EquityCurve, initial: float, *, width: int = 100, height: int = 14) -> str:
    """Return the equity chart and, under it, the drawdown chart, as one block of text."""
    if len(curve) == 0:
        return ""
    equity = curve.equity
    draw = drawdown_pct(equity, initial)
    return "\n".join(
        (
            _chart(curve.time_ms, equity, "equity", width, height, "green"),
            _chart(curve.time_ms, draw, "drawdown %", width, max(height // 2, 6), "red"),
        )
    )


def _chart(
    times: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    title: str,
    width: int,
    height: int,
    color: str,
) -> str:
    import plotext as plt  # type: ignore[import-untyped]  # ships no type information

    buckets = max(2 * (width - 12), 2)  # braille: two dots per column, minus the y axis
    low, high, starts = envelope(values, buckets)
    xs = np.repeat(np.arange(len(starts)), 2).tolist()
    ys = np.column_stack((low, high)).ravel().tolist()
    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear")
    plt.plot(xs, ys, marker="braille", color=color)
    plt.title(title)
    ticks = np.unique(np.linspace(0, len(starts) - 1, 5).astype(np.int64))
    span = int(times[-1] - times[0]) if len(times) > 1 else 0
    fmt = "%Y-%m-%d" if span >= 3 * 86_400_000 else "%m-%d %H:%M"
    labels = [
        datetime.fromtimestamp(int(times[starts[t]]) / 1000, UTC).strftime(fmt) for t in ticks
    ]
    plt.xticks(ticks.tolist(), labels)
    text: str = plt.build()
    plt.clear_figure()
    return text.rstrip("\n")
