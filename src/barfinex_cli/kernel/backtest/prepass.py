"""The fast path's pre-pass: where the strategies will fire, found by one vectorised scan.

The lock-step replay waits for the whole stack after every market moment. Most moments need no
wait: when no strategy fires on a moment and the paper broker holds no position and no open
order, no role can place an order in answer to it. `signal_moments` scans each strategy once
over the replay's candles with the detector's `VectorEngine` (which gives the incremental
engine's signals) and returns the moments (candle close times) where one fires; the replay waits
on those, on every moment a position or an order is open, and at least every `MAX_SKIP` moments.

The pre-pass is a forecast, checked afterwards: the engine compares it with the signals the
detectors really published, and a run where a signal fired on a moment the forecast missed
(a warm-up or a throttle the scan cannot see) is played again with a wait on every moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from barfinex_cli.store.market import CandleRow

MAX_SKIP = 1000
"""The most moments played without a wait (the in-process bus keeps ~100,000 events a type)."""


def signal_moments(
    strategies: Sequence[Path], series: dict[str, list[CandleRow]], base_ms: int, since_ms: int
) -> set[int]:
    """Return the close times of the candles on which any strategy fires, from `since_ms` on.

    `series` holds each symbol's base candles (`base_ms` long), history included, so the scan
    warms up on the same candles the detectors do.
    """
    import polars as pl

    from barfinex_cli.detector.engine import VectorEngine
    from barfinex_cli.detector.loader import load_strategy
    from barfinex_cli.market.candles import resample, timeframe_ms

    moments: set[int] = set()
    for path in strategies:
        strategy = load_strategy(path)
        span = timeframe_ms(strategy.timeframe)
        parts = []
        for symbol in strategy.symbols:
            rows = series.get(symbol)
            if not rows:
                continue
            frame = pl.DataFrame([r._asdict() for r in rows], infer_schema_length=None)
            if span != base_ms:
                frame = resample(frame, strategy.timeframe)
            parts.append(frame.with_columns(pl.lit(symbol).alias("symbol")))
        if not parts:
            continue
        records = VectorEngine(strategy).evaluate(pl.concat(parts, how="diagonal_relaxed"))
        moments.update(r.open_ms + span for r in records if r.open_ms + span >= since_ms)
    return moments
