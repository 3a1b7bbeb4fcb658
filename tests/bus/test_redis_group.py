"""A consumer group that a Redis restarted empty lost is made again without missing an entry.

When Redis comes back without its data, every consumer group is gone with the streams. The
unlucky order is the one tested here: the publisher reconnects first and publishes right after
the restart, before the consumer has made any call, so the streams exist again (made by XADD)
but hold no group. The consumer's next read meets NOGROUP and must make the group at `0` — the
start of the new stream — not at `$`, which would skip what was published between the restart
and that moment. The same holds for a stream that first appears after the restart, and for a
consumer whose group was first made at `$` (as a detector's is).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from barfinex_cli.bus.base import StartFrom
from barfinex_cli.bus.redis_group import RedisConsumer
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import TradeExecuted
from bus.redis_faults import RedisServer
from bus.test_reconnect import T0, candle

pytestmark = pytest.mark.redis


def trade(i: int) -> Envelope[Any]:
    return make_event(
        TradeExecuted(
            exchange="replay", symbol="BTC/USDT", trade_id=f"t{i}", price=Decimal(100 + i),
            amount=Decimal("0.5"), side="buy", time=T0 + timedelta(seconds=i),
        ),
        source="test",
    )  # fmt: skip


async def _drain(consumer: RedisConsumer, want: int, within_s: float = 20.0) -> list[str]:
    """Fetch and acknowledge until `want` events came (or `within_s` passed); return their ids.

    A stream new to the group is found by the consumer's next look for streams (once a second),
    so this polls rather than stopping at the first empty fetch.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    got: list[str] = []
    while len(got) < want and loop.time() < deadline:
        batch = await consumer.fetch(100, 200)
        await consumer.ack(batch)
        got += [d.event.id for d in batch]
    return got


@pytest.mark.parametrize("start", ["$", "0"])
async def test_entries_published_right_after_an_empty_restart_reach_the_lost_group(
    tmp_path: Path, start: StartFrom
) -> None:
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    publisher = RedisStreamsBus(server.url, "rejoin", outage_s=30)
    reader = RedisStreamsBus(server.url, "rejoin", outage_s=30)
    try:
        old = candle(0)
        await publisher.publish(old)
        consumer = await reader.consumer("detector.t", "t", ["market.*"], start=start)
        before = [candle(1), candle(2)]
        await publisher.publish_many(before)
        read = [e.id for e in ([] if start == "$" else [old]) + before]
        assert await _drain(consumer, len(read)) == read

        server.stop(kill=True)
        await server.start()  # empty: no stream, no group, no `_types`
        # the publisher is first: new candles, and a type the group has never read, all on
        # streams that exist again before the consumer's next call
        after, new = [candle(i) for i in range(3, 8)], trade(1)
        await publisher.publish_many(after[:2])
        await publisher.publish(new)
        await publisher.publish_many(after[2:])
        got = await _drain(consumer, len(after) + 1)
    finally:
        await publisher.close()
        await reader.close()
        server.stop()
    assert publisher.lost_in_outage == ("market.candle",)
    assert consumer.rejoined == 1
    assert [i for i in got if i != new.id] == [e.id for e in after]  # every one, in order, once
    assert got.count(new.id) == 1  # and the entry of the stream new since the restart


async def test_a_group_that_joined_before_its_streams_existed_is_waited_for_after_an_empty_restart(
    tmp_path: Path,
) -> None:
    """A role that joined before anything was published has no group to lose, so it never meets
    NOGROUP; Redis restarted empty still lost its registration, and a run's end (`behind`) must
    not stop it before it has read what the publisher wrote after the restart."""
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    bus = RedisStreamsBus(server.url, "early", outage_s=30)
    try:
        await bus.consumer("recorder", "r", ["*"], start="0")  # no stream yet: nothing joined
        server.stop(kill=True)
        restarting = asyncio.create_task(_start_later(server))
        await bus.publish(candle(1))  # waits out the outage; the first call after it
        await restarting
        assert ("recorder", "market.candle") in await bus.behind()
    finally:
        await bus.close()
        server.stop()


async def _start_later(server: RedisServer) -> None:
    await asyncio.sleep(0.3)
    await server.start()
