"""Redis restarted without its data: the roles resynchronise and say what was lost.

A `redis-server` this test owns is SIGKILLed and started again; without persistence it comes
back empty. The bus that publishes notices that the entries it wrote before the outage are gone
(`lost_in_outage`), the provider's `provider.bus.recovered` names those streams, and a consumer
whose group vanished says so in its log and reads the re-created streams from their start.
With persistence (`appendfsync always`) nothing is reported lost.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.market import BusRecovered
from barfinex_cli.provider.pipeline import Pipeline
from barfinex_cli.provider.service import ProviderRuntime, make_connector
from barfinex_cli.runtime.clock import SimClock
from barfinex_cli.runtime.config import ProviderConfig
from barfinex_cli.store.market import MarketStore
from bus.redis_faults import RedisServer
from bus.test_reconnect import candle, until

pytestmark = pytest.mark.redis


async def _restart(server: RedisServer, bus: RedisStreamsBus) -> asyncio.Task[list[str]]:
    """Kill Redis, start publishing into the outage, start Redis again; return the publish."""
    server.stop(kill=True)
    publishing = asyncio.create_task(bus.publish_many([candle(2)]))
    await until(lambda: bus.degraded)
    await server.start()
    return publishing


@pytest.mark.parametrize("persistent", [False, True], ids=["empty", "appendonly"])
async def test_a_bus_names_the_streams_whose_entries_redis_lost_in_a_restart(
    tmp_path: Path, persistent: bool
) -> None:
    server = RedisServer(tmp_path, persistent=persistent)
    await server.start()
    bus = RedisStreamsBus(server.url, "lost", outage_s=30)
    try:
        await bus.publish(candle(1))
        await asyncio.wait_for(await _restart(server, bus), 20)
        held = await bus.redis.xlen(bus.key("market.candle"))
    finally:
        await bus.close()
        server.stop()
    assert bus.outages == 1
    assert bus.lost_in_outage == (() if persistent else ("market.candle",))
    assert held == (2 if persistent else 1)


async def test_the_provider_says_which_streams_redis_lost_in_its_recovery_event(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    bus = RedisStreamsBus(server.url, "lost-provider", outage_s=30)
    market = MarketStore(tmp_path / "market.db")
    runtime = ProviderRuntime(
        bus, market, make_connector(ProviderConfig()), "provider/test", SimClock(1),
        Pipeline(("1m",)),
    )  # fmt: skip
    try:
        runtime.outbox.append(candle(1))
        await runtime.flush()
        server.stop(kill=True)
        runtime.outbox.append(candle(2))
        flushing = asyncio.create_task(runtime.flush())  # waits for Redis, holding the batch
        await until(lambda: bus.degraded)
        await server.start()
        await asyncio.wait_for(flushing, 20)
        rows: Any = await bus.redis.xrange(bus.key("provider.bus.recovered"))
    finally:
        market.close()
        await bus.close()
        server.stop()
    [(_, fields)] = rows
    recovered = bus.decode(fields[b"e"], "provider.bus.recovered").payload
    assert isinstance(recovered, BusRecovered)
    assert recovered.lost_types == ["market.candle"] and recovered.held_events == 1


async def test_a_consumer_whose_group_redis_lost_says_so_and_reads_the_new_entries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    bus = RedisStreamsBus(server.url, "lost-consumer", outage_s=30)
    try:
        await bus.publish(candle(1))
        consumer = await bus.consumer("detector.x", "c1", ["market.candle"], start="0")
        first = await consumer.fetch(10, 100)
        await consumer.ack(first)
        with caplog.at_level(logging.WARNING, logger="bfx.bus"):
            await asyncio.wait_for(await _restart(server, bus), 20)
            after = await asyncio.wait_for(consumer.fetch(10, 100), 20)
    finally:
        await bus.close()
        server.stop()
    assert [d.event.payload.open_time for d in first] == [candle(1).payload.open_time]
    assert [d.event.payload.open_time for d in after] == [candle(2).payload.open_time]
    said = [r for r in caplog.records if "lost this consumer group" in r.getMessage()]
    assert said and said[0].group == "detector.x"  # type: ignore[attr-defined]
