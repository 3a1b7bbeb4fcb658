"""Inspector figures in one run: decisions judged by the governor against a no-policy baseline.

- Policy evaluation: `Governor.evaluate` on one intent with every policy family switched on
  (17 named policies: sizing, drawdown, activity, market, windows, exposure, correlated groups)
  and 50 open positions in the portfolio, per-symbol and per-strategy overrides in the file:
  decisions/s and p50/p99 µs per decision (target p99 < 1 ms). Intents vary in symbol, side,
  kind and price, so the mix holds allows (the full path: every policy runs) and refusals.
- The same with a new positions tuple per decision (the governor sums a book once per tuple, so
  this is the cost when every decision arrives after a position changed).
- Baseline, in the same run: the same governor with no policies (sizing and the verdict only),
  so the ratio shows what the policies themselves cost.
- `Governor.check` (the account-level drawdown check the service runs on its clock), p50/p99.

Usage: python benchmarks/inspector.py [--decisions N]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

from rich.console import Console
from rich.table import Table

from barfinex_cli.inspector.governor import Governor
from barfinex_cli.inspector.model import Intent, Portfolio, Position, Verdict
from barfinex_cli.inspector.policies import PolicySet, parse_policies

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # a Thursday, inside the window below
SYMBOLS = [f"C{i:02d}/USDT" for i in range(60)]
POLICY_FILE = b"""
timezone = "Europe/London"
[size]
max_notional = 20000
max_equity_pct = 5
min_notional = 10
step = 0.0001
[risk]
per_trade_pct = 0.5
[market]
max_spread_bps = 20
max_slippage_bps = 12
[cooldown]
after_loss_minutes = 15
[hold]
max_hold_minutes = 2880
[windows]
timezone = "America/New_York"
[[windows.allow]]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "00:30"
end = "23:30"
[exposure]
max_net_pct = 300
max_leverage = 4
[correlation.groups.first]
symbols = ["C00/USDT", "C01/USDT", "C02/USDT", "C03/USDT", "C55/USDT"]
max_open = 5
[correlation.groups.second]
symbols = ["C10/USDT", "C11/USDT", "C12/USDT", "C56/USDT"]
max_open = 4
[drawdown]
daily_loss_pct = 5
from_peak_pct = 15
daily_profit_cap_pct = 10
[activity]
max_trades_per_day = 500
max_losing_trades_per_day = 50
max_loss_streak = 6
[assets]
excluded = ["C59/USDT"]
[symbols."C00/USDT".size]
max_notional = 40000
[symbols."C01/USDT".market]
max_spread_bps = 40
[strategies.swing.risk]
per_trade_pct = 0.25
[strategies.swing.hold]
max_hold_minutes = 10080
"""


def portfolio() -> Portfolio:
    """Return an account of 1,000,000 with 50 open positions, half long, half short."""
    positions = tuple(
        Position(SYMBOLS[i], "trend" if i % 3 else "swing", "long" if i % 2 else "short",
                 Decimal(1 + i % 7), Decimal(100 + i), NOW - timedelta(hours=i), i % 10 != 0)
        for i in range(50)
    )  # fmt: skip
    return Portfolio(
        equity=Decimal(1_000_000), peak_equity=Decimal(1_030_000),
        day_start_equity=Decimal(1_010_000), positions=positions,
        open_orders_notional=Decimal(25_000), trades_today=40, losing_trades_today=7,
        loss_streak=2, last_loss_at=NOW - timedelta(hours=2), realised_today=Decimal(-3_000),
        stand_down_until=None,
    )  # fmt: skip


def intents(count: int, book: Portfolio) -> list[Intent]:
    """Return `count` intents across 60 symbols and both sides: opens, flips, closes, reduces.

    Exits (one in five) close or reduce one of the held positions, by its own strategy.
    """
    kinds = ("open", "open", "open", "flip", "close", "open", "open", "open", "reduce", "open")
    out = []
    for i in range(count):
        kind = kinds[i % 10]
        side = "buy" if i % 2 else "sell"
        symbol, strategy = SYMBOLS[(i * 7) % 60], "swing" if i % 4 == 0 else "trend"
        if kind in ("close", "reduce"):
            pos = book.positions[i % 50]
            symbol, strategy = pos.symbol, pos.strategy
            side = "sell" if pos.side == "long" else "buy"
        entry = Decimal(100 + i % 60) + Decimal(i % 13) / 10
        stop = entry - 2 if side == "buy" else entry + 2
        out.append(Intent(
            decision_id=f"d{i}", strategy=strategy, instance=None, symbol=symbol,
            side=side, kind=kind, entry=entry, stop=stop, take_profit=None,  # type: ignore[arg-type]
            size_hint=Decimal(1) if i % 5 == 3 or kind == "reduce" else None, conviction=0.6,
            spread_bps=float(4 + i % 20), at=NOW,
        ))  # fmt: skip
    return out


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    full: Governor, cold: Governor, bare: Governor, book: Portfolio, items: list[Intent]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time the four figures interleaved decision by decision, so they share the machine's load.

    Returns wall-clock and CPU (this thread's) microseconds per call: on a shared machine the
    wall clock's tail is mostly time the process was not scheduled, which CPU time leaves out.
    """
    keys = ("full", "rebuilt", "bare", "check")
    wall: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    clock, cpu_clock = time.perf_counter, time.thread_time
    gc.collect()
    gc.disable()
    try:
        for k, item in enumerate(items):
            fresh = replace(book, positions=(*book.positions,))
            shaken = replace(book, equity=Decimal(1_000_000 - k))
            calls: tuple[Callable[[], object], ...] = (
                partial(full.evaluate, item, book, NOW),
                partial(cold.evaluate, item, fresh, NOW),
                partial(bare.evaluate, item, book, NOW),
                partial(full.check, shaken, NOW),
            )
            for key, call in zip(keys, calls, strict=True):
                w0, c0 = clock(), cpu_clock()
                call()
                c1, w1 = cpu_clock(), clock()
                wall[key].append((w1 - w0) * 1e6)
                cpu[key].append((c1 - c0) * 1e6)
    finally:
        gc.enable()
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--decisions", type=int, default=50_000)
    args = parser.parse_args()
    policies: PolicySet = parse_policies(POLICY_FILE, "benchmark policies")
    full = Governor(policies)
    bare = Governor(policies, evaluators=())
    book = portfolio()
    items = intents(args.decisions, book)
    outcomes: dict[str, int] = {}
    for item in items[:2_000]:  # warm caches and count what the mix produces
        verdict: Verdict = full.evaluate(item, book, NOW)
        key = verdict.action if verdict.action == "ALLOW" else f"{verdict.action} {verdict.policy}"
        outcomes[key] = outcomes.get(key, 0) + 1
        bare.evaluate(item, book, NOW)
    wall, cpu = measure(full, Governor(policies), bare, book, items)
    table = Table(title=f"inspector: {len(items):,} decisions, {len(full.names)} policies, "
                        f"{len(book.positions)} open positions")  # fmt: skip
    for column in ("figure", "decisions/s", "p50 µs", "p99 µs", "CPU p50 µs", "CPU p99 µs"):
        table.add_column(column)
    labels = {
        "full": "Governor.evaluate, every policy",
        "rebuilt": "the same, positions changed before each decision",
        "bare": "no-policy baseline (sizing + verdict)",
        "check": "Governor.check (account limits, no intent)",
    }
    for key, label in labels.items():
        w, c = wall[key], cpu[key]
        table.add_row(label, f"{1e6 / statistics.fmean(w):,.0f}", f"{quantile(w, 0.5):.1f}",
                      f"{quantile(w, 0.99):.1f}", f"{quantile(c, 0.5):.1f}",
                      f"{quantile(c, 0.99):.1f}")  # fmt: skip
    console = Console()
    console.print(table)
    p99, cpu_p99 = quantile(wall["full"], 0.99), quantile(cpu["full"], 0.99)
    ratio = statistics.fmean(wall["full"]) / statistics.fmean(wall["bare"])
    met = "met" if p99 < 1000 else "NOT MET"
    load = os.getloadavg()[0]
    console.print(f"policies cost {ratio:.1f}x the no-policy baseline; p99 {p99:.0f} µs wall, "
                  f"{cpu_p99:.0f} µs CPU (target < 1000 µs: {met}); load average {load:.1f}; "
                  f"verdicts of the first 2,000: "
                  f"{dict(sorted(outcomes.items(), key=lambda kv: -kv[1]))}")  # fmt: skip


if __name__ == "__main__":
    main()
