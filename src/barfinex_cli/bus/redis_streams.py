"""The Redis Streams bus: one stream per event type under `bfx:{namespace}:`.

Publishing is XADD with an approximate MAXLEN (pipelined for batches). Consumers read with
XREADGROUP and acknowledge with XACK; a consumer restarted under its name first re-reads its own
pending entries (id 0), and entries left pending by a consumer idle past `claim_idle_ms` are taken
over with XAUTOCLAIM. Undecodable messages go to the `_deadletter` stream. Known types are kept in
the set `bfx:{namespace}:types`, so consumers with glob patterns find streams created later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from barfinex_cli.bus.base import (
    DEAD_LETTER,
    AnyEnvelope,
    ConsumerBase,
    DeadLetter,
    Deduplicator,
    Delivery,
    StartFrom,
    matches,
    now_entry_id,
)
from barfinex_cli.contracts.codec import MalformedEvent, decode, encode
from barfinex_cli.errors import RedisUnreachable

FIELD = b"e"
REFRESH_S = 1.0  # how often a consumer looks for new streams matching its patterns


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStreamsBus:
    """The production bus on Redis Streams."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        namespace: str = "default",
        *,
        maxlen: int = 100_000,
        client: aioredis.Redis | None = None,
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.maxlen = maxlen
        self.prefix = f"bfx:{namespace}:"
        self.redis: aioredis.Redis = client or aioredis.Redis.from_url(
            url, socket_connect_timeout=2, health_check_interval=30
        )
        self._types_key = self.prefix + "_types"
        self._dead_key = self.prefix + DEAD_LETTER
        self._registered: set[str] = set()

    def key(self, event_type: str) -> str:
        """Return the stream key of a type."""
        return self.prefix + event_type

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisUnreachable(self.url, str(exc).split("\n")[0]) from None

    async def publish(self, event: AnyEnvelope) -> str:
        return (await self._xadd([(event.type, encode(event))]))[0]

    async def publish_many(self, events: Sequence[AnyEnvelope]) -> list[str]:
        return await self._xadd([(e.type, encode(e)) for e in events])

    async def publish_raw(self, event_type: str, data: bytes) -> str:
        return (await self._xadd([(event_type, data)]))[0]

    async def _xadd(self, items: Sequence[tuple[str, bytes]]) -> list[str]:
        if not items:
            return []
        pipe = self.redis.pipeline(transaction=False)
        new_types = {t for t, _ in items} - self._registered
        if new_types:
            pipe.sadd(self._types_key, *new_types)
        for event_type, data in items:
            pipe.xadd(self.key(event_type), {FIELD: data}, maxlen=self.maxlen, approximate=True)
        try:
            replies = await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisUnreachable(self.url, str(exc).split("\n")[0]) from None
        self._registered |= new_types
        return [_s(r) for r in replies[1 if new_types else 0 :]]

    async def consumer(
        self,
        group: str,
        name: str,
        types: Sequence[str] = ("*",),
        *,
        start: StartFrom = "$",
        claim_idle_ms: int = 30_000,
    ) -> RedisConsumer:
        member = RedisConsumer(self, group, name, tuple(types), start, claim_idle_ms)
        await member.refresh()  # join now, so "$" means from this call on
        return member

    async def stream_types(self) -> list[str]:
        members = await self.redis.smembers(self._types_key)
        return sorted(_s(m) for m in members if _s(m) != DEAD_LETTER)

    async def tail(
        self, types: Sequence[str] = ("*",), *, since: str | None = None, block_ms: int = 1000
    ) -> AsyncIterator[Delivery]:
        start_id = since or now_entry_id()
        positions: dict[str, str] = {}
        refreshed = 0.0
        while True:
            if time.monotonic() - refreshed > REFRESH_S:
                for event_type in await self.stream_types():
                    if matches(event_type, types):
                        positions.setdefault(self.key(event_type), start_id)
                refreshed = time.monotonic()
            if not positions:
                await asyncio.sleep(min(block_ms / 1000, REFRESH_S))
                continue
            reply: Any = await self.redis.xread(
                positions,  # type: ignore[arg-type]
                count=500,
                block=min(block_ms, int(REFRESH_S * 1000)),
            )
            for key, entries in reply or []:
                stream_key = _s(key)
                event_type = stream_key[len(self.prefix) :]
                for raw_id, fields in entries:
                    entry_id = _s(raw_id)
                    positions[stream_key] = entry_id
                    data = fields.get(FIELD)
                    if data is None:
                        continue
                    try:
                        yield Delivery(event_type, entry_id, decode(data, event_type), data)
                    except MalformedEvent:
                        continue  # tailing never dead-letters: the groups do that once

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows: Any = await self.redis.xrevrange(self._dead_key, count=limit)
        out = []
        for raw_id, f in reversed(rows):
            out.append(
                DeadLetter(
                    _s(raw_id),
                    _s(f[b"type"]),
                    _s(f[b"origin_id"]),
                    _s(f[b"error"]),
                    f[b"data"],
                )
            )
        return out

    async def dead_letter_count(self) -> int:
        """Return how many messages were ever dead-lettered in this namespace."""
        value = await self.redis.get(self._dead_key + ":count")
        return int(value or 0)

    def deduplicator(self, ttl_s: int = 86_400) -> Deduplicator:
        return _RedisDedup(self, ttl_s)

    async def delete_namespace(self) -> int:
        """Delete every key of this namespace (tests and `bfx events purge`)."""
        keys = [k async for k in self.redis.scan_iter(match=self.prefix + "*", count=1000)]
        if keys:
            await self.redis.delete(*keys)
        return len(keys)

    async def close(self) -> None:
        await self.redis.aclose()


class _RedisDedup:
    """Handled ids per group as keys with a time to live, checked a batch per round trip."""

    def __init__(self, bus: RedisStreamsBus, ttl_s: int) -> None:
        self.bus = bus
        self.ttl_s = ttl_s

    def _key(self, group: str, event_id: str) -> str:
        return f"{self.bus.prefix}_seen:{group}:{event_id}"

    async def seen(self, group: str, event_ids: Sequence[str]) -> list[bool]:
        if not event_ids:
            return []
        pipe = self.bus.redis.pipeline(transaction=False)
        for i in event_ids:
            pipe.exists(self._key(group, i))
        return [bool(n) for n in await pipe.execute()]

    async def mark(self, group: str, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        pipe = self.bus.redis.pipeline(transaction=False)
        for i in event_ids:
            pipe.set(self._key(group, i), b"1", ex=self.ttl_s)
        await pipe.execute()


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
        self._streams: dict[str, str] = {}  # stream key -> type
        self._refreshed = 0.0
        self._claimed = 0.0

    async def refresh(self) -> None:
        """Join the group on every stream matching the patterns; create groups as needed."""
        initial = not self._refreshed
        for event_type in await self.bus.stream_types():
            key = self.bus.key(event_type)
            if key in self._streams or not matches(event_type, self.types):
                continue
            # streams that appear after the first join are new to us: read them from their start
            first_id = "$" if (initial and self.start == "$") else "0"
            try:
                await self.bus.redis.xgroup_create(key, self.group, id=first_id, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._streams[key] = event_type
            self._recovering = True  # a new stream may hold our pending entries from before
        self._refreshed = time.monotonic()

    async def fetch(self, count: int = 100, block_ms: int = 1000) -> list[Delivery]:
        try:
            return await self._fetch(count, block_ms)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisUnreachable(self.bus.url, str(exc).split("\n")[0]) from None

    async def _fetch(self, count: int, block_ms: int) -> list[Delivery]:
        if not self._streams or time.monotonic() - self._refreshed > REFRESH_S:
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
        fresh: Any = await redis.xreadgroup(
            self.group, self.name, dict.fromkeys(self._streams, ">"), count=count, block=block
        )
        return await self._decode_reply(fresh)

    async def _autoclaim(self, count: int) -> list[Delivery]:
        out: list[Delivery] = []
        for key in self._streams:
            reply: Any = await self.bus.redis.xautoclaim(
                key, self.group, self.name, self.claim_idle_ms, start_id="0-0", count=count
            )
            out.extend(await self._decode_entries(key, reply[1]))
        return out

    async def _decode_reply(self, reply: Any) -> list[Delivery]:
        out: list[Delivery] = []
        for key, entries in reply or []:
            out.extend(await self._decode_entries(_s(key), entries))
        return out

    async def _decode_entries(self, key: str, entries: Any) -> list[Delivery]:
        event_type = self._streams[key]
        out: list[Delivery] = []
        gone: list[str] = []
        for raw_id, fields in entries:
            entry_id = _s(raw_id)
            data = fields.get(FIELD) if fields else None
            if data is None:  # trimmed while pending: nothing left to handle
                gone.append(entry_id)
                continue
            try:
                out.append(Delivery(event_type, entry_id, decode(data, event_type), data))
            except MalformedEvent as exc:
                await self._dead_letter(event_type, entry_id, exc.reason, data)
                gone.append(entry_id)
        if gone:
            await self.bus.redis.xack(key, self.group, *gone)
        return out

    async def _dead_letter(self, event_type: str, entry_id: str, error: str, data: bytes) -> None:
        pipe = self.bus.redis.pipeline(transaction=False)
        fields: dict[Any, Any] = {
            "type": event_type,
            "origin_id": entry_id,
            "group": self.group,
            "error": error,
            "data": data,
        }
        pipe.xadd(self.bus._dead_key, fields, maxlen=self.bus.maxlen, approximate=True)
        pipe.incr(self.bus._dead_key + ":count")
        await pipe.execute()
        self.dead_lettered += 1

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_key: dict[str, list[str]] = {}
        for d in deliveries:
            by_key.setdefault(self.bus.key(d.type), []).append(d.entry_id)
        if not by_key:
            return
        pipe = self.bus.redis.pipeline(transaction=False)
        for key, ids in by_key.items():
            pipe.xack(key, self.group, *ids)
        await pipe.execute()
