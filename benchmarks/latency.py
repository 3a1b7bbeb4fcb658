"""Candle-close -> order-submitted latency of the stack, in one process and across processes.

A probe tails the bus and notes, on one wall clock (`time.perf_counter_ns`, shared by every
process of this machine), when each `market.candle`, `detector.signal`, `advisor.decision` and
`order.submitted` reaches it. Every entry order (`client_order_id` ending `-e`) is followed back
to its candle through the envelope links (order -> decision -> signal -> candle), and the
latency is the order's arrival minus the candle's: the probe's delivery delay is paid at both
ends, so it cancels out up to its jitter.

- `--single-process`: the kernel's in-process stack (`kernel.stack.run_in_process`, what
  `bfx up --single-process` runs), the probe a task on the same in-process bus. Target p99 < 1 ms.
- Redis: `bfx up` as a subprocess (every role its own process) on the Redis at BFX_REDIS_URL in a
  fresh namespace, the probe tailing it from this process. Target p99 < 5 ms.

Both replay the synthetic market at a speed giving `--rate` candles/s (1m candles of three
symbols plus the 5m/15m/1h aggregates), the LLM stage off (no model configured), and a policy
file without trade caps so every allowed decision becomes an order. The bus throughput (typed vs
raw redis-py) is `benchmarks/bus.py`; this prints it too when `--with-bus` is given.

Usage: python benchmarks/latency.py [--rate 200] [--minutes 1440] [--runs 1] [--with-bus]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

URL = os.environ.get("BFX_REDIS_URL", "redis://127.0.0.1:6379/0")
TYPES = ["market.candle", "detector.signal", "advisor.decision", "order.submitted"]
CANDLES_PER_MINUTE = 3 * (1 + 1 / 5 + 1 / 15 + 1 / 60)
"""Candles the synthetic replay publishes per market minute: 3 symbols, 1m and its aggregates."""

POLICY = """
timezone = "UTC"
[size]
max_notional = 1000000
max_equity_pct = 100
min_notional = 1
[risk]
per_trade_pct = 0.1
"""
"""Sizing only: no daily caps, cooldowns or exposure limits, so allowed decisions become orders."""

STRATEGY = """
from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

strategy = Strategy(
    name="latency_probe", symbols=["BTC/USDT", "ETH/USDT", "SOL/USDT"], timeframe="1m",
    threshold=2.0, cooldown=20,
    rules=[
        Rule("above_ema", ta.close > ta.ema("close", 10), weight=1.0, direction="long"),
        Rule("below_ema", ta.close < ta.ema("close", 10), weight=1.0, direction="short"),
        Rule("rsi_up", ta.rsi(7) > 55, weight=1.0, direction="long"),
        Rule("rsi_down", ta.rsi(7) < 45, weight=1.0, direction="short"),
    ],
)
"""
"""Fires at most every 20 candles per symbol (~8 signals/s at 200 candles/s): a flow the stack
keeps up with, so the figure is the latency of one event, not the length of a queue."""


class Probe:
    """Arrival times of the chain's events, by event id, and the links between them."""

    def __init__(self) -> None:
        self.arrived: dict[str, int] = {}
        self.parent: dict[str, str | None] = {}
        self.entries: list[tuple[str, str]] = []  # (order event id, decision id)
        self.candle_ns: list[int] = []

    def note(self, event: Any) -> None:
        now = time.perf_counter_ns()
        self.arrived[event.id] = now
        self.parent[event.id] = event.parent_id
        if event.type == "market.candle":
            self.candle_ns.append(now)
        elif event.type == "order.submitted":
            order = event.payload.order
            if order.client_order_id.endswith("-e") and order.decision_id:
                self.entries.append((event.id, order.decision_id))

    async def follow(self, bus: Any) -> None:
        async for delivery in bus.tail(TYPES, since="0", block_ms=100):
            self.note(delivery.event)

    def latencies_ms(self) -> list[float]:
        """Candle arrival -> entry order arrival, for every entry order traced to its candle."""
        out = []
        for order_id, decision_id in self.entries:
            signal_id = self.parent.get(decision_id)
            candle_id = self.parent.get(signal_id) if signal_id else None
            if candle_id in self.arrived and order_id in self.arrived:
                out.append((self.arrived[order_id] - self.arrived[candle_id]) / 1e6)
        return out

    def stages_ms(self) -> dict[str, float]:
        """Median time of each hop: candle -> signal -> decision -> order."""
        hops: dict[str, list[float]] = {"signal": [], "decision": [], "order": []}
        for order_id, decision_id in self.entries:
            signal_id = self.parent.get(decision_id)
            candle_id = self.parent.get(signal_id) if signal_id else None
            chain = [candle_id, signal_id, decision_id, order_id]
            if all(c in self.arrived for c in chain):
                at = [self.arrived[c] for c in chain]  # type: ignore[index]
                for name, (a, b) in zip(hops, itertools.pairwise(at), strict=True):
                    hops[name].append((b - a) / 1e6)
        return {k: round(statistics.median(v), 3) for k, v in hops.items() if v}

    def rate(self) -> float:
        """Candles/s over the middle 90% of the replay (its start waits for the roles)."""
        at = self.candle_ns
        if len(at) < 20:
            return 0.0
        low, high = at[len(at) // 20], at[len(at) * 19 // 20]
        return (len(at) * 0.9) / ((high - low) / 1e9) if high > low else 0.0


def _speed(rate: float) -> float:
    return rate * 60 / CANDLES_PER_MINUTE


def _days(minutes: int, history: int) -> float:
    return (minutes + history) / 1440


async def single_process(rate: float, minutes: int, folder: Path) -> Probe:
    """Run the in-process stack on a replay; the probe tails the same in-process bus."""
    from barfinex_cli.kernel.parts import Kernel
    from barfinex_cli.kernel.stack import run_in_process
    from barfinex_cli.runtime.settings import Settings

    (folder / "latency_probe.py").write_text(STRATEGY)
    (folder / "policy.toml").write_text(POLICY)
    settings = Settings(home=folder / "single", bus="memory")
    provider = settings.provider.with_overrides(
        speed=_speed(rate), days=_days(minutes, 300), history=300, exit_at_end=True,
        port=0,
    )  # fmt: skip
    detector = settings.detector.with_overrides(
        strategy=folder / "latency_probe.py", instance="latency_probe"
    )
    inspector = settings.inspector.with_overrides(policy=folder / "policy.toml")
    probe = Probe()
    async with Kernel(settings) as kernel:
        following = asyncio.create_task(probe.follow(await kernel.bus()))
        try:
            await run_in_process(
                kernel, provider, [detector], asyncio.Event(), record=False,
                advisor_configs=[settings.advisor], inspector_configs=[inspector],
            )  # fmt: skip
        finally:
            following.cancel()
    return probe


async def across_processes(rate: float, minutes: int, folder: Path) -> tuple[Probe, dict[str, Any]]:
    """Run `bfx up` (every role its own process) on Redis; the probe tails it from here."""
    from barfinex_cli.bus.redis_streams import RedisStreamsBus

    (folder / "latency_probe.py").write_text(STRATEGY)
    (folder / "policy.toml").write_text(POLICY)
    namespace = f"bench-latency-{uuid.uuid4().hex[:8]}"
    bus = RedisStreamsBus(URL, namespace)
    probe = Probe()
    following = asyncio.create_task(probe.follow(bus))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env.update(BFX_HOME=str(folder / "redis"), BFX_NAMESPACE=namespace, BFX_REDIS_URL=URL)
    port = _free_port()
    try:
        up = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "barfinex_cli", "up", "--redis-url", URL,
            "--strategy", str(folder / "latency_probe.py"), "--policy", str(folder / "policy.toml"),
            "--speed", f"{_speed(rate):.0f}", "--days", f"{_days(minutes, 300):.4f}",
            "--history", "300", "--port", str(port), "--json",
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await up.communicate()
        if up.returncode != 0:
            raise SystemExit(f"bfx up failed ({up.returncode}): {err.decode()[-2000:]}")
        summary: dict[str, Any] = json.loads(out)
    finally:
        following.cancel()
        await bus.delete_namespace()
        await bus.close()
    return probe, summary


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _row(table: Table, name: str, probe: Probe, target_ms: float) -> dict[str, Any]:
    latencies = probe.latencies_ms()
    if not latencies:
        table.add_row(name, f"{probe.rate():.0f}", "0", "-", "-", "-", f"< {target_ms:g} ms", "-")
        return {"path": name, "orders": 0}
    p50, p99 = statistics.median(latencies), _quantile(latencies, 0.99)
    table.add_row(
        name, f"{probe.rate():.0f}", str(len(latencies)), f"{p50:.2f}", f"{p99:.2f}",
        f"{max(latencies):.2f}", f"< {target_ms:g} ms", "met" if p99 < target_ms else "MISSED",
    )  # fmt: skip
    return {"path": name, "candles_per_s": probe.rate(), "orders": len(latencies),
            "p50_ms": p50, "p99_ms": p99, "max_ms": max(latencies),
            "median_hop_ms": probe.stages_ms()}  # fmt: skip


async def main(rate: float, minutes: int, runs: int, with_bus: bool) -> None:
    table = Table(
        title=f"candle close -> order submitted, {rate:g} candles/s asked, LLM stage off",
        title_justify="left",
    )
    for column in ("path", "candles/s", "orders", "p50 ms", "p99 ms", "max ms", "target", ""):
        table.add_column(column)
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            single = await single_process(rate, minutes, Path(tmp))
            results.append(_row(table, "--single-process (in-process bus)", single, 1.0))
            multi, _summary = await across_processes(rate, minutes, Path(tmp))
            results.append(_row(table, "processes on Redis (bfx up)", multi, 5.0))
    console = Console(width=140)
    console.print(table)
    if with_bus:
        sys.path.insert(0, str(Path(__file__).parent))
        import bus as bus_bench

        await bus_bench.main(30_000)
    print(json.dumps(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="candles/s the replay publishes")
    parser.add_argument("--minutes", type=int, default=1440, help="market minutes replayed")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--with-bus", action="store_true", help="also run benchmarks/bus.py")
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.minutes, args.runs, args.with_bus))
