"""`Bus.behind` and `Settle`: when a stack has finished what was published, on both transports.

The lock-step replay (docs/backtest.md, "Parity") plays the next market moment only once no
consumer group of a running role is behind; these tests pin down what "behind" means.
"""

from __future__ import annotations

import asyncio

from barfinex_cli.bus.base import Bus
from barfinex_cli.bus.settle import Settle
from bus.test_semantics import candle, drain_until


async def test_a_group_with_entries_not_yet_delivered_is_behind_until_it_reads_and_acks(
    bus: Bus,
) -> None:
    consumer = await bus.consumer("det", "c1", ["market.candle"], start="$")
    assert await bus.behind() == []
    await bus.publish(candle(0))
    assert await bus.behind() == [("det", "market.candle")]
    got = await consumer.fetch(10, 50)
    assert len(got) == 1
    assert await bus.behind() == [("det", "market.candle")]  # delivered, not acknowledged
    await consumer.ack(got)
    assert await bus.behind() == []


async def test_ignored_groups_are_not_waited_for(bus: Bus) -> None:
    await bus.consumer("recorder", "r", ["*"], start="$")
    await bus.publish(candle(0))
    assert await bus.behind() == [("recorder", "market.candle")]
    assert await bus.behind(ignore={"recorder"}) == []


async def test_a_new_stream_matching_a_group_is_behind_before_the_group_joins_it(
    bus: Bus,
) -> None:
    consumer = await bus.consumer("ins", "c1", ["market.*"], start="$")
    await bus.consumer("other", "c2", ["detector.*"], start="$")
    await bus.publish(candle(0))
    # like the first order.filled of a run: the stream is new, the group has not joined it yet
    assert await bus.behind() == [("ins", "market.candle")]
    got = await drain_until(consumer, 1)  # a Redis consumer looks for new streams once a second
    assert len(got) == 1
    assert await bus.behind() == []


async def test_settle_flushes_what_is_queued_and_returns_once_every_group_caught_up(
    bus: Bus,
) -> None:
    consumer = await bus.consumer("det", "c1", ["market.candle"], start="$")
    queued = [candle(1), candle(2)]

    async def flush() -> None:
        batch = list(queued)
        queued.clear()
        await bus.publish_many(batch)

    async def role() -> int:
        handled = 0
        while handled < 2:
            got = await consumer.fetch(10, 20)
            await consumer.ack(got)
            handled += len(got)
        return handled

    settle = Settle(bus, flush, lambda: bool(queued), poll_s=0.002, timeout_s=10)
    reader = asyncio.create_task(role())
    assert await settle.wait()
    assert not queued and reader.done() and reader.result() == 2
    assert await bus.behind() == []


async def test_settle_gives_up_after_its_timeout_and_names_who_is_behind(bus: Bus) -> None:
    await bus.consumer("stuck", "c1", ["market.candle"], start="$")
    await bus.publish(candle(0))

    async def nothing_queued() -> None:
        return None

    settle = Settle(bus, nothing_queued, lambda: False, timeout_s=0.2, poll_s=0.01)
    assert not await settle.wait()
    assert settle.timeouts == 1 and settle.last_behind == [("stuck", "market.candle")]
