"""The instance lease (one run per detector name) and reading back the last published signal."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.detector.resume import InstanceLease, last_signal_open_ms
from barfinex_cli.errors import UsageError

T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def test_a_second_run_of_a_name_refuses_while_the_first_renews_its_lease(
    redis_bus: RedisStreamsBus,
) -> None:
    first = InstanceLease(redis_bus, "momentum", lease_s=1.0)
    await first.acquire()
    stop = asyncio.Event()
    keeping = asyncio.create_task(first.keep(stop))
    try:
        # the second run's own lease is an hour, so it would wait an hour before giving up on
        # its own: refused within the bound, it was refused because it saw the first one renew
        second = InstanceLease(redis_bus, "momentum", lease_s=3600.0)
        with pytest.raises(UsageError, match="--instance NAME") as refused:
            await asyncio.wait_for(second.acquire(), 60)
        assert refused.value.exit_code == 2
        assert "'momentum' is already running" in str(refused.value)
        other = InstanceLease(redis_bus, "momentum-2", lease_s=1.0)
        await other.acquire()  # another name is free
        await other.release()
    finally:
        stop.set()
        await keeping
        await first.release()
    third = InstanceLease(redis_bus, "momentum", lease_s=1.0)
    await third.acquire()  # released on a graceful stop: the next run starts at once
    await third.release()


async def test_a_run_restarted_after_a_crash_takes_the_lease_once_it_lapses(
    redis_bus: RedisStreamsBus, caplog: pytest.LogCaptureFixture
) -> None:
    crashed = InstanceLease(redis_bus, "momentum", lease_s=1.0)
    await crashed.acquire()  # and never renews nor releases it: the process was killed
    restarted = InstanceLease(redis_bus, "momentum", lease_s=1.0)
    with caplog.at_level(logging.INFO, logger="bfx.detector"):
        await asyncio.wait_for(restarted.acquire(), 60)
    waited = [r for r in caplog.records if "waiting for its lease" in r.getMessage()]
    assert len(waited) == 1  # it found the name held and waited, rather than taking it over
    assert await redis_bus.redis.get(restarted.key) == restarted.token.encode()
    with pytest.raises(UsageError, match="already running"):
        await crashed.renew()  # the crashed run, were it to wake up, must stop: never split
    await restarted.release()


async def test_names_are_held_per_in_process_bus() -> None:
    bus = MemoryBus("lease")
    first = InstanceLease(bus, "momentum")
    await first.acquire()
    with pytest.raises(UsageError, match="--instance"):
        await InstanceLease(bus, "momentum").acquire()
    await InstanceLease(MemoryBus("other"), "momentum").acquire()  # another bus, another world
    await first.release()
    await InstanceLease(bus, "momentum").acquire()
    await bus.close()


def _signal(source_instance: str, symbol: str, minute: int) -> SignalGenerated:
    return SignalGenerated(
        strategy="momentum", instance=source_instance, exchange="synthetic", symbol=symbol,
        timeframe="1m", candle_time=T0 + timedelta(minutes=minute), direction="long",
        score=2.0, threshold=2.0, attribution=[],
    )  # fmt: skip


async def test_the_last_signal_of_an_instance_and_symbol_is_read_back_from_the_stream(
    redis_bus: RedisStreamsBus,
) -> None:
    since = to_ms(datetime.now(UTC)) - 60_000
    for minute in range(5):
        await redis_bus.publish(make_event(_signal("a", "BTC/USDT", minute), source="detector/a"))
    await redis_bus.publish(make_event(_signal("a", "ETH/USDT", 9), source="detector/a"))
    for minute in range(10, 10 + 450):  # another instance keeps signalling after it
        await redis_bus.publish(make_event(_signal("b", "BTC/USDT", minute), source="detector/b"))

    found = await last_signal_open_ms(redis_bus, "detector/a", "BTC/USDT", since)
    assert found == to_ms(T0 + timedelta(minutes=4))
    eth = await last_signal_open_ms(redis_bus, "detector/a", "ETH/USDT", since)
    assert eth == to_ms(T0 + timedelta(minutes=9))
    assert await last_signal_open_ms(redis_bus, "detector/c", "BTC/USDT", since) is None
    later = to_ms(datetime.now(UTC)) + 60_000  # nothing was published after this
    assert await last_signal_open_ms(redis_bus, "detector/a", "BTC/USDT", later) is None
