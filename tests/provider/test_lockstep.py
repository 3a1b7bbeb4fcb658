"""The provider's lock-step replay on Redis: the next market moment waits for the roles.

A role here is a consumer group on the real Redis that takes its time over each candle. With
`lockstep` the provider publishes a moment, then waits until that group has handled and
acknowledged it; without, a replay at full speed runs far ahead of it (what made `bfx up`'s
orders land on later candles than the backtest's).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.provider.service import ProviderOptions
from barfinex_cli.runtime.settings import load_settings
from conftest import REDIS_URL, Kernels

OPTIONS: dict[str, Any] = dict(
    symbols=("BTC/USDT",), timeframes=("1m",), speed=None, history=30, days=0.04, port=0,
    serve=False, record=False, exit_at_end=True, health_interval_s=3600,
)  # fmt: skip
MINUTE_MS = 60_000


async def _play(
    kernels: Kernels, tmp_path: Path, namespace: str, *, lockstep: bool
) -> list[tuple[int, int]]:
    """Replay with a slow role on Redis; return (candle close, provider clock) per handled candle,
    the clock read after the role's work and before its ack."""
    settings = load_settings(
        home=tmp_path, namespace=namespace, bus="redis", redis_url=REDIS_URL, token="t0ken"
    )
    role_bus = RedisStreamsBus(REDIS_URL, namespace)
    consumer = await role_bus.consumer("slow.role", "r1", ["market.candle"], start="$")
    provider = await (await kernels(settings)).provider(
        ProviderOptions(**OPTIONS, lockstep=lockstep, lockstep_timeout_s=20)
    )
    seen: list[tuple[int, int]] = []
    stop = asyncio.Event()

    async def role() -> None:
        while not stop.is_set():
            got = await consumer.fetch(100, 50)
            if not got:
                continue
            await asyncio.sleep(0.02)  # the role's work on the moment
            assert provider.runtime is not None
            for delivery in got:
                payload = delivery.event.payload
                assert isinstance(payload, CandleClosed)
                close = to_ms(payload.open_time) + MINUTE_MS
                seen.append((close, provider.runtime.clock_ms))
            await consumer.ack(got)

    task = asyncio.create_task(role())
    try:
        await asyncio.wait_for(provider.run(asyncio.Event()), 60)
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
        await role_bus.delete_namespace()
        await role_bus.close()
    return seen


async def test_a_lockstep_replay_plays_the_next_moment_only_once_the_role_acknowledged(
    kernels: Kernels, tmp_path: Path, namespace: str
) -> None:
    seen = await _play(kernels, tmp_path, namespace, lockstep=True)
    assert len(seen) == int(0.04 * 1440) - 30  # every live minute, each handled once
    assert all(clock == close for close, clock in seen)  # the market waited for the role


async def test_without_lockstep_a_replay_at_full_speed_runs_ahead_of_a_slow_role(
    kernels: Kernels, tmp_path: Path, namespace: str
) -> None:
    seen = await _play(kernels, tmp_path, namespace, lockstep=False)
    assert len(seen) == int(0.04 * 1440) - 30
    assert sum(clock > close for close, clock in seen) > len(seen) // 2
