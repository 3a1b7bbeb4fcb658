"""A provider that held events through a Redis outage says so once Redis answers again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.market import BusRecovered
from barfinex_cli.provider.pipeline import Pipeline
from barfinex_cli.provider.service import ProviderRuntime, make_connector
from barfinex_cli.runtime.clock import SimClock
from barfinex_cli.runtime.config import ProviderConfig
from barfinex_cli.store.market import MarketStore
from bus.redis_faults import RedisServer
from bus.test_reconnect import candle, until


async def test_events_held_through_an_outage_go_out_once_with_a_recovery_event(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    bus = RedisStreamsBus(server.url, "provider-outage", outage_s=30)
    market = MarketStore(tmp_path / "market.db")
    runtime = ProviderRuntime(
        bus,
        market,
        make_connector(ProviderConfig()),
        "provider/test",
        SimClock(1),
        Pipeline(("1m",)),
    )
    try:
        server.stop(kill=True)
        held = candle(1)
        runtime.outbox.append(held)
        flushing = asyncio.create_task(runtime.flush())  # waits for Redis, holding the batch
        await until(lambda: bus.degraded)
        await server.start()
        await asyncio.wait_for(flushing, 20)
        events = [d.event async for d in _read_all(bus)]
        assert [e.id for e in events if e.type == "market.candle"] == [held.id]  # once
        [recovered] = [e.payload for e in events if e.type == "provider.bus.recovered"]
        assert isinstance(recovered, BusRecovered)
        assert recovered.held_events == 1 and recovered.lasted_s > 0
        assert runtime.events == 2
    finally:
        market.close()
        await bus.close()
        server.stop()


async def _read_all(bus: RedisStreamsBus):  # type: ignore[no-untyped-def]
    consumer = await bus.consumer("check", "c", ["*"], start="0")
    for delivery in await consumer.fetch(100, 100):
        yield delivery
