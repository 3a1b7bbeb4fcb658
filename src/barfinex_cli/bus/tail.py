"""A live tail of the bus that survives the bus going away: resume after the last entry seen.

The Redis bus waits out a dropped connection or a restarted Redis inside its reads, but only
for `redis_outage_s`; past that (or on any other failure of a transport) `Bus.tail` ends with an
exception. Readers that must keep running — the gateway's WebSocket hub, the webhook sender —
wrap it in `tail_forever`, which waits with capped, jittered exponential backoff, logs once per
outage (not per retry), and reads on from the newest entry id it delivered, so nothing published
while it was reconnecting is skipped and nothing already delivered comes twice.

Entry ids of different streams are comparable (both transports derive them from the time of
publishing), so one position, the largest id seen, resumes every stream the patterns match.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from barfinex_cli import backoff
from barfinex_cli.bus.base import Bus, Delivery, entry_id_key

log = logging.getLogger("bfx.bus.tail")

_MAX_SEQ = 2**64 - 1
OnError = Callable[[Exception, int], None]
"""Called with the failure and how many reads in a row have failed (1 for a new outage)."""


def from_now() -> str:
    """Return a `since` position that yields everything published from this millisecond on."""
    return f"{time.time_ns() // 1_000_000 - 1}-{_MAX_SEQ}"


def _log_outage(exc: Exception, failures: int) -> None:
    if failures == 1:
        log.warning("bus read failed; retrying with backoff", extra={"error": str(exc)})


async def tail_forever(
    bus: Bus,
    patterns: Sequence[str],
    *,
    since: str | None = None,
    block_ms: int = 1000,
    on_error: OnError = _log_outage,
    backoff_s: float = 0.25,
    max_backoff_s: float = 5.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[Delivery]:
    """Yield every event whose type matches `patterns`, forever, across bus failures.

    Args:
        bus: The bus to read, without a group (live fan-out).
        patterns: Type globs, as `Bus.tail` takes them.
        since: Yield entries after this stream id; None means from now.
        block_ms: How long one read waits for new entries.
        on_error: Told of each failed read and the count of failures in a row; by default the
            first failure of an outage is logged as a warning.
        backoff_s: The first wait after a failure; it doubles per failure in a row.
        max_backoff_s: The longest wait between two reads.
        sleep: How to wait (tests pass a faster one).
    """
    position = since or from_now()
    failures = 0
    while True:
        try:
            async for delivery in bus.tail(patterns, since=position, block_ms=block_ms):
                if failures:
                    log.info("bus read again", extra={"after_failures": failures})
                    failures = 0
                position = max(position, delivery.entry_id, key=entry_id_key)
                yield delivery
        except Exception as exc:  # the bus went away: wait, then read on from `position`
            failures += 1
            on_error(exc, failures)
        await sleep(backoff.delay(failures, backoff_s, max_backoff_s))  # jittered: not in step
