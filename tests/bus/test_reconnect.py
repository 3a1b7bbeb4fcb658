"""The Redis bus rides out a dropped connection or a restarted Redis: nothing lost, nothing twice.

Every test runs its own `redis-server` on a spare port (never the shared one) and breaks it for
real: SIGKILL and a start on the same port, with persistence (every write fsynced, so what was
acknowledged survives) or without (Redis comes back empty); or a loopback proxy that lets a
request reach Redis but loses its reply.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from barfinex_cli.bus.base import consume
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.errors import RedisUnreachable
from bus.redis_faults import DroppingProxy, RedisServer
from polling import until as until  # other modules import it from here

pytestmark = pytest.mark.redis

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candle(i: int) -> Envelope[Any]:
    price = Decimal(100 + i)
    return make_event(
        CandleClosed(
            exchange="replay", symbol="BTC/USDT", timeframe="1m",
            open_time=T0 + timedelta(minutes=i), open=price, high=price + 1,
            low=price - 1, close=price, volume=Decimal("1.5"),
        ),
        source="test",
    )  # fmt: skip


@pytest.fixture
async def persistent(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path, persistent=True)
    await server.start()
    yield server
    server.stop()


@pytest.fixture
async def volatile(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    yield server
    server.stop()


class Run:
    """A producer publishing batches and a consumer group handling them, on one test server."""

    def __init__(self, url: str, *, outage_s: float = 30.0) -> None:
        self.producer = RedisStreamsBus(url, "faults", outage_s=outage_s)
        self.reader = RedisStreamsBus(url, "faults", outage_s=outage_s)
        self.handled: list[str] = []
        self.stop = asyncio.Event()

    async def consume(self) -> int:
        consumer = await self.reader.consumer("detector.t", "t", ["market.*"], start="0")
        self.consumer = consumer

        async def handle(event: Envelope[Any]) -> None:
            self.handled.append(event.id)

        return await consume(
            consumer, handle, self.stop, dedup=self.reader.deduplicator(), block_ms=100
        )

    async def publish(self, events: list[Envelope[Any]], batch: int, pause_s: float) -> None:
        for i in range(0, len(events), batch):
            await self.producer.publish_many(events[i : i + batch])
            await asyncio.sleep(pause_s)

    async def close(self) -> None:
        await self.producer.close()
        await self.reader.close()


async def test_a_killed_and_restarted_redis_loses_no_event_and_doubles_none(
    persistent: RedisServer,
) -> None:
    run = Run(persistent.url)
    events = [candle(i) for i in range(300)]
    consuming = asyncio.create_task(run.consume())
    publishing = asyncio.create_task(run.publish(events, batch=10, pause_s=0.01))
    await until(lambda: len(run.handled) >= 60)
    persistent.stop(kill=True)  # mid-run: both sides are between calls or inside one
    await until(lambda: run.producer.degraded or run.reader.degraded)
    await asyncio.sleep(0.3)
    await persistent.start()
    await asyncio.wait_for(publishing, 30)
    await until(lambda: len(run.handled) >= len(events))
    run.stop.set()
    await asyncio.wait_for(consuming, 10)
    stream_len = await run.reader.redis.xlen(run.reader.key("market.candle"))
    assert not run.producer.degraded and not run.reader.degraded
    await run.close()
    assert run.handled == [e.id for e in events]  # every one, in order, once
    assert stream_len == len(events)  # and on the bus once: no publish was sent twice


async def test_a_redis_restarted_empty_gets_its_groups_and_types_back(
    volatile: RedisServer,
) -> None:
    run = Run(volatile.url)
    before, after = [candle(i) for i in range(20)], [candle(i) for i in range(20, 40)]
    consuming = asyncio.create_task(run.consume())
    await run.publish(before, batch=5, pause_s=0)
    await until(lambda: len(run.handled) == len(before))
    volatile.stop(kill=True)
    await asyncio.sleep(0.2)
    await volatile.start()  # empty: no streams, no groups, no `_types`
    await run.publish(after, batch=5, pause_s=0)
    await until(lambda: len(run.handled) == len(before) + len(after))
    run.stop.set()
    await asyncio.wait_for(consuming, 10)
    check = aioredis.Redis(port=volatile.port)
    types = await check.smembers(run.producer.types_key)
    groups = await check.xinfo_groups(run.producer.key("market.candle"))
    await check.aclose()
    await run.close()
    assert run.handled == [e.id for e in before + after]
    assert types == {b"market.candle"}
    assert [g["name"] for g in groups] == [b"detector.t"]
    assert run.consumer.rejoined >= 1


async def test_a_batch_whose_reply_was_lost_is_not_published_again(
    persistent: RedisServer,
) -> None:
    proxy = DroppingProxy(persistent.port)
    await proxy.start()
    bus = RedisStreamsBus(proxy.url, "faults")
    events = [candle(i) for i in range(5)]
    await bus.ping()
    proxy.arm()  # Redis applies the batch; its reply never arrives
    ids = await bus.publish_many(events)
    entries = await bus.redis.xrange(bus.key("market.candle"))
    await bus.close()
    await proxy.close()
    assert proxy.dropped == 1
    assert [e[0].decode() for e in entries] == ids  # found where it landed, not sent again


async def test_entries_read_when_the_reply_was_lost_are_delivered_after_reconnecting(
    persistent: RedisServer,
) -> None:
    proxy = DroppingProxy(persistent.port)
    await proxy.start()
    bus = RedisStreamsBus(proxy.url, "faults")
    first, events = candle(0), [candle(i) for i in range(1, 6)]
    await bus.publish(first)
    consumer = await bus.consumer("g", "c", ["market.candle"], start="0")
    await consumer.ack(await consumer.fetch(100, 50))  # joined, past its start-up reads
    await bus.publish_many(events)
    proxy.arm()  # XREADGROUP makes them pending on us; the reply with them is lost
    got = await consumer.fetch(100, 100)
    await consumer.ack(got)
    again = await consumer.fetch(100, 100)
    await bus.close()
    await proxy.close()
    assert proxy.dropped == 1
    assert [d.event.id for d in got] == [e.id for e in events]
    assert again == []


async def test_an_outage_is_logged_once_and_the_bus_reports_degraded_while_it_lasts(
    volatile: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    bus = RedisStreamsBus(volatile.url, "faults")
    await bus.publish(candle(0))
    volatile.stop(kill=True)
    caplog.set_level(logging.INFO, logger="bfx.bus")
    waiting = [asyncio.create_task(bus.publish(candle(i))) for i in range(1, 4)]
    await until(lambda: bus.degraded)
    since = bus.outage_since
    await asyncio.sleep(0.5)  # several retries each
    assert bus.degraded and bus.outage_since == since and since is not None
    await volatile.start()
    await asyncio.wait_for(asyncio.gather(*waiting), 20)
    await bus.close()
    assert not bus.degraded and bus.outage_since is None
    messages = [r.getMessage() for r in caplog.records if r.name == "bfx.bus"]
    assert messages == [
        "Redis unreachable; retrying with backoff",
        "Redis answers again",
        "Redis came back without what was published before the outage (restarted without "
        "persistence?): events on these streams not yet handled are lost",  # candle 0: once
    ]


@pytest.mark.parametrize(
    "call",
    [
        lambda bus: bus.publish(candle(1)),
        lambda bus: bus.stream_types(),
    ],
    ids=["publish", "read"],
)
async def test_an_outage_longer_than_redis_outage_s_ends_the_call_naming_url_time_and_fix(
    volatile: RedisServer, call: Callable[[RedisStreamsBus], Awaitable[object]]
) -> None:
    bus = RedisStreamsBus(volatile.url, "faults", outage_s=0.5)
    await bus.ping()
    volatile.stop(kill=True)
    with pytest.raises(RedisUnreachable) as caught:
        await asyncio.wait_for(call(bus), 10)
    await bus.close()
    message = str(caught.value)
    assert volatile.url in message
    assert re.search(r"no answer for \d+\.\d s, longer than redis_outage_s=0.5", message)
    assert "redis-server" in message
    assert caught.value.exit_code == 3


async def test_a_consumer_waits_out_an_outage_inside_fetch(volatile: RedisServer) -> None:
    bus = RedisStreamsBus(volatile.url, "faults")
    consumer = await bus.consumer("g", "c", ["market.candle"], start="0")
    await bus.publish(candle(0))
    assert len(await consumer.fetch(10, 100)) == 1
    volatile.stop(kill=True)
    fetching = asyncio.create_task(consumer.fetch(10, 100))
    await until(lambda: bus.degraded)
    await volatile.start()
    event = candle(1)
    publisher = RedisStreamsBus(volatile.url, "faults")
    await publisher.publish(event)
    got = await asyncio.wait_for(fetching, 20)
    for _ in range(50):  # the fetch may have rejoined before the publish landed
        if got:
            break
        got = await consumer.fetch(10, 100)
    await publisher.close()
    await bus.close()
    assert [d.event.id for d in got] == [event.id]
