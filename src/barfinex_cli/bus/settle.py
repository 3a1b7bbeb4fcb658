"""Wait until a stack has finished everything published so far: the lock-step replay's barrier.

A role acknowledges an event only after it handled it and published its reaction, so when no
consumer group has an entry it was not given (undelivered) or holds unacknowledged (pending),
every reaction to what was published is on the bus, and the reactions' readers are caught up
too. `Bus.behind` says which groups are not there yet; `Settle.wait` flushes what the provider
queued (orders its broker answered, candles kept) and asks again until twice in a row nothing
is queued and no group is behind. A replay that waits on this before each new market moment
lets the whole chain (candle -> signal -> decision -> verdict -> order -> fill) land on the
moment that started it, however slow the machine: `bfx backtest` on the in-process bus and
`bfx up` on Redis both replay that way (see docs/backtest.md, "Parity").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection

from barfinex_cli.bus.base import Bus

log = logging.getLogger("bfx.bus")

SETTLE_TIMEOUT_S = 30.0
"""The longest one moment may take to settle before the replay moves on with a warning."""


class Settle:
    """Tell when every consumer group on `bus` (but the ignored ones) is caught up.

    `flush` writes out what the caller queued and `queued` tells whether anything is; `poll_s`
    is the pause between two asks (0 on the in-process bus, a few ms on Redis, where each ask
    is a round trip).
    """

    def __init__(
        self,
        bus: Bus,
        flush: Callable[[], Awaitable[None]],
        queued: Callable[[], bool],
        ignore: Collection[str] = frozenset(),
        *,
        timeout_s: float = SETTLE_TIMEOUT_S,
        poll_s: float = 0.0,
    ) -> None:
        self.bus = bus
        self.flush = flush
        self.queued = queued
        self.ignore = frozenset(ignore)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.waits = 0
        self.timeouts = 0
        self.last_behind: list[tuple[str, str]] = []
        """The (group, type) pairs found behind at the latest timeout (for the warning)."""

    async def busy(self) -> bool:
        """Tell whether any watched group has something undelivered or unacknowledged."""
        return bool(await self.bus.behind(self.ignore, limit=1))

    async def wait(self) -> bool:
        """Return once the stack has settled (True), or after `timeout_s` (False, warned)."""
        self.waits += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        calm = 0
        while calm < 2:
            if self.queued():
                await self.flush()
            busy = await self.busy()
            calm = 0 if busy or self.queued() else calm + 1
            if calm >= 2:
                break
            if loop.time() > deadline:
                self.timeouts += 1
                self.last_behind = await self.bus.behind(self.ignore)
                log.warning(
                    "lock-step: the stack did not settle in time; moving on",
                    extra={
                        "timeout_s": self.timeout_s,
                        "behind": [f"{g} on {t}" for g, t in self.last_behind[:10]],
                    },
                )
                return False
            await asyncio.sleep(self.poll_s if busy else 0)
        return True
