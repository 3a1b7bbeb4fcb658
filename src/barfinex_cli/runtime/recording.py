"""Run the audit recorder as a service: every stream of the bus into the SQLite audit store."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from barfinex_cli.bus.base import Bus
from barfinex_cli.runtime.connect import open_bus
from barfinex_cli.runtime.lifecycle import run_until_signalled
from barfinex_cli.runtime.settings import Settings
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.recorder import Recorder

log = logging.getLogger("bfx.recorder")


async def record(
    settings: Settings,
    stop: asyncio.Event,
    *,
    group: str = "recorder",
    bus: Bus | None = None,
    started: Callable[[Recorder[Any]], None] | None = None,
) -> int:
    """Record until `stop` is set; return how many events were written.

    The consumer name is stable per host, so a restarted recorder first writes what it had read
    but not acknowledged before it stopped. With `bus`, record from that bus (an in-process bus
    must be shared); `started` receives the recorder once it runs.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    own_bus = bus is None
    the_bus = await open_bus(settings) if bus is None else bus
    store = AuditStore(settings.audit_path)
    try:
        name = f"{group}-{socket.gethostname()}"
        consumer = await the_bus.consumer(group, name, ["*"], start="0")
        recorder: Recorder[Any] = Recorder(consumer, store, block_ms=200)
        if started is not None:
            started(recorder)
        log.info("recording", extra={"bus": the_bus.url, "store": str(settings.audit_path)})
        await recorder.run(stop)
        return recorder.written
    finally:
        store.close()
        if own_bus:
            await the_bus.close()


async def run_recorder(settings: Settings, *, group: str = "recorder") -> int:
    """Record until SIGINT/SIGTERM."""
    return await run_until_signalled(lambda stop: record(settings, stop, group=group))
