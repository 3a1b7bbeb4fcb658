"""Detector figures in one run, as a table against a baseline run in this process.

- Vectorised evaluation of `strategies/trend_ema_adx.py` (EMA cross, ADX filter, RSI exits) over
  1,000,000 synthetic 1m candles, end to end (frame checks, every indicator, scores, decision,
  cooldown, attribution): bars/s (target >= 5,000,000) beside plain polars computing the same
  indicators as bare expressions in one `select` on the same frame (target >= 0.5 of it). The
  baseline uses the usual idiom (`ewm_mean` from the first value, no SMA seed, no warm-up nulls,
  no NaN care), so it is a little less work than the engine does.
- Incremental evaluation, one closed candle at a time after warm-up: p50/p99 microseconds per
  candle (target p99 < 200 µs), and per node.

Usage: python benchmarks/detector.py [--candles N] [--live N]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from barfinex_cli.detector.engine import VectorEngine
from barfinex_cli.detector.engine_incremental import IncrementalEngine
from barfinex_cli.detector.loader import load_strategy

TREND = Path(__file__).resolve().parents[1] / "strategies" / "trend_ema_adx.py"


def synthetic(n: int, seed: int = 7) -> pl.DataFrame:
    """Return `n` 1m candles of a geometric random walk with plausible highs, lows and volume."""
    rng = np.random.default_rng(seed)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.random(n) * 0.001)
    low = np.minimum(open_, close) * (1 - rng.random(n) * 0.001)
    return pl.DataFrame({
        "open_ms": 1_704_067_200_000 + np.arange(n, dtype=np.int64) * 60_000,
        "open": open_, "high": high, "low": low, "close": close,
        "volume": rng.gamma(2.0, 5.0, n),
    })  # fmt: skip


def baseline(frame: pl.DataFrame) -> pl.DataFrame:
    """Compute the trend strategy's indicators and rules as bare polars expressions."""
    c, h, lo = pl.col("close"), pl.col("high"), pl.col("low")
    fast = c.ewm_mean(span=12, adjust=False)
    slow = c.ewm_mean(span=26, adjust=False)
    change = c.diff()
    gain = change.clip(lower_bound=0).ewm_mean(alpha=1 / 14, adjust=False)
    loss = (-change).clip(lower_bound=0).ewm_mean(alpha=1 / 14, adjust=False)
    rsi = 100 * gain / (gain + loss)
    tr = pl.max_horizontal(h - lo, (h - c.shift(1)).abs(), (lo - c.shift(1)).abs())
    atr = tr.ewm_mean(alpha=1 / 14, adjust=False)
    up, down = h.diff(), -lo.diff()
    pdm = pl.when((up > down) & (up > 0)).then(up).otherwise(0.0)
    mdm = pl.when((down > up) & (down > 0)).then(down).otherwise(0.0)
    pdi = 100 * pdm.ewm_mean(alpha=1 / 14, adjust=False) / atr
    mdi = 100 * mdm.ewm_mean(alpha=1 / 14, adjust=False) / atr
    adx = (100 * (pdi - mdi).abs() / (pdi + mdi)).ewm_mean(alpha=1 / 14, adjust=False)
    return frame.select(
        ((fast > slow) & (fast.shift(1) <= slow.shift(1))).alias("cross_up"),
        ((fast < slow) & (fast.shift(1) >= slow.shift(1))).alias("cross_down"),
        (adx > 25).alias("trending"),
        (rsi > 75).alias("overbought"),
        (rsi < 25).alias("oversold"),
    )


def timed(fn: object, repeat: int) -> float:
    """Return the best wall time of `repeat` calls of `fn` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--live", type=int, default=20_000, help="candles fed one at a time")
    args = parser.parse_args()
    strategy = load_strategy(TREND)
    frame = synthetic(args.candles)
    engine = VectorEngine(strategy)
    signals = engine.evaluate(frame)
    t_engine = timed(lambda: engine.evaluate(frame), 3)
    t_base = timed(lambda: baseline(frame), 3)

    live = IncrementalEngine(strategy)
    rows = synthetic(args.live + 1_000, seed=11).rows(named=True)
    live.warm("BTC/USDT", rows[:1_000])
    laps = []
    for row in rows[1_000:]:
        start = time.perf_counter_ns()
        live.on_candle("BTC/USDT", row)
        laps.append((time.perf_counter_ns() - start) / 1000)
    cuts = statistics.quantiles(laps, n=100)
    nodes = len(live.plan.nodes)

    n = args.candles
    table = Table(title=f"detector: {strategy.name}, {n:,} candles, {len(signals):,} signals")
    for column in ("measure", "value", "baseline", "ratio", "target"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_row(
        "vectorised bars/s",
        f"{n / t_engine:,.0f}",
        f"{n / t_base:,.0f}",
        f"{t_base / t_engine:.2f}",
        ">= 5,000,000; ratio >= 0.5",
    )
    table.add_row("vectorised ms / run", f"{t_engine * 1e3:.1f}", f"{t_base * 1e3:.1f}", "", "")
    table.add_row("incremental p50 µs / candle", f"{cuts[49]:.1f}", "", "", "")
    table.add_row("incremental p99 µs / candle", f"{cuts[98]:.1f}", "", "", "< 200")
    table.add_row(
        f"incremental µs / node ({nodes} nodes)", f"{cuts[49] / nodes:.2f}", "", "", "~0.5"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
