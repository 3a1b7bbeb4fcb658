"""`Outage` counts one outage per time Redis was away, however many calls were caught in it."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError

from barfinex_cli.bus.outage import Outage


async def test_a_failure_of_an_attempt_sent_before_redis_answered_again_is_not_a_new_outage() -> (
    None
):
    outage = Outage("redis://test", limit_s=5, backoff_s=0.001, max_backoff_s=0.001)
    away = True
    sent = asyncio.Event()
    fail_late = asyncio.Event()

    async def slow() -> str:
        """Sent while Redis is away; its failure arrives after another call saw it answer."""
        if not sent.is_set():
            sent.set()
            await fail_late.wait()
            raise RedisConnectionError("Connection refused")
        return "slow"

    async def quick() -> str:
        if away:
            raise RedisConnectionError("Connection refused")
        return "quick"

    slow_call = asyncio.create_task(outage.call(slow))
    await sent.wait()
    quick_call = asyncio.create_task(outage.call(quick))
    await asyncio.sleep(0.01)  # quick's first attempts fail: the outage starts
    assert outage.degraded and outage.outages == 1
    away = False
    assert await quick_call == "quick"  # Redis answers: the outage ends
    assert not outage.degraded
    fail_late.set()
    assert await slow_call == "slow"  # its late failure is retried ...
    assert outage.outages == 1  # ... as part of the outage that ended
    assert not outage.degraded


async def test_a_failure_after_redis_answered_again_starts_a_new_outage() -> None:
    outage = Outage("redis://test", limit_s=5, backoff_s=0.001, max_backoff_s=0.001)
    failures = [True, False, True, False]

    async def call() -> None:
        if failures.pop(0):
            raise RedisConnectionError("Connection refused")

    await outage.call(call)
    await outage.call(call)
    assert outage.outages == 2
    assert outage.last is not None
