"""`Outage` counts one outage per time Redis was away, however many calls were caught in it.

A stopping role (`stop_waiting`) no longer waits for Redis: the calls riding out an outage are
cut and raise `RedisUnreachable`, and new ones give up at once, while Redis that answers still
answers.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from barfinex_cli.bus.outage import Outage
from barfinex_cli.errors import RedisUnreachable
from polling import until


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


async def _away() -> None:
    raise RedisConnectionError("Connection refused")


async def test_stop_waiting_cuts_a_call_riding_out_an_outage_and_its_task_goes_on() -> None:
    outage = Outage("redis://test", limit_s=60, backoff_s=0.5, max_backoff_s=2)

    async def role() -> str:
        with pytest.raises(RedisUnreachable, match="stopping; gave up waiting"):
            await outage.call(_away)
        await asyncio.sleep(0)  # no cancellation is left pending on the task
        return "stopped cleanly"

    task = asyncio.create_task(role())
    await until(lambda: outage.degraded, 5, what="the outage to start")
    outage.stop_waiting()
    assert await asyncio.wait_for(task, 5) == "stopped cleanly"


async def test_a_call_made_while_stopping_with_redis_away_gives_up_without_trying() -> None:
    outage = Outage("redis://test", limit_s=60, backoff_s=0.001, max_backoff_s=0.001)
    waiting = asyncio.create_task(outage.call(_away))
    await until(lambda: outage.degraded, 5, what="the outage to start")
    outage.stop_waiting()
    with pytest.raises(RedisUnreachable):
        await waiting
    tried = 0

    async def counted() -> None:
        nonlocal tried
        tried += 1

    with pytest.raises(RedisUnreachable, match="stopping"):
        await outage.call(counted)
    assert tried == 0


async def test_a_stopping_role_still_gets_answers_while_redis_answers() -> None:
    outage = Outage("redis://test", limit_s=60)
    outage.stop_waiting()

    async def ack() -> str:
        return "acknowledged"

    assert await outage.call(ack) == "acknowledged"
    assert not outage.degraded


async def test_a_call_its_owner_cancelled_stays_cancelled_when_stop_waiting_cuts_it() -> None:
    outage = Outage("redis://test", limit_s=60, backoff_s=0.5, max_backoff_s=2)
    task = asyncio.create_task(outage.call(_away))
    await until(lambda: outage.degraded, 5, what="the outage to start")
    task.cancel()
    outage.stop_waiting()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_stopping_role_cuts_calls_a_hung_redis_neither_answers_nor_fails() -> None:
    outage = Outage("redis://test", limit_s=60, stop_grace_s=0.2)
    hung = asyncio.Event()  # never set: a server that accepted the command and went silent
    sent = asyncio.Event()

    async def silent() -> None:
        sent.set()
        await hung.wait()

    in_flight = asyncio.create_task(outage.call(silent))
    await asyncio.wait_for(sent.wait(), 5)
    outage.stop_waiting()
    with pytest.raises(RedisUnreachable, match=r"stopping; no answer within 0\.2 s"):
        await asyncio.wait_for(in_flight, 5)
    with pytest.raises(RedisUnreachable, match="no answer"):  # Redis hangs: no new wait
        await asyncio.wait_for(outage.call(silent), 0.1)


async def test_a_call_made_after_the_stop_waits_for_a_silent_redis_no_longer_than_the_grace() -> (
    None
):
    outage = Outage("redis://test", limit_s=60, stop_grace_s=0.2)
    outage.stop_waiting()
    hung = asyncio.Event()

    async def silent() -> None:
        await hung.wait()

    with pytest.raises(RedisUnreachable, match=r"no answer within 0\.2 s"):
        await asyncio.wait_for(outage.call(silent), 5)
