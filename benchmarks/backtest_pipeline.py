"""Full-pipeline backtest speed: bars/s of `bfx backtest` (every role) beside backtesting.py.

The full pipeline (kernel/backtest/engine.py) replays candles through the provider with its
paper broker, the detector, the advisor, the inspector and the recorder on the in-process bus,
in lock-step. This measures it on a fixed window: the synthetic BTC/USDT 1m candles
(`market/synthetic.py`, seed fixed), `--candles` of them played after `--history` of warm-up,
the plain SMA(10)/SMA(20) cross (strategies/sma_cross.py). backtesting.py runs the same rules
on the same played candles in-process (`pip install -e ".[bench]"`), so the ratio is
like-for-like in candles, not in work: bfx's pipeline records every event, builds 4 timeframes,
marks the book, runs the advisor and the inspector's policies on each decision.

`--profile` runs the pipeline once under pyinstrument and prints the hottest frames instead
(`pip install pyinstrument`); the profile of issue 11's speed work was taken this way.

Usage: python benchmarks/backtest_pipeline.py [--candles 2880] [--history 300] [--repeat 3]
       [--fast/--full] [--profile] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SMA = ROOT / "strategies" / "sma_cross.py"


def write_candles(path: Path, total: int) -> Any:
    """Write `total` synthetic BTC/USDT 1m candles to `path` (Parquet); return the frame."""
    import polars as pl

    from barfinex_cli.market.synthetic import generate_candles

    rows = generate_candles("BTC/USDT", minutes=total)
    frame = pl.DataFrame([r._asdict() for r in rows], infer_schema_length=None)
    frame.write_parquet(path)
    return frame


def pipeline_once(
    home: Path, replay: Path, history: int, fast: bool
) -> tuple[float, int, Any, float]:
    """Run the full pipeline once in this process: wall s, bars played, the result, CPU s.

    The CPU seconds are this process's own: on a machine other jobs load, they say more about
    the pipeline's cost than the wall seconds, which include the time spent waiting for a core.
    """
    from barfinex_cli.kernel.backtest.engine import PipelineSpec, backtest
    from barfinex_cli.runtime.settings import load_settings

    settings = load_settings(None, home=home, bus="memory")
    spec = PipelineSpec(strategies=(SMA,), replay=replay, symbols=("BTC/USDT",),
                        history=history, fast=fast)  # fmt: skip
    started, cpu = time.perf_counter(), time.process_time()
    result = backtest(settings, spec)
    return time.perf_counter() - started, result.bars, result, time.process_time() - cpu


def orders_of(result: Any) -> list[tuple[Any, ...]]:
    """The run's fills (time, side, size, price, fee), compared between runs of one window."""
    return [(f.time_ms, f.symbol, f.side, f.quantity, f.price, f.fee, f.reason)
            for f in result.fills]  # fmt: skip


def backtesting_bars_per_s(frame: Any, repeat: int) -> float | None:
    """backtesting.py on the same candles (same rules as benchmarks/backtest.py), bars/s."""
    try:
        import backtesting  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return None
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from backtest import backtesting_run

    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        backtesting_run(frame)
        best = min(best, time.perf_counter() - started)
    return float(frame.height / best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=2880, help="candles played")
    parser.add_argument("--history", type=int, default=300, help="warm-up candles before them")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="wait on every moment (fast=False)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    fast = not args.full
    with tempfile.TemporaryDirectory(prefix="bfx-bench-pipeline-") as tmp:
        home = Path(tmp)
        replay = home / "BTCUSDT-1m.parquet"
        frame = write_candles(replay, args.history + args.candles)
        played = frame.tail(args.candles)
        if args.profile:
            from pyinstrument import Profiler

            pipeline_once(home, replay, args.history, fast)  # warm the imports
            profiler = Profiler(interval=0.0005)
            profiler.start()
            wall, bars, _, _ = pipeline_once(home, replay, args.history, fast)
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False))
            print(f"{bars} bars in {wall:.2f} s under the profiler")
            return
        walls, cpus, bars, trades = [], [], 0, None
        for _ in range(args.repeat):
            wall, bars, result, cpu = pipeline_once(home, replay, args.history, fast)
            walls.append(wall)
            cpus.append(cpu)
            this = orders_of(result)
            if trades is not None and this != trades:
                raise SystemExit("two runs of the same window traded differently")
            trades = this
        bt = backtesting_bars_per_s(played, args.repeat)
    best = min(walls)
    out = {
        "candles": bars, "history": args.history, "fast": fast,
        "wall_s": [round(w, 3) for w in walls], "median_s": round(statistics.median(walls), 3),
        "bars_per_s": round(bars / best, 1), "cpu_s": [round(c, 3) for c in cpus],
        "bars_per_cpu_s": round(bars / min(cpus), 1), "fills": len(trades or []),
        "backtesting_py_bars_per_s": None if bt is None else round(bt, 1),
        "ratio_to_backtesting_py": None if bt is None else round(bars / best / bt, 4),
    }  # fmt: skip
    if args.json:
        print(json.dumps(out))
        return
    for key, value in out.items():
        print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
