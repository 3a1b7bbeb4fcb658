"""The bus behaviour suite: every test runs against the in-process bus and real Redis Streams."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from barfinex_cli.bus.base import Bus, Delivery, consume
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import CandleClosed
from polling import until

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candle(i: int, symbol: str = "BTC/USDT") -> Envelope[Any]:
    price = Decimal(100 + i)
    return make_event(
        CandleClosed(
            exchange="replay",
            symbol=symbol,
            timeframe="1m",
            open_time=T0 + timedelta(minutes=i),
            open=price,
            high=price + 1,
            low=price - 1,
            close=price,
            volume=Decimal("1.5"),
        ),
        source="test",
    )


async def drain(consumer: Any, *, ack: bool = True, rounds: int = 20) -> list[Delivery]:
    got: list[Delivery] = []
    for _ in range(rounds):
        batch = await consumer.fetch(100, 50)
        if not batch:
            break
        got.extend(batch)
        if ack:
            await consumer.ack(batch)
    return got


async def drain_until(consumer: Any, count: int, within_s: float = 10.0) -> list[Delivery]:
    """Drain until `count` deliveries came: a Redis consumer finds a new stream within a second."""
    got: list[Delivery] = []

    async def enough() -> bool:
        got.extend(await drain(consumer))
        return len(got) >= count

    await until(enough, within_s, what=f"{count} deliveries")
    return got


async def test_events_of_a_type_arrive_in_publish_order(bus: Bus) -> None:
    events = [candle(i) for i in range(50)]
    await bus.publish_many(events[:25])
    for e in events[25:]:
        await bus.publish(e)
    consumer = await bus.consumer("g", "c1", ["market.*"], start="0")
    got = await drain(consumer)
    assert [d.event.id for d in got] == [e.id for e in events]
    assert [d.event for d in got] == events


async def test_start_from_now_skips_history_but_sees_new_events(bus: Bus) -> None:
    await bus.publish(candle(0))
    consumer = await bus.consumer("g", "c1", ["market.candle"], start="$")
    new = candle(1)
    await bus.publish(new)
    assert [d.event.id for d in await drain(consumer)] == [new.id]


async def test_two_consumers_of_one_group_share_the_work(bus: Bus) -> None:
    events = [candle(i) for i in range(100)]
    c1 = await bus.consumer("g", "c1", ["market.candle"], start="0")
    c2 = await bus.consumer("g", "c2", ["market.candle"], start="0")
    await bus.publish_many(events)
    seen: dict[str, list[str]] = {"c1": [], "c2": []}
    for _ in range(20):
        b1 = await c1.fetch(10, 20)
        await c1.ack(b1)
        b2 = await c2.fetch(10, 20)
        await c2.ack(b2)
        seen["c1"] += [d.event.id for d in b1]
        seen["c2"] += [d.event.id for d in b2]
        if not b1 and not b2:
            break
    assert seen["c1"] and seen["c2"]
    assert not set(seen["c1"]) & set(seen["c2"])
    assert sorted(seen["c1"] + seen["c2"]) == sorted(e.id for e in events)


async def test_consumer_killed_before_ack_gets_its_events_again_on_restart(bus: Bus) -> None:
    events = [candle(i) for i in range(10)]
    await bus.publish_many(events)
    first = await bus.consumer("g", "worker", ["market.candle"], start="0")
    taken = await first.fetch(5, 50)
    assert [d.event.id for d in taken] == [e.id for e in events[:5]]
    del first  # crashed: nothing acknowledged
    restarted = await bus.consumer("g", "worker", ["market.candle"], start="0")
    got = await drain(restarted)
    assert [d.event.id for d in got] == [e.id for e in events]
    again = await bus.consumer("g", "worker", ["market.candle"], start="0")
    assert await drain(again) == []


async def test_pending_events_of_an_idle_consumer_are_claimed_by_another(bus: Bus) -> None:
    events = [candle(i) for i in range(3)]
    await bus.publish_many(events)
    dead = await bus.consumer("g", "dead", ["market.candle"], start="0", claim_idle_ms=100)
    assert len(await dead.fetch(10, 50)) == 3
    await asyncio.sleep(0.25)
    alive = await bus.consumer("g", "alive", ["market.candle"], start="0", claim_idle_ms=100)
    got = await drain(alive)
    assert sorted(d.event.id for d in got) == sorted(e.id for e in events)


async def test_duplicate_delivery_is_handled_once(bus: Bus) -> None:
    event = candle(1)
    await bus.publish(event)
    await bus.publish(event)  # the same id published twice, as a retrying producer would
    handled: list[str] = []
    stop = asyncio.Event()
    consumer = await bus.consumer("g", "c1", ["market.candle"], start="0")

    async def handler(e: Envelope[Any]) -> None:
        handled.append(e.id)

    task = asyncio.create_task(consume(consumer, handler, stop, dedup=bus.deduplicator()))
    await asyncio.sleep(0.3)
    stop.set()
    await task
    assert handled == [event.id]
    assert await drain(consumer) == []  # the duplicate was acknowledged too


async def test_garbage_is_dead_lettered_and_the_consumer_keeps_going(bus: Bus) -> None:
    good = candle(1)
    consumer = await bus.consumer("g", "c1", ["market.candle"], start="0")
    await bus.publish_raw("market.candle", b"{not json")
    await bus.publish_raw("market.candle", b'{"type": "market.candle", "id": 1}')
    await bus.publish(good)
    got = await drain(consumer)
    assert [d.event.id for d in got] == [good.id]
    assert consumer.dead_lettered == 2
    letters = await bus.dead_letters()
    assert [x.data for x in letters] == [b"{not json", b'{"type": "market.candle", "id": 1}']
    assert "Invalid JSON" in letters[0].error
    assert letters[1].type == "market.candle"


async def test_tail_sees_events_published_after_it_started(bus: Bus) -> None:
    await bus.publish(candle(0))  # history: a tail from now must not show it
    received: list[str] = []

    async def reader() -> None:
        async for d in bus.tail(["market.*"], block_ms=100):
            received.append(d.event.id)
            if len(received) == 2:
                return

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.2)
    live = [candle(1), candle(2)]
    for e in live:
        await bus.publish(e)
    await asyncio.wait_for(task, 5)
    assert received == [e.id for e in live]


async def test_tail_from_an_entry_id_replays_what_followed_it(bus: Bus) -> None:
    ids = await bus.publish_many([candle(i) for i in range(3)])
    got: list[str] = []
    async for d in bus.tail(["market.candle"], since=ids[0], block_ms=100):
        got.append(d.entry_id)
        if len(got) == 2:
            break
    assert got == ids[1:]


async def test_a_stream_created_after_joining_is_read_from_its_start(bus: Bus) -> None:
    await bus.publish(candle(0))
    consumer = await bus.consumer("g", "c1", ["*"], start="$")
    from barfinex_cli.contracts.market import TradeExecuted

    trade = make_event(
        TradeExecuted(
            exchange="replay",
            symbol="BTC/USDT",
            trade_id="t1",
            price=Decimal("100.5"),
            amount=Decimal("0.1"),
            side="buy",
            time=T0,
        ),
        source="test",
    )
    await bus.publish(trade)
    got = await drain_until(consumer, 1)  # the new stream is found within a discovery interval
    assert [d.event.id for d in got] == [trade.id]


async def test_stop_mid_batch_acks_the_handled_part_and_leaves_the_rest_pending(
    bus: Bus,
) -> None:
    events = [candle(i) for i in range(6)]
    await bus.publish_many(events)
    stop = asyncio.Event()
    handled: list[str] = []
    consumer = await bus.consumer("g", "c1", ["market.candle"], start="0")

    async def handler(e: Envelope[Any]) -> None:
        handled.append(e.id)
        if len(handled) == 2:
            stop.set()

    await consume(consumer, handler, stop, batch=10)
    assert handled == [e.id for e in events[:2]]
    restarted = await bus.consumer("g", "c1", ["market.candle"], start="0")
    assert [d.event.id for d in await drain(restarted)] == [e.id for e in events[2:]]


async def test_an_event_over_the_size_limit_is_dead_lettered_with_its_size(bus: Bus) -> None:
    from barfinex_cli.contracts.codec import DEFAULT_MAX_EVENT_BYTES, encode
    from barfinex_cli.contracts.inspector import AlertRaised

    consumer = await bus.consumer("g", "c1", ["inspector.alert"], start="0")
    huge = make_event(AlertRaised(severity="warning", message="x" * 300_000), source="test")
    small = make_event(AlertRaised(severity="warning", message="fits"), source="test")
    await bus.publish_raw("inspector.alert", encode(huge))  # well-formed, only too large
    await bus.publish(small)
    got = await drain(consumer)
    assert [d.event.id for d in got] == [small.id]
    assert consumer.dead_lettered == 1
    (letter,) = await bus.dead_letters()
    assert letter.error == (
        f"event of {len(encode(huge))} bytes is over the limit of {DEFAULT_MAX_EVENT_BYTES} "
        "bytes (max_event_bytes)"
    )
    assert letter.size == len(encode(huge))
    assert letter.data == encode(huge)[:DEFAULT_MAX_EVENT_BYTES]  # the dead letter is bounded too


async def test_an_outcome_published_with_its_input_marked_handled_is_not_handled_again(
    bus: Bus,
) -> None:
    from barfinex_cli.bus.base import Handled
    from barfinex_cli.contracts.advisor import SignalDropped

    inputs = [candle(0), candle(1)]
    await bus.publish_many(inputs)
    worker = await bus.consumer("g", "worker", ["market.candle"], start="0")
    assert [d.event.id for d in await worker.fetch(10, 50)] == [e.id for e in inputs]
    for event in inputs:
        outcome = SignalDropped(signal_id=event.id, reason="stale_signal", detail="test")
        marked = Handled("g", event.id) if event is inputs[0] else None
        await bus.publish_many([make_event(outcome, source="test", parent=event)], handled=marked)
    # the worker dies here, before acknowledging either input: both are delivered again, and
    # only the one published without its mark is new to the group
    restarted = await bus.consumer("g", "worker", ["market.candle"], start="0")
    again = await restarted.fetch(10, 50)
    assert [d.event.id for d in again] == [e.id for e in inputs]
    seen = await bus.deduplicator().seen("g", [e.id for e in inputs])
    assert seen == [True, False]
    handled: list[str] = []
    stop = asyncio.Event()

    async def handler(e: Envelope[Any]) -> None:
        handled.append(e.id)
        stop.set()

    third = await bus.consumer("g", "worker", ["market.candle"], start="0")
    await consume(third, handler, stop, dedup=bus.deduplicator(), batch=10)
    assert handled == [inputs[1].id]
    outcomes = await bus.consumer("audit", "r", ["advisor.*"], start="0")
    assert len(await drain(outcomes)) == 2  # each outcome on the stream once
