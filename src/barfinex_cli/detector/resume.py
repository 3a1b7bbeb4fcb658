"""What lets a detector instance stop, crash and start again without losing or doubling a signal.

Two things, both kept on the bus (the one store every instance of a name shares):

- **One run per instance name.** Runs of one name share a consumer group and a consumer name, so
  two of them would each get part of the candles. `InstanceLease` is a lease on the name: a
  Redis key holding a random token, set only if absent, with a short TTL that the running
  instance renews. A second run finds it renewed and refuses to start, naming `--instance`; a
  run that starts after a crash finds a lease nobody renews and waits at most `LEASE_S` for it to
  lapse. An instance that finds its lease taken by another run stops rather than split. On the
  in-process bus the names are held in process memory.
- **Where the last run stopped publishing.** A candle handled by the last run is acknowledged
  after its signal is published; a run killed between the two leaves the candle pending, and it
  is delivered again. `last_signal_open_ms` reads the `detector.signal` stream backwards (only as
  far back as that candle's event was made) for this instance's newest signal of the symbol, so
  the service publishes nothing for a candle that already has its signal. The in-process bus does
  not outlive its process, so there it finds nothing.

How the service uses them is told in `detector.service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from typing import Any

from redis.exceptions import RedisError

from barfinex_cli.bus.base import Bus
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.codec import MalformedEvent, decode
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.errors import RedisUnreachable, UsageError

log = logging.getLogger("bfx.detector")

LEASE_S = 8.0
"""How long an instance's lease lives unless renewed: the longest a restart after a crash waits."""

RENEW_S = LEASE_S / 4
"""How often the running instance renews its lease."""

SCAN_PAGE = 200
"""Signal stream entries read per round trip when looking for the last published signal."""

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

_LOCAL: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
"""Names held on each in-process bus."""


def _taken(instance: str) -> UsageError:
    return UsageError(
        f"detector instance {instance!r} is already running on this bus — stop it, or give "
        "this run its own name with --instance NAME"
    )


class InstanceLease:
    """The right to run as detector instance `instance` on this bus; one holder at a time."""

    def __init__(self, bus: Bus, instance: str, *, lease_s: float = LEASE_S) -> None:
        self.bus = bus
        self.instance = instance
        self.lease_s = lease_s
        self.token = uuid.uuid4().hex
        self.held = False
        self._failures = 0

    @property
    def _redis(self) -> RedisStreamsBus | None:
        return self.bus if isinstance(self.bus, RedisStreamsBus) else None

    @property
    def key(self) -> str:
        """Return the lease's key (under the bus's namespace prefix, deleted with it)."""
        return f"bfx:{self.bus.namespace}:_lease:detector.{self.instance}"

    async def acquire(self) -> None:
        """Take the lease, waiting for one a crashed run left behind to lapse.

        Raises:
            UsageError: Another run renews the lease: it is alive.
        """
        redis_bus = self._redis
        if redis_bus is None:
            held = _LOCAL.setdefault(self.bus, set())
            if self.instance in held:
                raise _taken(self.instance)
            held.add(self.instance)
            self.held = True
            return
        try:
            await self._acquire(redis_bus)
        except RedisError as exc:
            raise RedisUnreachable(redis_bus.url, str(exc).split("\n")[0]) from None

    async def _acquire(self, redis_bus: RedisStreamsBus) -> None:
        redis, key = redis_bus.redis, self.key
        ttl_ms = int(self.lease_s * 1000)
        deadline = time.monotonic() + self.lease_s + 1.0
        seen_ttl: int | None = None
        said = False
        while True:
            if await redis.set(key, self.token, nx=True, px=ttl_ms):
                self.held = True
                return
            left = int(await redis.pttl(key))
            if left == -2:  # lapsed between the two calls
                continue
            if left < 0 or (seen_ttl is not None and left > seen_ttl + 50):
                raise _taken(self.instance)  # renewed (or never expiring): a live holder
            if time.monotonic() > deadline:
                raise _taken(self.instance)
            if not said:
                said = True
                log.info(
                    "instance name held by a run that may have crashed; waiting for its lease",
                    extra={"instance": self.instance, "wait_s": round(left / 1000, 1)},
                )
            seen_ttl = left
            await asyncio.sleep(0.1)

    async def renew(self) -> None:
        """Renew the lease; take it again if it lapsed (a Redis outage, a restarted Redis).

        Raises:
            UsageError: Another run took the name meanwhile; this one must stop.
        """
        redis_bus = self._redis
        if redis_bus is None or not self.held:
            return
        redis, key = redis_bus.redis, self.key
        ttl_ms = int(self.lease_s * 1000)
        if await redis.eval(_RENEW, 1, key, self.token, ttl_ms):
            return
        if await redis.set(key, self.token, nx=True, px=ttl_ms):
            log.warning("instance lease had lapsed; taken again", extra={"instance": self.instance})
            return
        self.held = False
        raise _taken(self.instance)

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew every `RENEW_S` until `stop`; a Redis that does not answer is logged once."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.lease_s / 4)
            if stop.is_set():
                return
            try:
                await self.renew()
            except RedisError as exc:
                self._failures += 1
                if self._failures == 1:
                    log.warning("cannot renew the instance lease", extra={"error": str(exc)})
                continue
            self._failures = 0

    async def release(self) -> None:
        """Give the lease up (a graceful stop), so the next run starts at once."""
        if not self.held:
            return
        self.held = False
        redis_bus = self._redis
        if redis_bus is None:
            _LOCAL.get(self.bus, set()).discard(self.instance)
            return
        with contextlib.suppress(RedisError, OSError):
            await redis_bus.redis.eval(_RELEASE, 1, self.key, self.token)


async def last_signal_open_ms(bus: Bus, source: str, symbol: str, since_ms: int) -> int | None:
    """Return the candle open time of `source`'s newest `detector.signal` of `symbol`.

    Only entries added from `since_ms` (epoch ms, the bus's clock) on are read: the caller
    passes when the oldest candle it may see again was published. None if none is found, or
    the bus cannot be read backwards (the in-process bus).
    """
    if not isinstance(bus, RedisStreamsBus):
        return None
    key, upper = bus.key(SignalGenerated.event_type), "+"
    lower = f"{max(0, since_ms)}-0"
    while True:
        rows: Any = await bus.redis.xrevrange(key, max=upper, min=lower, count=SCAN_PAGE)
        if not rows:
            return None
        for _entry_id, fields in rows:
            data = next(iter(fields.values()), None) if fields else None
            if data is None:
                continue
            try:
                event = decode(data, SignalGenerated.event_type)
            except MalformedEvent:
                continue
            payload = event.payload
            mine = event.source == source and isinstance(payload, SignalGenerated)
            if mine and payload.symbol == symbol:
                return to_ms(payload.candle_time)
        last = rows[-1][0]
        upper = "(" + (last.decode() if isinstance(last, bytes) else str(last))
