"""`bfx optimize` throughput: trials/s with --jobs 2 beside --jobs 1 on the same study size.

`strategies/sma_cross.py` over synthetic 1m candles (default 200,000: a trial backtests the 70 %
search window, so each trial is real work and the worker start-up is spread over many trials),
random sampler with a fixed seed, the default SQLite storage in a fresh data dir per run. Each
figure is the kernel's own: trials run over the wall time of running them (worker start-up
included, candle loading and the holdout test of the best trial not), and the rate once every
process had started its first trial (from the trials' own start and end times in the study), which
leaves a worker's one-time start-up out. Also printed: one trial's backtest alone, in this process,
so the storage's share per trial is visible. The machine has 2 cores shared with other work, so
the load average is printed beside the ratios.

Usage: python benchmarks/optimize.py [--candles N] [--trials N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import polars as pl
from rich.console import Console
from rich.table import Table

from barfinex_cli.detector.loader import load_strategy_factory
from barfinex_cli.detector.params import parse_params
from barfinex_cli.kernel.optimize.plan import OptimizeRequest, plan_folds
from barfinex_cli.kernel.optimize.run import run_optimize
from barfinex_cli.kernel.optimize.trials import evaluate

SMA = Path(__file__).resolve().parents[1] / "strategies" / "sma_cross.py"


def synthetic(n: int, seed: int = 7) -> pl.DataFrame:
    """Return `n` 1m candles of a geometric random walk, labelled BTC/USDT."""
    rng = np.random.default_rng(seed)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.r_[close[0], close[:-1]]
    return pl.DataFrame({
        "open_ms": 1_704_067_200_000 + np.arange(n, dtype=np.int64) * 60_000,
        "open": open_,
        "high": np.maximum(open_, close) * (1 + rng.random(n) * 0.001),
        "low": np.minimum(open_, close) * (1 - rng.random(n) * 0.001),
        "close": close,
        "volume": rng.gamma(2.0, 5.0, n),
        "symbol": ["BTC/USDT"] * n,
    })  # fmt: skip


def steady_rate(study: optuna.Study) -> float:
    """Return trials/s once every process had started its first trial (from the trials' times).

    A worker's start-up (a fresh interpreter importing polars and optuna) is paid once per run;
    this is the rate the processes keep after it.
    """
    trials = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    firsts: dict[str, float] = {}
    for t in trials:
        start = t.datetime_start.timestamp()  # type: ignore[union-attr]
        worker = str(t.user_attrs["worker"])
        firsts[worker] = min(firsts.get(worker, start), start)
    since = max(firsts.values())
    end = max(t.datetime_complete.timestamp() for t in trials)  # type: ignore[union-attr]
    after = [t for t in trials if t.datetime_start.timestamp() >= since]  # type: ignore[union-attr]
    return len(after) / (end - since) if end > since else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=200_000)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    factory = load_strategy_factory(SMA)
    frame = synthetic(args.candles)
    spaces = parse_params(["fast=5:30", "slow=35:120"], factory.params)

    def request(jobs: int) -> OptimizeRequest:
        return OptimizeRequest(SMA, spaces, sampler="random", trials=args.trials, jobs=jobs, seed=1)

    search = plan_folds(frame, 0.3, 0)[-1].search
    alone = []
    for fast, slow in ((10, 50), (20, 100), (7, 40)):
        strategy = factory.build(fast=fast, slow=slow)
        started = time.perf_counter()
        evaluate(strategy, frame, search, request(1))
        alone.append(time.perf_counter() - started)
    rates: dict[int, list[float]] = {1: [], 2: []}
    steady: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for jobs in (1, 2):
            with tempfile.TemporaryDirectory() as home:
                report = run_optimize(request(jobs), factory, frame, home=Path(home), namespace="b")
                url = f"sqlite:///{Path(home) / 'optuna.db'}"
                steady[jobs].append(steady_rate(optuna.load_study(study_name=report.study,
                                                                  storage=url)))  # fmt: skip
            rates[jobs].append(report.trials_per_s)
    load = os.getloadavg()
    table = Table(
        title=f"bfx optimize: {args.trials} trials of sma_cross on {args.candles:,} 1m candles, "
        f"{args.rounds} round(s); load average {load[0]:.1f} / {load[1]:.1f} on "
        f"{os.cpu_count()} cores",
        title_justify="left",
    )
    for column in ("figure", "measured", "note"):
        table.add_column(column, justify="right" if column == "measured" else "left")
    table.add_row("one trial's backtest alone", f"{statistics.median(alone) * 1e3:.0f} ms",
                  "median of 3, in this process, no storage")  # fmt: skip
    for jobs in (1, 2):
        shown = ", ".join(f"{r:.2f}" for r in rates[jobs])
        table.add_row(f"--jobs {jobs}, whole run", f"{max(rates[jobs]):.2f} trials/s",
                      f"runs: {shown}")  # fmt: skip
    for jobs in (1, 2):
        shown = ", ".join(f"{r:.2f}" for r in steady[jobs])
        table.add_row(f"--jobs {jobs}, all processes running", f"{max(steady[jobs]):.2f} trials/s",
                      f"runs: {shown}")  # fmt: skip
    ratio = max(rates[2]) / max(rates[1])
    table.add_row("--jobs 2 / --jobs 1, whole run", f"{ratio:.2f}x", "best run of each; ceiling 2")
    ratio = max(steady[2]) / max(steady[1])
    table.add_row(
        "--jobs 2 / --jobs 1, all running", f"{ratio:.2f}x", "best run of each; ceiling 2"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
