"""A paced replay publishes beside its stream: a slow bus holds back the bus, not the stream."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.provider.service import PUBLISH_AHEAD_MAX, ProviderOptions
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.audit import AuditStore
from bus.redis_faults import RedisServer
from conftest import Kernels
from polling import until

OPTIONS = dict(
    symbols=("BTC/USDT",), timeframes=("1m", "5m", "1h"), history=60, days=1.0, port=0,
    exit_at_end=True, health_interval_s=60.0,
    speed=1e7,  # paced, and always behind its schedule: the replay never sleeps
)  # fmt: skip


async def test_paced_replay_runs_on_while_redis_is_frozen_then_publishes_each_candle_once_in_order(
    kernels: Kernels, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    assert server.proc is not None
    settings = load_settings(
        home=tmp_path / "home", namespace="paced", bus="redis", redis_url=server.url, token="t0k"
    )
    provider = await (await kernels(settings)).provider(ProviderOptions(**OPTIONS))  # type: ignore[arg-type]
    provider.gate = asyncio.Event()  # the stream waits for it, after everything else started
    running = asyncio.create_task(provider.run(asyncio.Event()))
    frozen = False
    try:
        await asyncio.wait_for(provider.ready.wait(), 60)
        rt: Any = provider.runtime
        server.proc.send_signal(signal.SIGSTOP)  # every reply from Redis waits from now on
        frozen = True
        provider.gate.set()
        # the stream goes on: what it makes queues behind the publish that waits for Redis ...
        await until(lambda: rt.pipeline.candles >= 100, 60, what="the stream to go on")
        # ... up to a bound, then it waits for the bus
        await until(lambda: len(rt.outbox) >= PUBLISH_AHEAD_MAX, 60, what="the bound")
        assert len(rt.outbox) < PUBLISH_AHEAD_MAX + 10  # one payload's events may pass it
        server.proc.send_signal(signal.SIGCONT)
        frozen = False
        published = await asyncio.wait_for(running, 120)
        bus = RedisStreamsBus(server.url, "paced")
        try:
            entries: Any = await bus.redis.xrange(bus.key("market.candle"))
            events = [bus.decode(fields[b"e"], "market.candle") for _, fields in entries]
        finally:
            await bus.close()
        ones = [e.payload.open_time for e in events if e.payload.timeframe == "1m"]
        live = 1440 - 60
        assert len(ones) == live and ones == sorted(set(ones))  # each once, in the order made
        assert len(events) == live + live // 5 + live // 60
        with AuditStore(settings.audit_path) as audit:
            assert sum(n for _, n in audit.types()) == published
    finally:
        if frozen:
            server.proc.send_signal(signal.SIGCONT)
        if not running.done():
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        server.stop()
