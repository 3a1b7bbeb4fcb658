"""The instance lease held for a run's life: a name taken over stops the run that lost it."""

from __future__ import annotations

import asyncio

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.runtime.lease import InstanceLease


async def test_a_run_whose_name_another_run_took_sets_its_stop_and_says_why(
    redis_bus: RedisStreamsBus,
) -> None:
    lease = InstanceLease(
        redis_bus, "guard", role="inspector", hint="give it another name", lease_s=1.0
    )
    await lease.acquire()
    stop = asyncio.Event()
    holding = asyncio.create_task(lease.hold(stop))
    await redis_bus.redis.set(lease.key, "another-run", px=60_000)  # another run holds it now
    await asyncio.wait_for(stop.wait(), 30)
    await holding
    assert lease.lost is not None
    assert "inspector instance 'guard' is already running" in str(lease.lost)
    assert "give it another name" in str(lease.lost)
    await lease.release()
    assert await redis_bus.redis.get(lease.key) == b"another-run"  # the winner keeps its lease
