"""Run the audit recorder as a service: every stream of the bus into the SQLite audit store."""

from __future__ import annotations

import asyncio
import logging
import socket

from barfinex_cli.runtime.connect import open_bus
from barfinex_cli.runtime.lifecycle import run_until_signalled
from barfinex_cli.runtime.settings import Settings
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.recorder import Recorder

log = logging.getLogger("bfx.recorder")


async def record(settings: Settings, stop: asyncio.Event, *, group: str = "recorder") -> int:
    """Record until `stop` is set; return how many events were written.

    The consumer name is stable per host, so a restarted recorder first writes what it had read
    but not acknowledged before it stopped.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    bus = await open_bus(settings)
    store = AuditStore(settings.audit_path)
    try:
        consumer = await bus.consumer(group, f"{group}-{socket.gethostname()}", ["*"], start="0")
        recorder = Recorder(consumer, store)
        log.info("recording", extra={"bus": bus.url, "store": str(settings.audit_path)})
        await recorder.run(stop)
        return recorder.written
    finally:
        store.close()
        await bus.close()


async def run_recorder(settings: Settings, *, group: str = "recorder") -> int:
    """Record until SIGINT/SIGTERM."""
    return await run_until_signalled(lambda stop: record(settings, stop, group=group))
