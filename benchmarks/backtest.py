"""Backtest figures in one run: bfx beside vectorbt and backtesting.py on the same candles.

On >= 1,000,000 synthetic 1m candles (`bfx data synth`, market/synthetic.py) and the same plain
SMA(10)/SMA(20) cross (strategies/sma_cross.py; long on the cross up, flat on the cross down,
fills at the next open, no fees so that no run goes broke and stops trading early):

- bfx detector-only in-process: `run_vector` on the loaded frame (signals, fills, trades,
  equity, metrics), bars/s; target >= 1.5x vectorbt's in-process bars/s.
- bfx as a whole CLI process: `bfx backtest --detector-only` from start-up through loading the
  market store (its Parquet cache warm), the run and the report (the metrics table and the
  charts; and `--json`), seconds; target within 2x vectorbt's in-process seconds. Its peak RSS
  (target < 1 GB).
- vectorbt in-process: `MA.run` x2, the crosses, `Portfolio.from_signals` (price=open, signals
  shifted by one), the trade records; numba compiled on a small run first, not timed.
- backtesting.py in-process: the same rules in `Strategy.next`, `FractionalBacktest`.
- Trade lists compared: entry and exit times of every closed trade, bfx against each.
- Full pipeline (optional, `--pipeline-candles N`): the event-driven backtest engine
  (kernel/backtest/engine.py) over the first N candles, bars/s; target >= 10x backtesting.py.

Usage: python benchmarks/backtest.py [--candles 1000000] [--repeat 3] [--bt-candles N]
       [--pipeline-candles N]      (pip install -e ".[bench]" first)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.kernel.backtest.vector import run_vector
from barfinex_cli.market.history import load_store

ROOT = Path(__file__).resolve().parents[1]
SMA = ROOT / "strategies" / "sma_cross.py"
console = Console(stderr=True)


def timed(work: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """Return the wall seconds of `repeat` runs of `work`, and the last run's value."""
    seconds, value = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        value = work()
        seconds.append(time.perf_counter() - started)
    return seconds, value


def bfx_trades(frame: pl.DataFrame) -> Any:
    strategy = load_strategy(SMA)
    return run_vector(strategy, frame, exchange="synthetic", fees_bps=0, slippage_bps=0,
                      objects=False)  # fmt: skip


def vectorbt_run(open_: Any, close: Any) -> Any:
    import vectorbt as vbt

    fast, slow = vbt.MA.run(close, 10), vbt.MA.run(close, 20)
    entries = fast.ma_crossed_above(slow).shift(1, fill_value=False)
    exits = fast.ma_crossed_below(slow).shift(1, fill_value=False)
    pf = vbt.Portfolio.from_signals(close, entries, exits, price=open_, fees=0.0,
                                    init_cash=10_000.0, freq="1min")  # fmt: skip
    return pf.trades.values, float(pf.value().iloc[-1])


def backtesting_run(frame: pl.DataFrame) -> Any:
    import pandas as pd
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest, crossover

    def sma(values: Any, n: int) -> Any:
        return pd.Series(values).rolling(n).mean().to_numpy()

    class SmaCross(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, 10)
            self.slow = self.I(sma, self.data.Close, 20)

        def next(self) -> None:
            if crossover(self.fast, self.slow):
                self.buy()
            elif crossover(self.slow, self.fast):
                self.position.close()

    data = pd.DataFrame(
        {"Open": frame["open"].to_numpy(), "High": frame["high"].to_numpy(),
         "Low": frame["low"].to_numpy(), "Close": frame["close"].to_numpy(),
         "Volume": frame["volume"].to_numpy()},
        index=pd.to_datetime(frame["open_ms"].to_numpy(), unit="ms"),
    )  # fmt: skip
    bt = FractionalBacktest(data, SmaCross, cash=10_000, commission=0.0)
    return bt.run()["_trades"]


def cli_run(home: Path, *extra: str) -> tuple[float, int, dict[str, Any] | None, float]:
    """Run `bfx backtest` as a fresh process: wall s, peak RSS (KiB), --json, CPU s."""
    args = [sys.executable, "-m", "barfinex_cli", "--data-dir", str(home), "backtest", str(SMA),
            "--exchange", "synthetic", "--symbol", "BTC/USDT", "--detector-only", "--fees", "0",
            *extra]  # fmt: skip
    probe = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "assert p.returncode == 0, p.stderr\n"
        "use = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "cpu = use.ru_utime + use.ru_stime\n"
        "print(json.dumps({'wall': wall, 'rss': use.ru_maxrss, 'cpu': cpu, 'out': p.stdout}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                          check=True)  # fmt: skip
    report = json.loads(done.stdout)
    parsed = json.loads(report["out"]) if "--json" in extra else None
    return report["wall"], report["rss"], parsed, report["cpu"]


def pipeline_run(home: Path, candles: int) -> tuple[float, int] | None:
    """Run the full pipeline engine over the first `candles` candles; None if not available."""
    try:
        from barfinex_cli.kernel.backtest.engine import PipelineSpec, backtest
    except ImportError:
        return None
    from barfinex_cli.runtime.settings import load_settings

    replay = home / "BTCUSDT-1m-pipeline.parquet"
    frame = load_store(home / "market.db", "synthetic", ["BTC/USDT"], "1m").head(candles)
    frame.drop("symbol").write_parquet(replay)
    settings = load_settings(None, home=home, bus="memory")
    spec = PipelineSpec(strategies=(SMA,), replay=replay, symbols=("BTC/USDT",), fees_bps=0.0,
                        slippage_bps=0.0)  # fmt: skip
    started = time.perf_counter()
    result = backtest(settings, spec)
    return time.perf_counter() - started, result.bars


def closed(times: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bt-candles", type=int, default=None,
                        help="candles for backtesting.py (default: all)")  # fmt: skip
    parser.add_argument("--pipeline-candles", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="reuse/keep this data dir")
    args = parser.parse_args()
    home = args.keep or Path(tempfile.mkdtemp(prefix="bfx-bench-"))
    days = math.ceil(args.candles / 1440)
    if not (home / "market.db").exists():
        console.print(f"synthesising {days} days of 1m candles into {home} ...")
        subprocess.run([sys.executable, "-m", "barfinex_cli", "--data-dir", str(home), "data",
                        "synth", "--days", str(days), "--symbols", "BTC/USDT"],
                       check=True, capture_output=True)  # fmt: skip
    started = time.perf_counter()
    frame = load_store(home / "market.db", "synthetic", ["BTC/USDT"], "1m")
    load_s = time.perf_counter() - started
    frame = frame.drop("symbol")  # whole days: the CLI runs on the same store
    n = frame.height
    times = frame["open_ms"].to_numpy()
    rows: list[tuple[str, str, str]] = []

    # bfx detector-only and vectorbt, in-process, run in alternation so that the machine's load
    # weighs on both alike (numba compiled on a small vectorbt run first, not timed)
    import pandas as pd
    import vectorbt as vbt

    open_, close = pd.Series(frame["open"].to_numpy()), pd.Series(frame["close"].to_numpy())
    vectorbt_run(open_.head(2_000), close.head(2_000))
    bfx_s, vbt_s = [], []
    for _ in range(args.repeat):
        (seconds,), result = timed(lambda: bfx_trades(frame), 1)
        bfx_s.append(seconds)
        (seconds,), (records, vbt_equity) = timed(lambda: vectorbt_run(open_, close), 1)
        vbt_s.append(seconds)
    pair_ratios = sorted(v / b for b, v in zip(bfx_s, vbt_s, strict=True))
    trades = result.trades_table.filter(pl.col("exit_reason") != "open")
    ours = closed(list(zip(trades["entry_ms"].to_list(), trades["exit_ms"].to_list(), strict=True)))
    theirs = closed([(int(times[r["entry_idx"]]), int(times[r["exit_idx"]]))
                     for r in records if r["status"] == 1])  # fmt: skip

    # backtesting.py, in-process (once: it is slow)
    bt_n = min(args.bt_candles or n, n)
    bt_s, bt_trades = timed(lambda: backtesting_run(frame.head(bt_n)), 1)
    bt_times = frame.head(bt_n)["open_ms"].to_numpy()
    bars = zip(bt_trades["EntryBar"], bt_trades["ExitBar"], strict=True)
    bt_list = closed([(int(bt_times[e]), int(bt_times[x])) for e, x in bars])
    ours_bt = [t for t in ours if t[1] <= int(bt_times[-1])]

    # whole CLI process (warm Parquet cache: the first run builds it)
    cli_run(home, "--json")
    cli_json = [cli_run(home, "--json") for _ in range(3)]
    cli_table = [cli_run(home, "--no-plot") for _ in range(1)]
    cli_plot = [cli_run(home) for _ in range(3)]
    json_report = cli_json[-1][2]
    assert json_report is not None and json_report["bars"] == n

    best = min
    floor = [_wall([sys.executable, "-m", "barfinex_cli", "version"]) for _ in range(3)]
    polars_floor = [_wall([sys.executable, "-c", "import polars, numpy"]) for _ in range(3)]
    ties = tie_candles(frame)
    bfx_rate, vbt_rate, bt_rate = n / best(bfx_s), n / best(vbt_s), bt_n / bt_s[0]
    cli_best = best(w for w, _, _, _ in cli_plot)
    cli_cpu = best(c for _, _, _, c in cli_plot)
    rss_mib = max(r for _, r, _, _ in cli_json + cli_plot + cli_table) / 1024
    rows += [
        ("candles", f"{n:,}", f"load from market.db (Parquet cache) {load_s:.2f} s"),
        ("bfx detector-only, in-process", f"{bfx_rate:,.0f} bars/s",
         f"{best(bfx_s):.3f} s best of {args.repeat} ({', '.join(f'{s:.3f}' for s in bfx_s)})"),
        ("vectorbt in-process", f"{vbt_rate:,.0f} bars/s",
         f"{best(vbt_s):.3f} s best of {args.repeat} ({', '.join(f'{s:.3f}' for s in vbt_s)}); "
         f"vectorbt {vbt.__version__}"),
        ("backtesting.py in-process", f"{bt_rate:,.0f} bars/s",
         f"{bt_s[0]:.2f} s on {bt_n:,} candles, once"),
        ("bfx / vectorbt in-process", f"{bfx_rate / vbt_rate:.2f}x",
         f"best against best; per alternating pair {pair_ratios[0]:.2f}-{pair_ratios[-1]:.2f}x, "
         f"median {statistics.median(pair_ratios):.2f}x; target >= 1.5x"),
        ("bfx / backtesting.py in-process", f"{bfx_rate / bt_rate:.1f}x", ""),
        ("bfx backtest, whole process (table + charts)", f"{cli_best:.2f} s",
         f"{n / cli_best:,.0f} bars/s; target <= 2x vectorbt in-process = "
         f"{2 * best(vbt_s):.2f} s; runs {', '.join(f'{w:.2f}' for w, _, _, _ in cli_plot)}; "
         f"CPU (user+sys) {cli_cpu:.2f} s"),
        ("start-up floor: `bfx version` / `import polars, numpy`",
         f"{best(floor):.2f} s / {best(polars_floor):.2f} s", "fresh processes, best of 3"),
        ("bfx backtest --json, whole process", f"{best(w for w, _, _, _ in cli_json):.2f} s",
         f"--no-plot (table only) {cli_table[0][0]:.2f} s"),
        ("peak RSS of the CLI process", f"{rss_mib:,.0f} MiB", "target < 1024 MiB"),
        ("trades (closed): bfx / vectorbt / backtesting.py",
         f"{len(ours):,} / {len(theirs):,} / {len(bt_list):,}",
         f"backtesting.py over its {bt_n:,} candles: bfx has {len(ours_bt):,} there"),
        ("trades equal (entry, exit times)",
         f"vectorbt {_same(ours, theirs)}, backtesting.py {_same(ours_bt, bt_list)}",
         f"SMA(10) = SMA(20) exactly (2-decimal prices) on {ties:,} candles: there each "
         "library's float rounding breaks the tie its own way"),
        ("final equity bfx / vectorbt", f"{float(result.curve.equity[-1]):,.2f} / "
         f"{vbt_equity:,.2f}", "fees 0, all-in"),
    ]  # fmt: skip
    if args.pipeline_candles:
        done = pipeline_run(home, args.pipeline_candles)
        if done is None:
            rows.append(("full pipeline", "not available", "kernel/backtest/engine.py missing"))
        else:
            wall, bars = done
            rows.append(("full pipeline, in-process", f"{bars / wall:,.0f} bars/s",
                         f"{bars:,} candles in {wall:.1f} s; / backtesting.py "
                         f"{bars / wall / bt_rate:.2f}x (target >= 10x)"))  # fmt: skip
    table = Table(
        title=f"bfx backtest figures, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    for column in ("figure", "value", "notes"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def _same(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> str:
    """Return how many trades of `b` are in `a` too, and how many of `a` are not in `b`."""
    common = len(set(a) & set(b))
    return f"{common:,} of {len(b):,} same ({len(a) - common:,} of bfx's differ)"


def tie_candles(frame: pl.DataFrame) -> int:
    """Return the candles where SMA(10) and SMA(20) of the close are equal to 1e-9 relative."""
    fast, slow = pl.col("close").rolling_mean(10), pl.col("close").rolling_mean(20)
    return int(frame.select(((fast - slow).abs() <= 1e-9 * slow).sum()).item())


if __name__ == "__main__":
    main()
