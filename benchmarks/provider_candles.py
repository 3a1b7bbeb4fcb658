"""Candle-building figures in one run: trades -> 1m candles, live aggregator vs polars.

On the same trades (default 5,000,000, about 300 a minute, seeded):
- `CandleAggregator.add_trade`, pure Python, one call per trade as a live feed delivers them
  (target >= 0.3 of polars);
- raw polars `group_by_dynamic(every="1m")` with first/max/min/last/sum/len on a ready frame;
- `trades_to_candles` (our batch path, the same query plus checks; target >= 0.9 of raw polars);
- polars again, counting the build of its frame from the same Python tuples a stream hands over
  (three column lists, the fastest way we found): the fair baseline for trades arriving one by one.
All three candle lists are checked identical, bit for bit, before any figure is printed.

Usage: python benchmarks/provider_candles.py [--trades N] [--repeat K]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from barfinex_cli.market.candles import (
    TIMEFRAMES,
    CandleAggregator,
    frame_rows,
    trades_to_candles,
)
from barfinex_cli.store.market import CandleRow

T0 = 1_704_067_200_000


def make_trades(n: int, seed: int = 7) -> pl.DataFrame:
    """Return `n` trades: exponential gaps (mean 200 ms), a random-walk price, lognormal sizes."""
    rng = np.random.default_rng(seed)
    times = T0 + np.cumsum(rng.exponential(200.0, n)).astype(np.int64)
    prices = np.round(42_000 * np.exp(np.cumsum(rng.normal(0, 2e-5, n))), 2)
    amounts = np.round(rng.lognormal(-3.0, 1.2, n), 5)
    return pl.DataFrame({"time_ms": times, "price": prices, "amount": amounts})


def raw_polars(frame: pl.DataFrame) -> pl.DataFrame:
    """The plain polars query a user would write."""
    return (
        frame.with_columns(pl.col("time_ms").cast(pl.Datetime("ms")).alias("t"))
        .group_by_dynamic("t", every="1m")
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("amount").sum().alias("volume"),
            pl.len().cast(pl.Int64).alias("trades"),
        )
        .select(pl.col("t").cast(pl.Int64).alias("open_ms"), pl.exclude("t"))
    )


def live(trades: list[tuple[int, float, float]], timeframes: tuple[str, ...]) -> list[CandleRow]:
    agg = CandleAggregator(timeframes)
    add = agg.add_trade
    out: list[CandleRow] = []
    for ms, price, amount in trades:
        closed = add(ms, price, amount)
        if closed:
            out += [row for tf, row in closed if tf == "1m"]
    out += [row for tf, row in agg.flush_until(2**62) if tf == "1m"]
    return out


def frame_from(tuples: list[tuple[int, float, float]]) -> pl.DataFrame:
    """Build a frame from trades as Python tuples, the fastest way we found (column lists)."""
    return pl.DataFrame(
        {
            "time_ms": [t[0] for t in tuples],
            "price": [t[1] for t in tuples],
            "amount": [t[2] for t in tuples],
        },
        schema={"time_ms": pl.Int64, "price": pl.Float64, "amount": pl.Float64},
    )


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        gc.collect()  # start each run clean; the collector stays on, as in the provider
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(n: int, repeat: int) -> dict[str, Any]:
    """Time every path on the same `n` trades (checked identical first); return the figures."""
    frame = make_trades(n)
    tuples = list(zip(*(frame[c].to_list() for c in ("time_ms", "price", "amount")), strict=True))

    # Interleaved, so a busy machine slows both alike; the best run of each counts.
    runs = [(best(lambda: raw_polars(frame), 1), best(lambda: trades_to_candles(frame, "1m"), 1))
            for _ in range(repeat)]  # fmt: skip
    t_raw, raw = min((r for r, _ in runs), key=lambda run: run[0])
    t_batch, batch = min((b for _, b in runs), key=lambda run: run[0])
    t_built, _ = best(lambda: raw_polars(frame_from(tuples)), max(1, repeat // 2))
    t_live, rows = best(lambda: live(tuples, ("1m",)), 2)
    t_all, _ = best(lambda: live(tuples, TIMEFRAMES), 2)
    assert rows == frame_rows(raw) == frame_rows(batch), "the paths disagree"
    return {"n": n, "candles": len(rows), "raw": t_raw, "batch": t_batch, "built": t_built,
            "live": t_live, "all": t_all}  # fmt: skip


def figures(n: int = 5_000_000, repeat: int = 3) -> list[tuple[str, str, str, str, str]]:
    """Return rows (figure, measured, baseline, ratio, target) for `benchmarks/provider.py`."""
    m = measure(n, repeat)

    def rate(seconds: float) -> str:
        return f"{n / seconds:,.0f} trades/s"

    baseline = f"polars group_by_dynamic {rate(m['raw'])}"
    return [
        ("trades -> 1m candles, batch path", rate(m["batch"]), baseline,
         f"{m['raw'] / m['batch']:.2f}", ">= 0.9"),
        ("trades -> 1m candles, live incremental", rate(m["live"]), baseline,
         f"{m['raw'] / m['live']:.3f}", ">= 0.3"),
        ("trades -> all 12 timeframes, live", rate(m["all"]), baseline,
         f"{m['raw'] / m['all']:.3f}", "-"),
        ("live vs polars incl. building its frame", rate(m["live"]),
         f"polars from Python tuples {rate(m['built'])}", f"{m['built'] / m['live']:.2f}", "-"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs of the polars queries (best)")
    args = parser.parse_args()
    n = args.trades
    m = measure(n, args.repeat)
    t_raw, t_batch, t_live, t_all, t_built = m["raw"], m["batch"], m["live"], m["all"], m["built"]

    def rate(seconds: float) -> str:
        return f"{n / seconds:,.0f}"

    table = Table(title=f"trades -> 1m candles: {n:,} trades, {m['candles']:,} candles (identical)")
    for column in ("path", "seconds", "trades/s", "ns/trade", "ratio", "target"):
        table.add_column(column, justify="left" if column == "path" else "right")
    table.add_row("polars group_by_dynamic (raw, ready frame)", f"{t_raw:.3f}", rate(t_raw),
                  f"{t_raw / n * 1e9:.1f}", "1.00", "")  # fmt: skip
    ok = "met" if t_raw / t_batch >= 0.9 else "NOT met"
    table.add_row("trades_to_candles (batch path)", f"{t_batch:.3f}", rate(t_batch),
                  f"{t_batch / n * 1e9:.1f}", f"{t_raw / t_batch:.2f}", f">= 0.9 {ok}")  # fmt: skip
    ok = "met" if t_raw / t_live >= 0.3 else "NOT met"
    table.add_row("CandleAggregator.add_trade (1m)", f"{t_live:.3f}", rate(t_live),
                  f"{t_live / n * 1e9:.0f}", f"{t_raw / t_live:.3f}", f">= 0.3 {ok}")  # fmt: skip
    table.add_row("CandleAggregator.add_trade (all 12 tfs)", f"{t_all:.3f}", rate(t_all),
                  f"{t_all / n * 1e9:.0f}", f"{t_raw / t_all:.3f}", "")  # fmt: skip
    table.add_row("polars incl. frame from the Python tuples", f"{t_built:.3f}", rate(t_built),
                  f"{t_built / n * 1e9:.0f}", f"{t_raw / t_built:.3f}", "")  # fmt: skip
    table.add_row(
        "  aggregator vs that (stream baseline)", "", "", "", f"{t_built / t_live:.2f}", ""
    )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
