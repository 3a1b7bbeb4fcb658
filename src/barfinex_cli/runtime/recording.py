"""The audit recorder as a role: every stream of the bus into the SQLite audit store.

It takes the bus and the store it is given (the kernel opens them), so the same recorder runs
beside the provider in its process, on its own (`bfx events record`), or inside a backtest.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from barfinex_cli.bus.base import Bus
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.recorder import Recorder

log = logging.getLogger("bfx.recorder")


class Recording:
    """Record every event of `bus` into `store` until stopped."""

    def __init__(
        self, bus: Bus, store: AuditStore, *, group: str = "recorder", block_ms: int = 200
    ) -> None:
        self.bus = bus
        self.store = store
        self.group = group
        self.block_ms = block_ms
        self.recorder: Recorder[Any] | None = None
        self.ready = asyncio.Event()

    @property
    def handled(self) -> int:
        """Return how many events it has written or found already written."""
        recorder = self.recorder
        return 0 if recorder is None else recorder.written + recorder.duplicates

    async def run(self, stop: asyncio.Event) -> int:
        """Record until `stop` is set; return how many events were written.

        The consumer name is stable per host, so a restarted recorder first writes what it had
        read but not acknowledged before it stopped.
        """
        name = f"{self.group}-{socket.gethostname()}"
        consumer = await self.bus.consumer(self.group, name, ["*"], start="0")
        self.recorder = Recorder(consumer, self.store, block_ms=self.block_ms)
        self.ready.set()
        from barfinex_cli.errors import mask_url

        log.info("recording", extra={"bus": mask_url(self.bus.url), "store": self.store.path})
        await self.recorder.run(stop)
        return self.recorder.written

    async def drain(self, published: int, timeout_s: float = 30.0) -> bool:
        """Wait until it has handled `published` events (or time runs out); tell whether it did.

        With the bus unreachable it gives up at once and says so: the recorder cannot read
        what is left, which stays pending on the bus for its next start.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if self.handled >= published:
                return True
            if self.bus.degraded:
                log.warning(
                    "the bus is unreachable; the recorder stops without catching up, the rest "
                    "stays pending on the bus",
                    extra={"not_recorded": published - self.handled},
                )
                return False
            await asyncio.sleep(0.05)
        log.warning("the recorder did not catch up in time; the rest stays pending on the bus")
        return False

    async def settle(self, timeout_s: float = 30.0) -> bool:
        """Wait until its group has finished every stream (or time runs out); tell whether it did.

        After Redis lost events (restarted without persistence) `drain`'s count of what was
        published can never be reached; what is still on the bus can. Call it once the
        publishers have stopped.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if not any(group == self.group for group, _ in await self.bus.behind()):
                return True
            await asyncio.sleep(0.05)
        log.warning("the recorder did not catch up in time; the rest stays pending on the bus")
        return False
