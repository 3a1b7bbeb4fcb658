"""`tail_forever`: a live tail that outlives bus failures and resumes after the last entry it gave.

Runs on both buses. The failure cases use a real fault: a Redis server this test owns, stopped
and started again mid-tail; and, for the in-process bus (which cannot fail by itself), a wrapper
whose tail breaks the way a dropped connection breaks it, after a given number of deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from barfinex_cli.bus.base import Bus, Delivery, entry_id_key
from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.bus.tail import tail_forever
from barfinex_cli.contracts.apps import HeartbeatSent
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import TickerUpdated
from barfinex_cli.contracts.times import from_ms
from bus.redis_faults import RedisServer
from polling import until

T0 = from_ms(1_700_000_000_000)


def _ticker(last: int) -> Envelope[Any]:
    return make_event(
        TickerUpdated(exchange="x", symbol="BTC/USDT", last=last, time=T0), source="test"
    )


def _beat(uptime: float) -> Envelope[Any]:
    return make_event(
        HeartbeatSent(app_id="a", name="a", role="detector", last_seen=T0, uptime_s=uptime),
        source="test",
    )


async def _no_wait(_: float) -> None:
    await asyncio.sleep(0)


async def _take(it: AsyncIterator[Delivery], n: int, within: float = 10) -> list[Delivery]:
    async def take() -> list[Delivery]:
        return [await anext(it) for _ in range(n)]

    return await asyncio.wait_for(take(), within)


async def test_tail_forever_yields_what_is_published_from_now_on_matching_the_patterns(
    bus: Bus,
) -> None:
    old = await bus.publish(_ticker(1))  # before the tail: not wanted
    ahead_ms = entry_id_key(old)[0] + 1 - time.time_ns() // 1_000_000
    await asyncio.sleep(max(ahead_ms, 0) / 1000 + 0.001)  # so "now" is a later millisecond
    tail = tail_forever(bus, ["market.*"], block_ms=100)
    first = asyncio.ensure_future(anext(tail))
    await asyncio.sleep(0)  # the tail takes its position "now" as it starts
    sent = [_ticker(2), _beat(1.0), _ticker(3)]
    for event in sent:
        await bus.publish(event)
    got = [await asyncio.wait_for(first, 10), *await _take(tail, 1)]
    assert [d.event.id for d in got] == [sent[0].id, sent[2].id]
    await tail.aclose()


class _Breaking:
    """A bus whose tail fails like a dropped connection after `after` deliveries, `times` times."""

    def __init__(self, bus: Bus, after: int, times: int) -> None:
        self.bus = bus
        self.after = after
        self.times = times
        self.sinces: list[str | None] = []

    async def tail(
        self, types: Sequence[str] = ("*",), *, since: str | None = None, block_ms: int = 1000
    ) -> AsyncIterator[Delivery]:
        self.sinces.append(since)
        given = 0
        async for delivery in self.bus.tail(types, since=since, block_ms=block_ms):
            if self.times and given == self.after:
                self.times -= 1
                raise ConnectionError("connection reset by peer")
            given += 1
            yield delivery


async def test_after_a_failure_the_tail_resumes_after_the_last_entry_it_gave(bus: Bus) -> None:
    breaking = _Breaking(bus, after=2, times=2)
    errors: list[tuple[str, int]] = []
    tail = tail_forever(
        breaking,  # type: ignore[arg-type]
        ["market.*"],
        since="0-0",
        block_ms=100,
        sleep=_no_wait,
        on_error=lambda exc, n: errors.append((str(exc), n)),
    )
    sent = [_ticker(i) for i in range(7)]
    for event in sent:
        await bus.publish(event)
    got = await _take(tail, 7)
    await tail.aclose()
    assert [d.event.id for d in got] == [e.id for e in sent]  # none lost, none twice
    assert errors == [("connection reset by peer", 1), ("connection reset by peer", 1)]
    assert breaking.sinces[1] == got[1].entry_id  # resumed after the last one delivered


async def test_failures_in_a_row_back_off_up_to_the_cap() -> None:
    class Down:
        def tail(self, *args: object, **kwargs: object) -> AsyncIterator[Delivery]:
            raise ConnectionError("refused")

    waits: list[float] = []
    done = asyncio.Event()

    async def record(delay: float) -> None:
        waits.append(delay)
        if len(waits) == 8:
            done.set()
        await asyncio.sleep(0)

    counts: list[int] = []
    tail = tail_forever(
        Down(),  # type: ignore[arg-type]
        ["*"],
        sleep=record,
        backoff_s=0.1,
        max_backoff_s=1.0,
        on_error=lambda _, n: counts.append(n),
    )
    reader = asyncio.ensure_future(anext(tail))
    await asyncio.wait_for(done.wait(), 10)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    assert counts[:8] == list(range(1, 9))
    # The shared policy (barfinex_cli.backoff): base * 2**(n-1) plus up to base, within the cap.
    lows = [min(1.0, 0.1 * 2**i) for i in range(8)]
    assert all(
        low <= wait <= min(1.0, low + 0.1) for wait, low in zip(waits[:8], lows, strict=True)
    ), waits


# --- a real Redis restart -----------------------------------------------------------------------


@pytest.mark.redis
async def test_the_tail_survives_a_redis_restart_and_misses_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, persistent=True)
    errors: list[int] = []
    await server.start()
    try:
        producer = RedisStreamsBus(server.url, "restart")
        reader_bus = RedisStreamsBus(server.url, "restart")
        tail = tail_forever(
            reader_bus, ["market.*"], since="0-0", block_ms=100, backoff_s=0.05,
            max_backoff_s=0.2, on_error=lambda _, n: errors.append(n),
        )  # fmt: skip
        before = [_ticker(i) for i in range(3)]
        for event in before:
            await producer.publish(event)
        got = await _take(tail, 3)
        pending = asyncio.ensure_future(_take(tail, 3, within=30))
        server.stop(kill=False)  # a clean shutdown: it saves its streams
        # the bus waits it out inside its reads
        await until(lambda: reader_bus.degraded, 5, what="the tail to notice Redis went away")
        await server.start()  # same port, same data
        after = [_ticker(i) for i in range(3, 6)]
        for event in after:
            await producer.publish(event)
        got += await pending
        await tail.aclose()
        await producer.close()
        await reader_bus.close()
    finally:
        server.stop()
    assert [d.event.id for d in got] == [e.id for e in before + after]
    assert errors == []  # the outage never reached the tail: the bus rode it out
    assert not reader_bus.degraded


async def test_memory_bus_tail_from_a_position_skips_what_came_before() -> None:
    bus = MemoryBus("pos")
    first = await bus.publish(_ticker(1))
    second = _ticker(2)
    await bus.publish(second)
    tail = tail_forever(bus, ["*"], since=first, block_ms=50)
    (got,) = await _take(tail, 1)
    await tail.aclose()
    assert got.event.id == second.id
