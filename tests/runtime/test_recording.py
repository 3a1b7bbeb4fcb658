"""The recorder role: its final drain does not wait on a bus that cannot answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.errors import RedisUnreachable
from barfinex_cli.runtime.recording import Recording
from barfinex_cli.store.audit import AuditStore
from bus.redis_faults import RedisServer
from polling import until

pytestmark = pytest.mark.redis


async def test_drain_gives_up_at_once_and_says_so_when_the_bus_is_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", persistent=False)
    await server.start()
    bus = RedisStreamsBus(server.url, "drain", outage_s=60)
    store = AuditStore(tmp_path / "audit.db")
    recording = Recording(bus, store)
    stop = asyncio.Event()
    task = asyncio.create_task(recording.run(stop))
    try:
        await until(recording.ready.is_set, 10, what="the recorder to join its group")
        server.stop(kill=True)
        await until(lambda: bus.degraded, 10, what="the recorder to meet the outage")
        with caplog.at_level(logging.WARNING, logger="bfx.recorder"):
            # the old drain polled for its whole timeout while the recorder could read nothing
            drained = await asyncio.wait_for(recording.drain(5, timeout_s=60), 5)
    finally:
        stop.set()
        bus.outage.stop_waiting()
        with contextlib.suppress(RedisUnreachable):
            await asyncio.wait_for(task, 10)
        await bus.close()
        store.close()
        server.stop()
    assert drained is False
    [said] = [r for r in caplog.records if "without catching up" in r.getMessage()]
    assert said.not_recorded == 5  # type: ignore[attr-defined]
