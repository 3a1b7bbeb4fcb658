"""Studio figures: the UI's event backlog under a steady live load, and memory over a long run.

A real provider (`bfx provider start`, a short synthetic replay, then serving) runs as its own
process on the local Redis; the studio app runs headless in this process (`run_test`, 160x48)
on the Signals screen, which redraws as batches arrive. A publisher puts a mix of events on the
provider's Redis bus at `--rate` per second (75% closed
candles of two series, 15% detector signals, 10% inspector verdicts); they reach the studio
through the gateway's `/ws`, exactly as live events do.

- Backlog: once a second, events published minus events the app has folded into its state (what
  is in flight in the gateway, the socket, the feed's batch and the app's message queue), and
  the app's message-queue length. Target: bounded (no growth) at 200 events/s for 60 s, read
  as: never more than 5 s of events in flight, and the mean of the last sixth of the window
  within half a second of events of the first sixth.
- Memory: the studio process's resident set every 10 s for `--memory-s` s of the same load
  (target: flat once the state's bounded collections are full, after about a minute), and the
  slope over the part after the warm-up.

Usage: python benchmarks/studio.py [--rate 200] [--backlog-s 60] [--memory-s 600]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.detector import RuleAttribution, SignalGenerated
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.inspector import VerdictIssued
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.types import Payload
from barfinex_cli.studio.app import StudioApp

TOKEN = "bench-token-0123456789"
REDIS_URL = os.environ.get("BFX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
WARMUP_S = 60.0


def rss_mb() -> float:
    """Return this process's resident set size in MiB (Linux /proc; else the peak)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def payload(i: int) -> Payload:
    """Return the i-th event of the mix."""
    kind = i % 20
    if kind < 15:
        symbol = "BTC/USDT" if i % 2 else "ETH/USDT"
        price = Decimal(40_000 + i % 500)
        return CandleClosed(
            exchange="bench", symbol=symbol, timeframe="1m",
            open_time=T0 + timedelta(minutes=i // 2), open=price, high=price + 5, low=price - 5,
            close=price + 1, volume=Decimal(3),
        )  # fmt: skip
    if kind < 18:
        return SignalGenerated(
            strategy="momentum", instance=f"m{i % 3}", exchange="bench", symbol="BTC/USDT",
            timeframe="1m", candle_time=T0 + timedelta(minutes=i // 2), direction="long",
            score=2.5, threshold=2.0,
            attribution=[RuleAttribution(rule="above_ema", held=True, weight=1.0,
                                         direction="long", values={"close": 1.0, "ema": 0.9})],
        )  # fmt: skip
    return VerdictIssued(decision_id=f"d{i}", verdict="ALLOW", policy="caps", reason="ok")


async def publish(bus: RedisStreamsBus, rate: float, stop: asyncio.Event, sent: list[int]) -> None:
    """Publish the mix at `rate` events per second in 20 steps a second until `stop`."""
    step = 1 / 20
    per_step = rate * step
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        due = int((time.monotonic() - start) / step * per_step)
        if due > i:  # one pipelined XADD per step, as a provider's flusher does
            await bus.publish_many([make_event(payload(n), source="bench") for n in range(i, due)])
            i = sent[0] = due
        await asyncio.sleep(step)


@contextlib.contextmanager
def provider_process(home: Path, namespace: str) -> Iterator[str]:
    """Run `bfx provider start` (a short synthetic replay, then serving) on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "BFX_HOME": str(home), "BFX_NAMESPACE": namespace,
           "BFX_REDIS_URL": REDIS_URL, "BFX_TOKEN": TOKEN}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "barfinex_cli", "provider", "start", "--speed", "max",
         "--days", "0.02", "--history", "30", "--symbols", "BTC/USDT", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError("the provider did not start")
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


async def run(rate: float, backlog_s: float, memory_s: float) -> None:
    console = Console()
    namespace = f"bench-studio-{os.getpid()}"
    bus = RedisStreamsBus(REDIS_URL, namespace)
    with tempfile.TemporaryDirectory() as home, provider_process(Path(home), namespace) as url:
        try:
            app = StudioApp(url, TOKEN, poll_s=5)
            async with app.run_test(size=(160, 48)) as pilot:
                while app.state.connection.state != "connected":  # noqa: ASYNC110 - no event
                    await asyncio.sleep(0.05)
                await pilot.press("2")
                sent = [0]
                halt = asyncio.Event()
                publisher = asyncio.create_task(publish(bus, rate, halt, sent))
                t0 = time.monotonic()
                base_seen = app.state.events_seen
                backlog: list[tuple[float, int, int]] = []
                memory: list[tuple[float, float]] = []
                next_mem = 0.0
                total = max(backlog_s, memory_s)
                while (elapsed := time.monotonic() - t0) < total:
                    await asyncio.sleep(1.0)
                    if elapsed <= backlog_s:
                        seen = app.state.events_seen - base_seen
                        queue = app._message_queue.qsize()
                        backlog.append((elapsed, sent[0] - seen, queue))
                    if elapsed >= next_mem:
                        gc.collect()
                        memory.append((elapsed, rss_mb()))
                        next_mem += 10.0
                halt.set()
                await publisher
                feed = app.feed
                connects = feed.connects if feed is not None else 0
                skipped = feed.skipped if feed is not None else 0
        finally:
            await bus.delete_namespace()
            await bus.close()
    report(console, rate, backlog, memory, connects, skipped, sent[0])


def report(
    console: Console, rate: float, backlog: list[tuple[float, int, int]],
    memory: list[tuple[float, float]], connects: int, skipped: int, sent: int,
) -> None:  # fmt: skip
    lags = [b for _, b, _ in backlog]
    queues = [q for _, _, q in backlog]
    head, tail = lags[: max(1, len(lags) // 6)], lags[-max(1, len(lags) // 6) :]
    table = Table(title=f"studio under {rate:.0f} events/s (published {sent})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("backlog window", f"{backlog[-1][0]:.0f} s" if backlog else "—")
    table.add_row("backlog max (events)", str(max(lags, default=0)))
    table.add_row("backlog p50 (events)", f"{statistics.median(lags):.0f}" if lags else "—")
    table.add_row("backlog mean first/last sixth", f"{statistics.mean(head):.0f} / "
                  f"{statistics.mean(tail):.0f}")  # fmt: skip
    table.add_row("app message queue max", str(max(queues, default=0)))
    table.add_row("ws connects (1 = never dropped)", str(connects))
    table.add_row("malformed skipped", str(skipped))
    growth = 0.0
    if len(backlog) >= 2:
        growth = statistics.linear_regression([t for t, _, _ in backlog], lags).slope
    table.add_row("backlog trend (events/s)", f"{growth:+.1f}")
    # bounded: never more than 5 s of events in flight, and no growth over the window (the
    # last sixth within half a second of events of the first)
    bounded = (
        max(lags, default=0) <= 5 * rate
        and statistics.mean(tail) <= statistics.mean(head) + rate / 2
    )
    table.add_row("backlog bounded (target)", "yes" if bounded else "NO (missed)")
    if memory:
        after = [(t, m) for t, m in memory if t >= WARMUP_S] or memory
        slope = 0.0
        if len(after) >= 2:
            xs, ys = [t for t, _ in after], [m for _, m in after]
            slope = statistics.linear_regression(xs, ys).slope * 60
        table.add_row("memory window", f"{memory[-1][0]:.0f} s")
        table.add_row("RSS at start / after warm-up / end (MiB)",
                      f"{memory[0][1]:.1f} / {after[0][1]:.1f} / {memory[-1][1]:.1f}")  # fmt: skip
        table.add_row("RSS slope after warm-up (MiB/min)", f"{slope:+.2f}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--backlog-s", type=float, default=60.0)
    parser.add_argument("--memory-s", type=float, default=600.0)
    args = parser.parse_args()
    asyncio.run(run(args.rate, args.backlog_s, args.memory_s))


if __name__ == "__main__":
    main()
