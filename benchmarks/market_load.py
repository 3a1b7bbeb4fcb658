"""The load path and the output path of 1M candles, before and after the candle cache, in one run.

On one market.db in a temporary data dir holding N (default 1,000,000) synthetic 1m candles:
- load: the old path (`MarketStore.candles` + `rows_frame`, what `load_store` did), then
  `load_store` with no copy (cold: SQLite read + Parquet write), with a current copy (warm;
  target < 0.5 s), and after a day of candles appended (the copy extended). The frames are
  checked equal before any figure is printed.
- write: 1M candles into a fresh store without and with the generation triggers (their cost).
- `bfx detector scan --json` over all of it as a whole process (start-up, load, evaluate, JSON
  to a pipe): the code before the cache (`--before`, extracted with `git archive`) and this
  checkout, on the same store; peak RSS of each; outputs checked equal. With `--many M`, the
  same for a strategy that fires on every candle of a series of M candles (a table of M
  signals, and their JSON; the old table of 50,000 signals alone takes over a minute).

Usage: python benchmarks/market_load.py [--candles N] [--runs K] [--before REV] [--many M]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from barfinex_cli.market.candle_cache import cache_dir
from barfinex_cli.market.history import load_store, rows_frame
from barfinex_cli.store.market import SCHEMA, CandleRow, MarketStore, SeriesKey
from barfinex_cli.store.market_generations import GENERATIONS, statements

ROOT = Path(__file__).resolve().parents[1]
TREND = ROOT / "strategies" / "trend_ema_adx.py"
BEFORE = "7ed985e"  # the commit before the candle cache and the streamed scan output
KEY = SeriesKey("synthetic", "BTC/USDT", "1m")
T0 = 1_704_067_200_000
ALWAYS = """from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy
strategy = Strategy("always", ["BTC/USDT"], "1m", [Rule("up", ta.close > 0, 1.0, "long")],
                    threshold=1.0, cooldown=0)
"""


def synthetic(n: int, start: int = T0, seed: int = 7) -> list[CandleRow]:
    """Return `n` 1m candles of a geometric random walk (as benchmarks/detector.py makes)."""
    rng = np.random.default_rng(seed)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.random(n) * 0.001)
    low = np.minimum(open_, close) * (1 - rng.random(n) * 0.001)
    volume = rng.gamma(2.0, 5.0, n)
    times = start + np.arange(n, dtype=np.int64) * 60_000
    return [
        CandleRow(int(t), float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(times, open_, high, low, close, volume, strict=True)
    ]


def laps(fn: Callable[[], Any], runs: int, before: Callable[[], None] | None = None) -> list[float]:
    """Return the wall time of each of `runs` calls of `fn` (seconds); `before` runs untimed."""
    out = []
    for _ in range(runs):
        if before is not None:
            before()
        gc.collect()
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def old_load(db: Path) -> pl.DataFrame:
    """What `load_store` did before the cache: CandleRow per row, then a frame."""
    with MarketStore(db, read_only=True) as store:
        rows = store.candles(KEY)
    return rows_frame(rows).with_columns(pl.lit(KEY.symbol).alias("symbol"))


def raw_write(path: Path, rows: list[CandleRow], triggers: bool) -> float:
    """Write `rows` with one executemany into a fresh file; return the seconds it took."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    if triggers:
        for statement in statements(GENERATIONS):
            conn.execute(statement)
    params = [(*KEY, *row) for row in rows]
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT OR REPLACE INTO candles VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", params)
    conn.execute("COMMIT")
    took = time.perf_counter() - start
    conn.close()
    return took


def scan_process(
    src: Path, home: Path, strategy: Path, symbol: str, *args: str
) -> tuple[float, int, bytes]:
    """Run `bfx detector scan` from `src` as a process; return wall s, peak RSS KB, stdout.

    The peak RSS comes from GNU time (`/usr/bin/time -f %M`): a child forked from this big
    process would report this process's pages as its own.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env.update(BFX_HOME=str(home), PYTHONPATH=str(src))
    argv = [sys.executable, "-m", "barfinex_cli", "detector", "scan", str(strategy)]
    argv += ["--exchange", KEY.exchange, "--symbol", symbol, *args]
    with tempfile.TemporaryDirectory() as tmp:
        rss_file, out_file = Path(tmp) / "rss", Path(tmp) / "out"
        with out_file.open("wb") as out:
            start = time.perf_counter()
            done = subprocess.run(
                ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *argv],
                env=env,
                stdout=out,
                stderr=subprocess.PIPE,
            )
            took = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"scan failed ({src}): {done.stderr.decode()[-500:]}")
        return took, int(rss_file.read_text().split()[-1]), out_file.read_bytes()


def span(values: list[float], unit: str = "s") -> str:
    low, high = min(values), max(values)
    if unit == "ms":
        return f"{low * 1e3:,.0f}-{high * 1e3:,.0f} ms"
    return f"{low:.2f}-{high:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", default=BEFORE, help="git revision of the old code")
    parser.add_argument(
        "--many", type=int, default=0, help="also a signal on every candle of this many (0: off)"
    )
    args = parser.parse_args()
    n, runs = args.candles, args.runs
    work = Path(tempfile.mkdtemp(prefix="bfx-market-load-"))
    try:
        rows = synthetic(n)
        table = Table(title=f"market load and scan output: {n:,} 1m candles, {runs} runs")
        for column in ("measure", "before", "after", "target"):
            table.add_column(column, justify="left" if column == "measure" else "right")

        plain = raw_write(work / "plain.db", rows, triggers=False)
        counted = raw_write(work / "counted.db", rows, triggers=True)
        table.add_row(
            f"write {n:,} candles, one executemany (before: no triggers)",
            f"{plain:.2f} s",
            f"{counted:.2f} s",
        )

        home = work / "home"
        db = home / "market.db"
        with MarketStore(db) as store:
            store.upsert_candles(KEY, rows)
        del rows

        old = old_load(db)
        t_old = laps(lambda: old_load(db), runs)
        drop = lambda: shutil.rmtree(cache_dir(db), ignore_errors=True)  # noqa: E731
        t_cold = laps(lambda: load_store(db, KEY.exchange, [KEY.symbol], KEY.timeframe), runs, drop)
        t_warm = laps(lambda: load_store(db, KEY.exchange, [KEY.symbol], KEY.timeframe), runs)
        assert load_store(db, KEY.exchange, [KEY.symbol], KEY.timeframe).equals(old)
        day = synthetic(1_440, start=T0 + n * 60_000, seed=8)
        appended = []
        for i in range(runs):
            with MarketStore(db) as store:
                store.upsert_candles(
                    KEY, [r._replace(open_ms=r.open_ms + i * 86_400_000) for r in day]
                )
            appended += laps(lambda: load_store(db, KEY.exchange, [KEY.symbol], KEY.timeframe), 1)
        assert load_store(db, KEY.exchange, [KEY.symbol], KEY.timeframe).equals(old_load(db)), (
            "the copy differs from the SQLite read"
        )
        table.add_row("load_store, cold (no copy)", span(t_old), span(t_cold), "")
        table.add_row("load_store, warm (current copy)", span(t_old), span(t_warm), "< 0.5 s")
        table.add_row("load_store after a day appended", "", span(appended), "")

        old_src = work / "before"
        old_src.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.before, "src"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive, check=True)
        before_src, after_src = old_src / "src", ROOT / "src"
        cases: list[tuple[str, Path, str, tuple[str, ...]]] = [
            (f"scan --json, {n:,} candles", TREND, KEY.symbol, ("--json",))
        ]
        if args.many:
            always = work / "always.py"
            always.write_text(ALWAYS)
            with MarketStore(db) as store:
                store.upsert_candles(KEY._replace(symbol="ALL/USDT"), synthetic(args.many))
            cases += [
                (f"scan table, {args.many:,} signals", always, "ALL/USDT", ()),
                (f"scan --json, {args.many:,} signals", always, "ALL/USDT", ("--json",)),
            ]
        for label, strategy, symbol, extra in cases:
            before = [scan_process(before_src, home, strategy, symbol, *extra) for _ in range(runs)]
            after = [scan_process(after_src, home, strategy, symbol, *extra) for _ in range(runs)]
            if extra:
                old_doc, new_doc = json.loads(before[0][2]), json.loads(after[0][2])
                assert new_doc.pop("total_signals") == len(new_doc["signals"])
                assert old_doc == new_doc, f"{label}: outputs differ"
            table.add_row(
                f"bfx detector {label}, whole process",
                span([b[0] for b in before]),
                span([a[0] for a in after]),
            )
            table.add_row(
                f"  peak RSS ({label})",
                f"{max(b[1] for b in before) / 1024:,.0f} MB",
                f"{max(a[1] for a in after) / 1024:,.0f} MB",
                "< 1 GB",
            )
        Console().print(table)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
