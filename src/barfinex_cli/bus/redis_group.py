"""A consumer-group member on Redis Streams, and the handled-id store `consume` uses with it.

XREADGROUP and XACK; a consumer restarted under its name first re-reads its own pending entries
(id 0), and entries left pending by a consumer idle past `claim_idle_ms` are taken over with
XAUTOCLAIM. A message that does not decode (bad JSON, wrong type, over `max_event_bytes`) or an
entry without its data field goes to the `_deadletter` stream with the reason.

Through a Redis outage each call waits (see `outage`); afterwards the consumer re-reads its own
pending entries (a reply lost with the connection left them pending on it), and if Redis came
back without its groups (restarted empty) it creates them again from the start of each stream —
everything on a stream re-created after the restart is new to the group — and puts its types
back in the `_types` set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from barfinex_cli.bus import redis_behind
from barfinex_cli.bus.base import ConsumerBase, Delivery, StartFrom, matches
from barfinex_cli.bus.redis_trimmed import TrimWatch
from barfinex_cli.contracts.codec import MalformedEvent

if TYPE_CHECKING:
    from barfinex_cli.bus.redis_streams import RedisStreamsBus

log = logging.getLogger("bfx.bus")

FIELD = b"e"
"""The field of a stream entry that holds the encoded event."""

REFRESH_S = 1.0
"""How often a consumer (or a tail) looks for new streams matching its patterns."""


def text(value: bytes | str) -> str:
    """Return a Redis reply value as text."""
    return value.decode() if isinstance(value, bytes) else value


def _group_lost(exc: ResponseError) -> bool:
    """Tell whether Redis answered that the stream or the group does not exist (any more)."""
    message = str(exc)
    return message.startswith("NOGROUP") or "no such key" in message.lower()


class RedisDedup:
    """Handled ids per group as keys with a time to live, checked a batch per round trip."""

    def __init__(self, bus: RedisStreamsBus, ttl_s: int) -> None:
        self.bus = bus
        self.ttl_s = ttl_s

    def key(self, group: str, event_id: str) -> str:
        """Return the key that says `group` handled `event_id`."""
        return f"{self.bus.prefix}_seen:{group}:{event_id}"

    async def seen(self, group: str, event_ids: Sequence[str]) -> list[bool]:
        if not event_ids:
            return []

        async def check() -> list[bool]:
            pipe = self.bus.redis.pipeline(transaction=False)
            for i in event_ids:
                pipe.exists(self.key(group, i))
            return [bool(n) for n in await pipe.execute()]

        return await self.bus.outage.call(check)

    async def mark(self, group: str, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return

        async def mark() -> None:
            pipe = self.bus.redis.pipeline(transaction=False)
            for i in event_ids:
                pipe.set(self.key(group, i), b"1", ex=self.ttl_s)
            await pipe.execute()

        await self.bus.outage.call(mark)


class RedisConsumer(ConsumerBase):
    """A consumer-group member on Redis Streams."""

    def __init__(
        self,
        bus: RedisStreamsBus,
        group: str,
        name: str,
        types: tuple[str, ...],
        start: StartFrom,
        claim_idle_ms: int,
    ) -> None:
        super().__init__(group, name, types, start, claim_idle_ms)
        self.bus = bus
        self.rejoined = 0
        """How many times it found its groups gone (Redis restarted empty) and made them again."""
        self.trim = TrimWatch(bus, group)
        """What the group lost to the stream cap, found before reads (`redis_trimmed`)."""
        self._streams: dict[str, str] = {}  # stream key -> type
        self._refreshed = 0.0
        self._claimed = 0.0
        self._registered = bus.outages  # the bus's outage count at its latest registration

    async def refresh(self) -> None:
        """Join the group on every stream matching the patterns; create groups as needed."""
        initial = not self._refreshed
        if initial or self._registered != self.bus.outages:
            # say which types this group reads, so a lock-step replay and a run's end wait for
            # it; again after an outage, which a Redis restarted empty may have lost it in
            await redis_behind.register(self.bus, self.group, self.types)
            self._registered = self.bus.outages
        for event_type in await self.bus._stream_types():
            key = self.bus.key(event_type)
            if key in self._streams or not matches(event_type, self.types):
                continue
            # streams that appear after the first join are new to us: read them from their start
            await self._create_group(key, "$" if (initial and self.start == "$") else "0")
            self._streams[key] = event_type
            self._recovering = True  # a new stream may hold our pending entries from before
        self._refreshed = time.monotonic()

    async def _create_group(self, key: str, first_id: str) -> None:
        try:
            await self.bus.redis.xgroup_create(key, self.group, id=first_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _rejoin(self) -> None:
        """Create the group again on every stream it read, and their types in `_types`."""
        self.rejoined += 1
        log.warning(
            "Redis lost this consumer group (restarted without persistence?): what was on its "
            "streams before and not yet handled is gone; reading them again from their start",
            extra={"group": self.group, "types": sorted(self._streams.values())},
        )
        await redis_behind.register(self.bus, self.group, self.types)
        self._registered = self.bus.outages
        if self._streams:
            await self.bus.redis.sadd(self.bus.types_key, *self._streams.values())
        for key in self._streams:
            await self._create_group(key, "0")
        self._recovering = True

    def _after_failure(self) -> None:
        self._recovering = True  # a read whose reply was lost left its entries pending on us

    async def fetch(self, count: int = 100, block_ms: int = 1000) -> list[Delivery]:
        return await self.bus.outage.call(
            lambda: self._fetch(count, block_ms), on_failure=self._after_failure
        )

    async def _fetch(self, count: int, block_ms: int) -> list[Delivery]:
        try:
            return await self._read(count, block_ms)
        except ResponseError as exc:
            if not _group_lost(exc):
                raise
        await self._rejoin()
        return await self._read(count, 0)

    async def _read(self, count: int, block_ms: int) -> list[Delivery]:
        # after an outage, at once: Redis may have come back without our groups
        outage = self._registered != self.bus.outages
        if not self._streams or outage or time.monotonic() - self._refreshed > REFRESH_S:
            await self.refresh()
        if not self._streams:
            await asyncio.sleep(min(block_ms / 1000, REFRESH_S))
            return []
        redis = self.bus.redis
        if self._recovering:
            reply: Any = await redis.xreadgroup(
                self.group, self.name, dict.fromkeys(self._streams, "0"), count=count
            )
            out = await self._decode_reply(reply)
            if any(entries for _, entries in reply or []):
                return out
            self._recovering = False
        if time.monotonic() - self._claimed > self.claim_idle_ms / 1000 / 2:
            self._claimed = time.monotonic()
            out = await self._autoclaim(count)
            if out:
                return out
        block = max(1, min(block_ms, int(REFRESH_S * 1000)))
        await self.trim.watch(self._streams.values())  # did the cap trim what we have not read?
        fresh: Any = await redis.xreadgroup(
            self.group, self.name, dict.fromkeys(self._streams, ">"), count=count, block=block
        )
        self.trim.read(count, fresh)
        return await self._decode_reply(fresh)

    async def _autoclaim(self, count: int) -> list[Delivery]:
        out: list[Delivery] = []
        for key in self._streams:
            reply: Any = await self.bus.redis.xautoclaim(
                key, self.group, self.name, self.claim_idle_ms, start_id="0-0", count=count
            )
            if len(reply) > 2 and reply[2]:  # Redis 7 drops entries trimmed while pending
                await self.trim.pending(self._streams[key], len(reply[2]))
            entries = [e for e in reply[1] if e[0] is not None]
            if len(entries) < len(reply[1]):  # Redis 6.2 claims a trimmed entry as a bare nil:
                self._recovering = True  # our pending re-read gives its id, to ack and count
            out.extend(await self._decode_entries(key, entries))
        return out

    async def _decode_reply(self, reply: Any) -> list[Delivery]:
        out: list[Delivery] = []
        for key, entries in reply or []:
            out.extend(await self._decode_entries(text(key), entries))
        return out

    async def _decode_entries(self, key: str, entries: Any) -> list[Delivery]:
        event_type = self._streams[key]
        out: list[Delivery] = []
        gone: list[str] = []
        trimmed = 0
        for raw_id, fields in entries:
            entry_id = text(raw_id)
            if not fields:  # trimmed while pending: nothing left to handle, and it is said
                gone.append(entry_id)
                trimmed += 1
                continue
            data = fields.get(FIELD)
            if data is None:
                names = ", ".join(sorted(text(k) for k in fields))
                await self._dead_letter(
                    event_type,
                    entry_id,
                    f"stream entry has no data field {FIELD.decode()!r} (its fields: {names})",
                    json.dumps({text(k): text(v) for k, v in fields.items()}).encode(),
                )
                gone.append(entry_id)
                continue
            try:
                out.append(Delivery(event_type, entry_id, self.bus.decode(data, event_type), data))
            except MalformedEvent as exc:
                await self._dead_letter(event_type, entry_id, exc.reason, data)
                gone.append(entry_id)
        if gone:
            await self.bus.redis.xack(key, self.group, *gone)
        if trimmed:
            await self.trim.pending(event_type, trimmed)
        return out

    async def _dead_letter(self, event_type: str, entry_id: str, error: str, data: bytes) -> None:
        """Move a message to the dead-letter stream; at most `max_event_bytes` of it is kept."""
        pipe = self.bus.redis.pipeline(transaction=False)
        fields: dict[Any, Any] = {
            "type": event_type,
            "origin_id": entry_id,
            "group": self.group,
            "error": error,
            "size": len(data),
            "data": data[: self.bus.max_event_bytes],
        }
        pipe.xadd(self.bus.dead_key, fields, maxlen=self.bus.maxlen, approximate=True)
        pipe.incr(self.bus.dead_key + ":count")
        await pipe.execute()
        self.dead_lettered += 1

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_key: dict[str, list[str]] = {}
        for d in deliveries:
            by_key.setdefault(self.bus.key(d.type), []).append(d.entry_id)
        if not by_key:
            return

        async def ack() -> None:
            pipe = self.bus.redis.pipeline(transaction=False)
            for key, ids in by_key.items():
                pipe.xack(key, self.group, *ids)
            await pipe.execute()

        await self.bus.outage.call(ack)
