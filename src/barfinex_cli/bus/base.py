"""The bus protocol every transport implements, and the handling loop shared by all of them.

Semantics (both transports):
- Events of one type are delivered in publish order. Each type is its own stream.
- A consumer group shares the work of its streams among its consumers; an event is handled by one
  consumer of the group, and stays pending until that consumer acknowledges it.
- A consumer restarted under the same name first gets back its own pending (unacknowledged)
  events; entries pending on a consumer idle longer than `claim_idle_ms` are claimed by another.
- A message that does not decode is moved to the dead-letter stream with the reason, acknowledged on
  its own stream, counted, and never stops the consumer.
- A message larger than the bus's `max_event_bytes`, or a stream entry without its data field,
  is dead-lettered the same way; the dead letter keeps the reason, the original size and at most
  `max_event_bytes` of the data.
- `publish_many(events, handled=...)` marks the input the events answer as handled by its group
  in the same atomic step, so a role killed after publishing its outcome and before
  acknowledging the input never handles it again (exactly-once outcomes across a crash).
- `tail` reads without a group: live fan-out, from now or from a stream id.
- A transport that can lose its server (Redis) waits out an outage inside each call and reports
  it as `degraded` / `outage_since`; a call gives up only after the configured outage time.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

from barfinex_cli.contracts.envelope import Envelope

AnyEnvelope = Envelope[Any]
Handler = Callable[[AnyEnvelope], Awaitable[None]]
StartFrom = Literal["$", "0"]

DEAD_LETTER = "_deadletter"
"""The stream that holds messages which failed to decode; never matched by type patterns."""


class Delivery(NamedTuple):
    """One event handed to a consumer: its type stream, its stream entry id and the event."""

    type: str
    entry_id: str
    event: AnyEnvelope
    raw: bytes | None = None


class Handled(NamedTuple):
    """An input event handled by a consumer group: marked with its outcome's publish."""

    group: str
    event_id: str


DEDUP_TTL_S = 86_400
"""How long a group remembers a handled id (the default of `Bus.deduplicator`)."""


class TrimLoss(NamedTuple):
    """What a group lost to the stream cap on one stream, as this process's consumers found."""

    entries: int
    """Entries counted lost (trimmed before the group read or handled them)."""
    uncounted: int
    """Losses found that the server could not count (Redis 6.2)."""


def trimmed_rows(trimmed: dict[tuple[str, str], TrimLoss]) -> list[dict[str, Any]]:
    """Return `Bus.trimmed` as JSON rows for a role's `/health` (empty when nothing was lost)."""
    return [
        {"group": group, "type": event_type, "entries": loss.entries, "uncounted": loss.uncounted}
        for (group, event_type), loss in sorted(trimmed.items())
    ]


def add_trimmed(
    trimmed: dict[tuple[str, str], TrimLoss],
    group: str,
    event_type: str,
    entries: int,
    uncounted: int,
) -> None:
    """Add a loss to a bus's `trimmed` tally."""
    before = trimmed.get((group, event_type), TrimLoss(0, 0))
    trimmed[(group, event_type)] = TrimLoss(before.entries + entries, before.uncounted + uncounted)


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """A message that could not be decoded, with where it came from and why."""

    entry_id: str
    type: str
    origin_id: str
    error: str
    data: bytes
    """The message as it came, cut to the bus's `max_event_bytes`."""
    size: int
    """The message's full length in bytes."""


class ConsumerBase:
    """What every transport's consumer keeps: its group, name, patterns and counters."""

    def __init__(
        self,
        group: str,
        name: str,
        types: tuple[str, ...],
        start: StartFrom,
        claim_idle_ms: int,
    ) -> None:
        self.group = group
        self.name = name
        self.types = types
        self.start = start
        self.claim_idle_ms = claim_idle_ms
        self.dead_lettered = 0
        self._recovering = True  # first fetches return this consumer's own pending entries


class Consumer(Protocol):
    """A member of a consumer group reading one or more type streams."""

    group: str
    name: str
    dead_lettered: int

    async def fetch(self, count: int = 100, block_ms: int = 1000) -> list[Delivery]:
        """Return up to `count` deliveries: own pending first, then claimed, then new ones."""
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge handled deliveries; they will never be delivered to this group again."""
        ...


class Deduplicator(Protocol):
    """Remembers which event ids a group has handled, so redelivery is handled once."""

    async def seen(self, group: str, event_ids: Sequence[str]) -> list[bool]:
        """Tell, per id, whether the group has already handled it."""
        ...

    async def mark(self, group: str, event_ids: Sequence[str]) -> None:
        """Record ids as handled by the group."""
        ...


class Bus(Protocol):
    """Publish events, read them in groups with acknowledgement, or tail them live."""

    namespace: str
    url: str

    @property
    def degraded(self) -> bool:
        """Tell whether the transport is unreachable right now and calls are waiting for it."""
        ...

    @property
    def outage_since(self) -> datetime | None:
        """When the current outage began (UTC), or None while the transport answers."""
        ...

    @property
    def outages(self) -> int:
        """How many outages this bus has ridden out (or is in); 0 for one that cannot have any."""
        ...

    @property
    def last_outage(self) -> tuple[datetime, float] | None:
        """The latest outage that ended: when it began (UTC) and how long it lasted (seconds)."""
        ...

    @property
    def lost_in_outage(self) -> tuple[str, ...]:
        """Types whose entries from before an outage the transport no longer held.

        Non-empty once Redis came back without its data (restarted without persistence): what
        was published on them before and not yet handled is gone. Kept over the bus's life (a
        later outage that loses nothing does not clear it), so a run that lost events knows it
        at its end. Empty for a bus that cannot lose its data, or when nothing was lost.
        """
        ...

    @property
    def trimmed(self) -> dict[tuple[str, str], TrimLoss]:
        """What groups read in this process lost to the stream cap, by (group, type).

        A group further behind than the cap (`bus_maxlen`) loses the oldest entries it had not
        read; its consumers find it, log it and add it here (`redis_trimmed`). Empty when
        nothing was lost; `bfx events lag` shows every group of the namespace.
        """
        ...

    async def ping(self) -> None:
        """Raise `ServiceUnreachable` if the transport does not answer."""
        ...

    async def publish(self, event: AnyEnvelope) -> str:
        """Append one event to its type's stream; return the stream entry id."""
        ...

    async def publish_many(
        self, events: Sequence[AnyEnvelope], *, handled: Handled | None = None
    ) -> list[str]:
        """Append many events in one round trip, in order, all or none.

        With `handled`, the input event is also marked handled by its group (what
        `Deduplicator.mark` does) in the same atomic step: a role that dies after this call
        finds the input marked when it is delivered again, so it publishes no second outcome.
        """
        ...

    async def publish_raw(self, event_type: str, data: bytes) -> str:
        """Append bytes as they are (bridges and tests of malformed input)."""
        ...

    async def consumer(
        self,
        group: str,
        name: str,
        types: Sequence[str] = ("*",),
        *,
        start: StartFrom = "$",
        claim_idle_ms: int = 30_000,
    ) -> Consumer:
        """Join `group` as consumer `name` over every stream whose type matches a pattern."""
        ...

    def tail(
        self, types: Sequence[str] = ("*",), *, since: str | None = None, block_ms: int = 1000
    ) -> AsyncIterator[Delivery]:
        """Yield events live without a group; from now, or after stream id `since`."""
        ...

    async def stream_types(self) -> list[str]:
        """Return the types that have a stream, sorted."""
        ...

    async def behind(
        self, ignore: Collection[str] = (), limit: int | None = None
    ) -> list[tuple[str, str]]:
        """Return (group, type) pairs where a running role's group has not finished a stream.

        Behind means entries not yet delivered to the group or delivered and not acknowledged,
        or a stream matching the group's patterns that it has not joined yet. Empty: every
        group (but those in `ignore`) has handled everything published. At most `limit` pairs.
        """
        ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Return the newest dead letters, oldest first."""
        ...

    def deduplicator(self, ttl_s: int = DEDUP_TTL_S) -> Deduplicator:
        """Return the id store that `consume` uses to handle each event once per group."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


def matches(event_type: str, patterns: Sequence[str]) -> bool:
    """Tell whether a type matches any glob pattern; the dead-letter stream never matches."""
    if event_type == DEAD_LETTER:
        return False
    return any(fnmatch.fnmatchcase(event_type, p) for p in patterns)


def now_entry_id() -> str:
    """Return a stream id for the current millisecond, for reads 'from now'."""
    return f"{time.time_ns() // 1_000_000}-0"


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """Split a stream entry id into a sortable (ms, seq) pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def consume(
    consumer: Consumer,
    handler: Handler,
    stop: asyncio.Event,
    *,
    dedup: Deduplicator | None = None,
    batch: int = 100,
    block_ms: int = 500,
) -> int:
    """Handle events until `stop` is set; return how many were handled.

    Each delivery is handled, marked as seen, then acknowledged. When `stop` is set mid-batch the
    handled part is acknowledged and the rest stays pending for the next start: nothing is lost
    and nothing is half-handled. With `dedup`, an event id already handled by the group is
    acknowledged without calling the handler again.
    """
    handled = 0
    while not stop.is_set():
        deliveries = await consumer.fetch(batch, block_ms)
        if not deliveries:
            continue
        fresh = deliveries
        if dedup is not None:
            flags = await dedup.seen(consumer.group, [d.event.id for d in deliveries])
            fresh, duplicates = [], []
            batch_ids: set[str] = set()
            for delivery, was_seen in zip(deliveries, flags, strict=True):
                if was_seen or delivery.event.id in batch_ids:
                    duplicates.append(delivery)
                else:
                    batch_ids.add(delivery.event.id)
                    fresh.append(delivery)
            if duplicates:
                await consumer.ack(duplicates)
        done: list[Delivery] = []
        try:
            for delivery in fresh:
                if stop.is_set():
                    break
                await handler(delivery.event)
                done.append(delivery)
        finally:
            if done:
                if dedup is not None:
                    await dedup.mark(consumer.group, [d.event.id for d in done])
                await consumer.ack(done)
                handled += len(done)
    return handled
