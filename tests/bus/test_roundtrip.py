"""Any valid event goes through either bus and comes out equal, field for field."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barfinex_cli.bus.base import Bus
from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.codec import decode, encode
from barfinex_cli.contracts.envelope import Envelope
from conftest import REDIS_URL
from strategies import any_event


async def _through(kind: str, events: list[Envelope[Any]]) -> list[Envelope[Any]]:
    namespace = f"test-rt-{uuid.uuid4().hex[:12]}"
    bus: Bus = MemoryBus(namespace) if kind == "memory" else RedisStreamsBus(REDIS_URL, namespace)
    try:
        consumer = await bus.consumer("g", "c", ["*"], start="0")
        await bus.publish_many(events)
        got: list[Envelope[Any]] = []
        for _ in range(50):
            batch = await consumer.fetch(100, 20)
            await consumer.ack(batch)
            got += [d.event for d in batch]
            if len(got) >= len(events):
                break
        return got
    finally:
        if isinstance(bus, RedisStreamsBus):
            await bus.delete_namespace()
        await bus.close()


@pytest.mark.parametrize("kind", ["memory", "redis"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(any_event(), min_size=1, max_size=8))
def test_any_valid_event_round_trips_through_the_bus_unchanged(
    kind: str, events: list[Envelope[Any]]
) -> None:
    got = asyncio.run(_through(kind, events))
    by_id = {e.id: e for e in got}
    assert sorted(by_id) == sorted(e.id for e in events)
    for event in events:
        assert by_id[event.id] == event
        assert decode(encode(by_id[event.id])) == event  # and again through JSON
