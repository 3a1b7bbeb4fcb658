"""Provider figures in one run, printed as a table with ratios against same-process baselines.

- Trades -> 1m candles: the live incremental aggregator and the batch path vs polars
  `group_by_dynamic` on the same trades (targets >= 0.3 and >= 0.9 of polars); from
  `benchmarks/provider_candles.py`.
- `/api/v1/candles` for 1,000 candles through loopback HTTP, p50/p99, vs reading the same 1,000
  candles from the market store in-process.
- Replay at `--speed max`: candles/s onto the Redis bus and onto the in-process bus, vs the replay
  connector's own stream with nothing downstream.
- A paced replay (a `--speed` it cannot keep up with, as `bfx up` plays) onto Redis: candles/s
  with the publisher beside the stream (`Provider._stream_once`), vs the former path in the same
  run: a flush, one round trip, after every payload.

Needs Redis on 127.0.0.1:6379 (or BFX_REDIS_URL). Usage: python benchmarks/provider.py [--trades N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.market.synthetic import generate_candles
from barfinex_cli.provider.connectors.replay import ReplayConnector
from barfinex_cli.provider.service import ProviderOptions
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.market import MarketStore, SeriesKey

URL = os.environ.get("BFX_REDIS_URL", "redis://127.0.0.1:6379/0")
DAYS = 7.0
KEY = SeriesKey("bench", "BTC/USDT", "1m")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_latency(requests: int = 300) -> tuple[float, float, float]:
    """Return p50 and p99 ms of GET /api/v1/candles?limit=1000, and the in-process read in ms."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        with MarketStore(home / "market.db") as store:
            store.upsert_candles(KEY, generate_candles("BTC/USDT", 1_704_067_200_000, 5000, 7))
            start = time.perf_counter()
            for _ in range(50):
                store.candles(KEY, limit=1000, newest=True)
            direct_ms = (time.perf_counter() - start) / 50 * 1000
        port = _free_port()
        env = {**os.environ, "BFX_HOME": str(home), "BFX_TOKEN": "bench-token",
               "BFX_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}", "BFX_REDIS_URL": URL}  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "barfinex_cli", "provider", "start", "--port", str(port),
             "--speed", "max", "--days", "0.05", "--history", "10", "--no-record",
             "--symbols", "BTC/USDT"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            headers = {"Authorization": "Bearer bench-token"}
            params = {"exchange": "bench", "symbol": "BTC/USDT", "timeframe": "1m", "limit": 1000}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
                for _ in range(300):
                    try:
                        if client.get("/api/v1/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                time.sleep(1.0)  # let the short replay finish
                times = []
                for _ in range(requests):
                    start = time.perf_counter()
                    response = client.get("/api/v1/candles", params=params)
                    times.append((time.perf_counter() - start) * 1000)
                    assert len(response.json()["candles"]) == 1000
        finally:
            proc.terminate()
            proc.wait(30)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1], direct_ms


async def bare_replay() -> float:
    """Candles/s of the replay connector's stream with nothing downstream."""
    connector = ReplayConnector(days=DAYS, speed=None, skip=60, book=False)
    await connector.start()
    count = 0
    start = time.perf_counter()
    async for _payload in connector.stream():
        count += 1
    rate = count / (time.perf_counter() - start)
    await connector.stop()
    return rate


async def replay_onto(bus: str) -> float:
    """Candles/s (every timeframe) the provider publishes replaying at max speed."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(home=tmp, namespace=namespace, bus=bus, redis_url=URL,
                                 token="bench", bus_maxlen=1_000_000)  # fmt: skip
        options = ProviderOptions(
            speed=None, days=DAYS, history=60, exit_at_end=True, record=False, port=0,
            timeframes=("1m", "5m", "15m", "1h"),
        )  # fmt: skip
        async with Kernel(settings) as kernel:
            provider = await kernel.provider(options)
            task = asyncio.create_task(provider.run(asyncio.Event()))
            await provider.ready.wait()  # start-up (imports, history, gateway) is not replay
            start = time.perf_counter()
            await task
            elapsed = time.perf_counter() - start
            assert provider.runtime is not None
            rate = provider.runtime.candles / elapsed
    if bus == "redis":
        cleanup = RedisStreamsBus(URL, namespace)
        await cleanup.delete_namespace()
        await cleanup.close()
    return rate


async def _flush_per_payload(self: Any, rt: Any, stop: asyncio.Event) -> None:
    """The paced stream before the publisher: apply a payload, then flush it, one at a time."""
    stream = rt.connector.stream()
    try:
        async for payload in stream:
            if stop.is_set():
                break
            await rt.apply(rt.pipeline.feed(payload))
            await rt.flush()
    finally:
        await stream.aclose()
        await rt.flush()


async def paced_replay(per_payload: bool) -> float:
    """Candles/s (every timeframe) a paced replay behind its schedule publishes onto Redis."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(home=tmp, namespace=namespace, bus="redis", redis_url=URL,
                                 token="bench", bus_maxlen=1_000_000)  # fmt: skip
        options = ProviderOptions(
            speed=1e7, days=2.0, history=60, exit_at_end=True, record=False, port=0,
            timeframes=("1m", "5m", "15m", "1h"),
        )  # fmt: skip
        async with Kernel(settings) as kernel:
            provider = await kernel.provider(options)
            if per_payload:
                provider._stream_once = types.MethodType(_flush_per_payload, provider)  # type: ignore[method-assign]
            task = asyncio.create_task(provider.run(asyncio.Event()))
            await provider.ready.wait()
            start = time.perf_counter()
            await task
            elapsed = time.perf_counter() - start
            assert provider.runtime is not None
            rate = provider.runtime.candles / elapsed
    cleanup = RedisStreamsBus(URL, namespace)
    await cleanup.delete_namespace()
    await cleanup.close()
    return rate


def main(trades: int) -> None:
    table = Table(title="provider benchmark", title_justify="left")
    for col in ("figure", "measured", "baseline", "ratio", "target"):
        table.add_column(col)
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import provider_candles  # type: ignore[import-not-found]

        for row in provider_candles.figures(trades):
            table.add_row(*row)
    except (ImportError, AttributeError) as exc:
        table.add_row("trades -> 1m candles", f"not run ({exc})", "-", "-", "-")
    p50, p99, direct = gateway_latency()
    table.add_row(
        "GET /api/v1/candles (1,000 candles), p50", f"{p50:.2f} ms",
        f"store read in-process {direct:.2f} ms", f"{p50 / direct:.1f}x", "-",
    )  # fmt: skip
    table.add_row("GET /api/v1/candles (1,000 candles), p99", f"{p99:.2f} ms", "-", "-", "-")
    bare = asyncio.run(bare_replay())
    for bus in ("redis", "memory"):
        rate = asyncio.run(replay_onto(bus))
        table.add_row(
            f"replay --speed max onto the {bus} bus", f"{rate:,.0f} candles/s",
            f"bare replay stream {bare:,.0f} events/s", f"{rate / bare:.2f}", "-",
        )  # fmt: skip
    before = asyncio.run(paced_replay(per_payload=True))
    after = asyncio.run(paced_replay(per_payload=False))
    table.add_row(
        "paced replay onto Redis, publisher beside the stream", f"{after:,.0f} candles/s",
        f"a flush per payload {before:,.0f} candles/s", f"{after / before:.1f}x", "-",
    )  # fmt: skip
    Console(width=160).print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trades", type=int, default=5_000_000)
    main(parser.parse_args().trades)
