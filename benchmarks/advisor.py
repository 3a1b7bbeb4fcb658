"""Advisor figures in one run: the eight stages per signal against a no-op pipeline baseline.

- Stages 1-8 on one signal with the LLM stage skipped (no model configured), the rule scorer (or
  the model file given with --model) and calibration: signals/s and p50/p99 µs per signal
  (target p99 < 2 ms). Each signal is what the service does per `detector.signal` after intake:
  a context snapshot cut at the signal's candle, then `Pipeline.run`; publishing is not included
  (see benchmarks/bus.py for the bus).
- Baseline, in the same run: a no-op pipeline that takes the same snapshot and emits the one
  `advisor.signal.received` payload, so the ratio shows what the stages themselves cost.

Usage: python benchmarks/advisor.py [--signals N] [--model FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from barfinex_cli.advisor.context import MarketContext
from barfinex_cli.advisor.models import RuleScorer, load_model
from barfinex_cli.advisor.pipeline import Pipeline, RunResult
from barfinex_cli.advisor.stages.base import SignalView
from barfinex_cli.contracts.advisor import SignalReceived
from barfinex_cli.contracts.detector import RuleAttribution, SignalGenerated
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.runtime.config import AdvisorConfig

T0 = 1_704_067_200_000
MINUTE = 60_000
KEY = ("bench", "BTC/USDT", "1m")


def market(n: int) -> MarketContext:
    """Return a context holding `n` 1m candles of a wavy random-looking walk and a tight book."""
    ctx = MarketContext()
    rows = []
    close = 30_000.0
    for i in range(n):
        prev = close
        close = prev * (1 + 0.0015 * math.sin(i / 7) + 0.0008 * math.sin(i * 1.3))
        rows.append(
            {
                "open_ms": T0 + i * MINUTE,
                "open": prev,
                "high": max(prev, close) * 1.0008,
                "low": min(prev, close) * 0.9992,
                "close": close,
                "volume": 5 + i % 11,
            }
        )
    ctx.warm(KEY, rows)
    ctx.set_quote(KEY[0], KEY[1], close * 0.99995, close * 1.00005)
    ctx.set_quote_total(KEY[0], "USDT", 50_000.0)
    return ctx


def signals(count: int, first: int, last: int) -> list[SignalView]:
    """Return `count` signals on candles between `first` and `last`, alternating sides."""
    out = []
    for i in range(count):
        side = "long" if i % 2 == 0 else "short"
        rules = [
            RuleAttribution(rule=r, held=r != "c", weight=1.0, direction=side, values={})
            for r in ("a", "b", "c")
        ]
        payload = SignalGenerated(
            strategy="bench",
            instance="bench",
            exchange=KEY[0],
            symbol=KEY[1],
            timeframe="1m",
            candle_time=from_ms(T0 + (first + i % (last - first)) * MINUTE),
            direction=side,
            score=2.0,
            threshold=2.0,
            attribution=rules,
        )
        out.append(SignalView(f"s{i}", payload))
    return out


async def noop(view: SignalView, ctx: MarketContext) -> RunResult:
    """The baseline: the same snapshot, one payload out."""
    ctx.snapshot(KEY, until_ms=int(view.signal.candle_time.timestamp() * 1000))
    s = view.signal
    received = SignalReceived(
        signal_id=view.id,
        strategy=s.strategy,
        exchange=s.exchange,
        symbol=s.symbol,
        direction=s.direction,
        score=s.score,
    )
    return RunResult(events=[received])


async def timed(
    label: str, run: object, views: list[SignalView], ctx: MarketContext
) -> list[float]:
    samples: list[float] = []
    gc.collect()
    gc.disable()
    try:
        for view in views:
            start = time.perf_counter()
            await run(view, ctx)  # type: ignore[operator]
            samples.append((time.perf_counter() - start) * 1e6)
    finally:
        gc.enable()
    return samples


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main_async(count: int, model: Path | None) -> None:
    ctx = market(2_000)
    views = signals(count, 400, 1_990)
    bundle = load_model(model) if model is not None else None
    pipeline = Pipeline(
        AdvisorConfig(),
        scorer=bundle.scorer if bundle else RuleScorer(),
        calibrators=bundle.calibrators if bundle else None,
    )

    async def full(view: SignalView, c: MarketContext) -> RunResult:
        snap = c.snapshot(KEY, until_ms=int(view.signal.candle_time.timestamp() * 1000))
        return await pipeline.run(view, snap)

    await timed("warm", full, views[:200], ctx)  # first calls pay imports and caches
    await timed("warm", noop, views[:200], ctx)
    outcomes: dict[str, int] = {}
    for view in views[:500]:
        result = await full(view, ctx)
        end = "decision" if result.decision else f"rejected at {result.rejected.stage}"  # type: ignore[union-attr]
        outcomes[end] = outcomes.get(end, 0) + 1
    base = await timed("noop", noop, views, ctx)
    stages = await timed("stages", full, views, ctx)
    table = Table(title=f"advisor: {count} signals, scorer {pipeline.scorer.name}, LLM skipped")
    for column in ("figure", "signals/s", "p50 µs", "p99 µs", "mean µs"):
        table.add_column(column)
    for label, samples in (("stages 1-8", stages), ("no-op pipeline", base)):
        rate = 1e6 / statistics.fmean(samples)
        table.add_row(
            label,
            f"{rate:,.0f}",
            f"{quantile(samples, 0.5):.1f}",
            f"{quantile(samples, 0.99):.1f}",
            f"{statistics.fmean(samples):.1f}",
        )
    Console().print(table)
    ratio = statistics.fmean(stages) / statistics.fmean(base)
    p99 = quantile(stages, 0.99)
    verdict = "met" if p99 < 2000 else "NOT MET"
    Console().print(
        f"stages cost {ratio:.1f}x the no-op baseline; p99 {p99:.0f} µs "
        f"(target < 2000 µs: {verdict}); outcomes of 500: {outcomes}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=20_000)
    parser.add_argument("--model", type=Path, default=None, help="a trained model file")
    args = parser.parse_args()
    asyncio.run(main_async(args.signals, args.model))


if __name__ == "__main__":
    main()
