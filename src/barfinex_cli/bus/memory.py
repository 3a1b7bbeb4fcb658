"""The in-process bus: the complete twin of the Redis Streams bus inside one asyncio loop.

Same streams per type, entry ids, consumer groups, pending lists, reclaim, dead letters and tail as
`redis_streams`, so the same role code and the same behaviour suite run on both. Events published
as objects are handed over as they are (they are immutable); bytes given to `publish_raw` are
decoded on delivery, exactly where the Redis transport decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from barfinex_cli.bus.base import (
    DEAD_LETTER,
    DEDUP_TTL_S,
    AnyEnvelope,
    ConsumerBase,
    DeadLetter,
    Deduplicator,
    Delivery,
    Handled,
    StartFrom,
    TrimLoss,
    add_trimmed,
    entry_id_key,
    matches,
)
from barfinex_cli.contracts.codec import DEFAULT_MAX_EVENT_BYTES, MalformedEvent, decode

log = logging.getLogger("bfx.bus")

Item = AnyEnvelope | bytes

LOG_EVERY_S = 60.0
"""A group losing entries to the cap on a stream again within this long is logged with the sum."""


class _Pending(NamedTuple):
    consumer: str
    position: int
    delivered_ms: float


@dataclass(slots=True)
class _Group:
    next_index: int
    pending: OrderedDict[str, _Pending] = field(default_factory=OrderedDict)


class _Stream:
    __slots__ = ("base", "entries", "groups", "ids")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.entries: list[Item] = []
        self.base = 0  # absolute index of entries[0]; grows as the stream is trimmed
        self.groups: dict[str, _Group] = {}

    @property
    def end(self) -> int:
        return self.base + len(self.entries)

    def get(self, index: int) -> tuple[str, Item] | None:
        i = index - self.base
        if i < 0 or i >= len(self.entries):
            return None
        return self.ids[i], self.entries[i]

    def index_after(self, entry_id: str) -> int:
        key = entry_id_key(entry_id)
        lo, hi = 0, len(self.ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if entry_id_key(self.ids[mid]) <= key:
                lo = mid + 1
            else:
                hi = mid
        return self.base + lo


class MemoryBus:
    """An in-process bus with the semantics of `RedisStreamsBus`.

    `max_event_bytes` limits bytes given to `publish_raw` (the wire's input); events published
    as objects were built and validated in this process and are handed over unmeasured.
    """

    degraded = False
    """The in-process bus cannot lose its server."""
    outage_since: datetime | None = None
    outages = 0
    last_outage: tuple[datetime, float] | None = None
    lost_in_outage: tuple[str, ...] = ()

    def __init__(
        self,
        namespace: str = "default",
        *,
        maxlen: int = 100_000,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.namespace = namespace
        self.url = "memory://"
        self.maxlen = maxlen
        self.max_event_bytes = max_event_bytes
        self._streams: dict[str, _Stream] = {}
        self._changed = asyncio.Event()
        self._last_ms = 0
        self._seq = 0
        self._dead: list[DeadLetter] = []
        self._seen: dict[str, OrderedDict[str, None]] = {}
        self.trimmed: dict[tuple[str, str], TrimLoss] = {}
        """What its consumers found their groups lost to the stream cap."""
        self._patterns: dict[str, tuple[str, ...]] = {}  # group -> the type patterns it reads
        self._readers: dict[str, tuple[str, ...]] = {}  # type -> groups reading it (a cache)

    async def ping(self) -> None:
        return None

    def _next_id(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms <= self._last_ms:
            ms = self._last_ms
            self._seq += 1
        else:
            self._seq = 0
        self._last_ms = ms
        return f"{ms}-{self._seq}"

    def _stream(self, event_type: str) -> _Stream:
        stream = self._streams.get(event_type)
        if stream is None:
            stream = self._streams[event_type] = _Stream()
        return stream

    def _append(self, event_type: str, item: Item) -> str:
        stream = self._streams.get(event_type) or self._stream(event_type)
        entry_id = self._next_id()
        stream.ids.append(entry_id)
        stream.entries.append(item)
        excess = len(stream.entries) - self.maxlen
        if excess > self.maxlen // 10:  # approximate trimming, like MAXLEN ~
            del stream.ids[:excess]
            del stream.entries[:excess]
            stream.base += excess
        return entry_id

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def publish(self, event: AnyEnvelope) -> str:
        entry_id = self._append(event.type, event)
        self._notify()
        return entry_id

    async def publish_many(
        self, events: Sequence[AnyEnvelope], *, handled: Handled | None = None
    ) -> list[str]:
        ids = [self._append(e.type, e) for e in events]
        if handled is not None:  # no await between: atomic within the event loop
            _MemoryDedup(self._seen, self.maxlen).mark_now(handled.group, [handled.event_id])
        self._notify()
        return ids

    async def publish_raw(self, event_type: str, data: bytes) -> str:
        entry_id = self._append(event_type, data)
        self._notify()
        return entry_id

    async def consumer(
        self,
        group: str,
        name: str,
        types: Sequence[str] = ("*",),
        *,
        start: StartFrom = "$",
        claim_idle_ms: int = 30_000,
    ) -> MemoryConsumer:
        member = MemoryConsumer(self, group, name, tuple(types), start, claim_idle_ms)
        member._join()  # join now, so "$" means from this call on
        self._register(group, member.types)
        return member

    def _register(self, group: str, types: tuple[str, ...]) -> None:
        """Remember that `group` reads `types`, so `behind` waits for it on new streams too."""
        held = self._patterns.get(group, ())
        self._patterns[group] = held + tuple(t for t in types if t not in held)
        self._readers.clear()

    async def behind(
        self, ignore: Collection[str] = (), limit: int | None = None
    ) -> list[tuple[str, str]]:
        """Return (group, type) pairs where a group has entries undelivered or unacknowledged.

        A group that reads a type but has not made its group on that stream yet (its consumer
        has not fetched since the stream appeared) counts as behind.
        """
        out: list[tuple[str, str]] = []
        readers = self._readers
        for event_type, stream in self._streams.items():
            end = stream.base + len(stream.entries)  # `stream.end`, inlined (a hot loop)
            if end == 0:
                continue
            names = readers.get(event_type)
            if names is None:
                names = readers[event_type] = tuple(
                    g for g, reads in self._patterns.items() if matches(event_type, reads)
                )
            for name in names:
                if name in ignore:
                    continue
                group = stream.groups.get(name)
                if group is None or group.pending or group.next_index < end:
                    out.append((name, event_type))
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    async def wait(self, timeout_s: float) -> None:
        """Sleep until something is published or `timeout_s` passes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    def _dead_letter(self, event_type: str, origin_id: str, error: str, data: bytes) -> None:
        entry_id = self._next_id()
        kept = data[: self.max_event_bytes]
        self._dead.append(DeadLetter(entry_id, event_type, origin_id, error, kept, len(data)))
        del self._dead[: max(0, len(self._dead) - self.maxlen)]

    def _decode(self, event_type: str, entry_id: str, item: Item) -> Delivery | None:
        if isinstance(item, bytes):
            try:
                event = decode(item, event_type, max_bytes=self.max_event_bytes)
                return Delivery(event_type, entry_id, event, item)
            except MalformedEvent as exc:
                self._dead_letter(event_type, entry_id, exc.reason, item)
                return None
        return Delivery(event_type, entry_id, item)

    async def tail(
        self, types: Sequence[str] = ("*",), *, since: str | None = None, block_ms: int = 1000
    ) -> AsyncIterator[Delivery]:
        positions: dict[str, int] = {}
        for event_type, stream in self._streams.items():
            positions[event_type] = stream.end if since is None else stream.index_after(since)
        while True:
            found = False
            for event_type, stream in list(self._streams.items()):
                if not matches(event_type, types):
                    continue
                pos = max(positions.get(event_type, 0), stream.base)
                while pos < stream.end:
                    got = stream.get(pos)
                    pos += 1
                    if got is None:
                        continue
                    delivery = self._decode(event_type, got[0], got[1])
                    if delivery is not None:
                        found = True
                        positions[event_type] = pos
                        yield delivery
                positions[event_type] = pos
            if not found:
                await self.wait(block_ms / 1000)

    async def stream_types(self) -> list[str]:
        return sorted(t for t in self._streams if t != DEAD_LETTER)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self._dead[-limit:]

    def deduplicator(self, ttl_s: int = DEDUP_TTL_S) -> Deduplicator:
        return _MemoryDedup(self._seen, self.maxlen)

    async def close(self) -> None:
        self._notify()


class _MemoryDedup:
    """Per-group sets of handled ids, bounded to the newest `cap` per group."""

    def __init__(self, seen: dict[str, OrderedDict[str, None]], cap: int) -> None:
        self._seen = seen
        self._cap = cap

    async def seen(self, group: str, event_ids: Sequence[str]) -> list[bool]:
        known = self._seen.get(group)
        if not known:
            return [False] * len(event_ids)
        return [i in known for i in event_ids]

    async def mark(self, group: str, event_ids: Sequence[str]) -> None:
        self.mark_now(group, event_ids)

    def mark_now(self, group: str, event_ids: Sequence[str]) -> None:
        """Mark ids handled without yielding to the event loop."""
        known = self._seen.setdefault(group, OrderedDict())
        for i in event_ids:
            known[i] = None
        while len(known) > self._cap:
            known.popitem(last=False)


class MemoryConsumer(ConsumerBase):
    """A consumer-group member on the in-process bus."""

    def __init__(
        self,
        bus: MemoryBus,
        group: str,
        name: str,
        types: tuple[str, ...],
        start: StartFrom,
        claim_idle_ms: int,
    ) -> None:
        super().__init__(group, name, types, start, claim_idle_ms)
        self.bus = bus
        self._initialised = False
        self.lost = 0
        """Entries its group lost to the cap (trimmed before it read or handled them), counted."""
        self._quiet_until: dict[str, float] = {}
        self._held: dict[str, int] = {}  # type -> entries lost and not logged yet

    def _join(self) -> list[tuple[str, _Stream]]:
        joined = []
        # streams that appear after the first join are new to us: read them from their start
        from_end = self.start == "$" and not self._initialised
        for event_type, stream in self.bus._streams.items():
            if not matches(event_type, self.types):
                continue
            if stream.groups.get(self.group) is None:
                stream.groups[self.group] = _Group(stream.end if from_end else stream.base)
            joined.append((event_type, stream))
        self._initialised = True
        return joined

    async def fetch(self, count: int = 100, block_ms: int = 1000) -> list[Delivery]:
        deadline = time.monotonic() + block_ms / 1000
        while True:
            out = self._collect(count)
            if out:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await self.bus.wait(remaining)

    def _collect(self, count: int) -> list[Delivery]:
        out: list[Delivery] = []
        now = time.monotonic() * 1000
        streams = self._join()
        me = self.group
        for event_type, stream in streams:
            group = stream.groups[me]
            if not group.pending:  # the common case: nothing to reclaim (no copy, no loop)
                continue
            for entry_id, p in list(group.pending.items()):
                if len(out) >= count:
                    return out
                own = p.consumer == self.name
                stale = not own and now - p.delivered_ms >= self.claim_idle_ms
                if (own and self._recovering) or stale:
                    group.pending[entry_id] = _Pending(self.name, p.position, now)
                    self._deliver(out, event_type, stream, group, p.position, entry_id)
        self._recovering = False
        if self._held:
            self._lost("", 0)  # log what was held once its quiet time passed
        for event_type, stream in streams:
            group = stream.groups[me]
            base = stream.base
            end = base + len(stream.entries)  # `stream.end`, inlined: this runs per fetch
            if group.next_index < base:  # trimmed before the group read them: say so, once
                self._lost(event_type, base - group.next_index)
                group.next_index = base
            first = group.next_index if group.next_index > base else base
            if first >= end:
                continue
            last = min(end, first + count - len(out))
            if last <= first:
                continue
            group.next_index = last
            lo, hi = first - base, last - base
            pending = group.pending
            name = self.name
            for index, entry_id, item in zip(
                range(first, last), stream.ids[lo:hi], stream.entries[lo:hi], strict=True
            ):
                if type(item) is bytes:
                    delivery = self.bus._decode(event_type, entry_id, item)
                    if delivery is None:
                        self.dead_lettered += 1
                        continue
                else:
                    delivery = Delivery(event_type, entry_id, item)  # type: ignore[arg-type]
                pending[entry_id] = _Pending(name, index, now)
                out.append(delivery)
        return out

    def _lost(self, event_type: str, count: int) -> None:
        """Count `count` entries of `event_type` lost to the cap; log, at most once a minute."""
        self.lost += count
        if count:
            add_trimmed(self.bus.trimmed, self.group, event_type, count, 0)
            self._held[event_type] = self._held.get(event_type, 0) + count
        now = time.monotonic()
        for held_type, entries in list(self._held.items()):
            if now < self._quiet_until.get(held_type, 0.0):
                continue
            del self._held[held_type]
            self._quiet_until[held_type] = now + LOG_EVERY_S
            log.warning(
                "consumer group %s lost %d entries of %s to the stream cap (bus_maxlen %d): "
                "trimmed before the group handled them; speed it up or raise bus_maxlen",
                self.group,
                entries,
                held_type,
                self.bus.maxlen,
                extra={"group": self.group, "type": held_type, "lost": entries},
            )

    def _deliver(
        self,
        out: list[Delivery],
        event_type: str,
        stream: _Stream,
        group: _Group,
        index: int,
        entry_id: str,
    ) -> None:
        got = stream.get(index)
        if got is None:  # trimmed away while pending, as XREADGROUP returns a deleted entry
            group.pending.pop(entry_id, None)
            self._lost(event_type, 1)
            return
        delivery = self.bus._decode(event_type, entry_id, got[1])
        if delivery is None:
            self.dead_lettered += 1
            group.pending.pop(entry_id, None)
            return
        out.append(delivery)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            stream = self.bus._streams.get(d.type)
            if stream is not None and self.group in stream.groups:
                stream.groups[self.group].pending.pop(d.entry_id, None)
