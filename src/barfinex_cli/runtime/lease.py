"""One running process per role instance on a bus: a lease on the instance's name.

Runs of one name share a consumer group and a consumer name (and, for the inspector, one store),
so two of them would each get part of the events — a split nobody sees. `InstanceLease` is a
lease on the name: a Redis key holding a random token, set only if absent, with a short TTL that
the running instance renews. A second run finds it renewed and refuses to start (one line, exit
code 2, naming what to change); a run that starts after a crash finds a lease nobody renews and
waits at most `LEASE_S` for it to lapse, then takes it. An instance that finds its lease taken by
another run stops rather than split. On the in-process bus the names are held in process memory.

The detector (`detector.service`) and the inspector (`inspector.service`) take one at start; the
advisor takes one per consumer name (advisors sharing an instance's signals each have their own).
The inspector also locks its store file (`StoreLock`): two inspectors on one data directory but
different buses would otherwise write one `inspector.db`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from pathlib import Path
from typing import IO, Any

from redis.exceptions import RedisError

from barfinex_cli.bus.base import Bus
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.errors import RedisUnreachable, UsageError

LEASE_S = 8.0
"""How long an instance's lease lives unless renewed: the longest a restart after a crash waits."""

RENEW_S = LEASE_S / 4
"""How often the running instance renews its lease."""


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

DETECTOR_HINT = "give this run its own name with --instance NAME"
"""What a refused detector run should change (the default hint)."""


class InstanceLease:
    """The right to run as `role` instance `instance` on this bus; one holder at a time.

    Args:
        bus: The bus the instance runs on; the lease lives under its namespace.
        instance: The name held (for the advisor, instance and consumer name).
        role: The role, in the key and the refusal (`detector`, `inspector`, `advisor`).
        hint: What a refused run should do, ending the refusal's line.
        lease_s: How long the lease lives unless renewed.
    """

    def __init__(
        self,
        bus: Bus,
        instance: str,
        *,
        role: str = "detector",
        hint: str = DETECTOR_HINT,
        lease_s: float = LEASE_S,
    ) -> None:
        self.bus = bus
        self.instance = instance
        self.role = role
        self.hint = hint
        self.lease_s = lease_s
        self.token = uuid.uuid4().hex
        self.held = False
        self.lost: UsageError | None = None
        """Set when another run took the name while this one ran (`hold` then sets its stop)."""
        self._failures = 0
        self.log = logging.getLogger(f"bfx.{role}")

    def _taken(self) -> UsageError:
        return UsageError(
            f"{self.role} instance {self.instance!r} is already running on this bus — stop it, "
            f"or {self.hint}"
        )

    @property
    def _redis(self) -> RedisStreamsBus | None:
        return self.bus if isinstance(self.bus, RedisStreamsBus) else None

    @property
    def key(self) -> str:
        """Return the lease's key (under the bus's namespace prefix, deleted with it)."""
        return f"bfx:{self.bus.namespace}:_lease:{self.role}.{self.instance}"

    async def acquire(self) -> None:
        """Take the lease, waiting for one a crashed run left behind to lapse.

        Raises:
            UsageError: Another run renews the lease: it is alive.
        """
        redis_bus = self._redis
        if redis_bus is None:
            held = _LOCAL.setdefault(self.bus, set())
            if self.key in held:
                raise self._taken()
            held.add(self.key)
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
                raise self._taken()  # renewed (or never expiring): a live holder
            if time.monotonic() > deadline:
                raise self._taken()
            # a live holder renews every quarter lease, so its lease never falls far below
            # three quarters: said only once the holder has missed a renewal (likely dead), so
            # a refusal is the one line its run prints
            if not said and left < ttl_ms * 0.6:
                said = True
                self.log.info(
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
            self.log.warning(
                "instance lease had lapsed; taken again", extra={"instance": self.instance}
            )
            return
        self.held = False
        raise self._taken()

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
                    self.log.warning("cannot renew the instance lease", extra={"error": str(exc)})
                continue
            self._failures = 0

    async def hold(self, stop: asyncio.Event) -> None:
        """`keep` the lease; if another run took the name, set `lost` and `stop` (never split)."""
        try:
            await self.keep(stop)
        except UsageError as exc:
            self.log.error("instance lease lost; stopping", extra={"instance": self.instance})
            self.lost = exc
            stop.set()

    async def release(self) -> None:
        """Give the lease up (a graceful stop), so the next run starts at once."""
        if not self.held:
            return
        self.held = False
        redis_bus = self._redis
        if redis_bus is None:
            _LOCAL.get(self.bus, set()).discard(self.key)
            return
        if redis_bus.outage.gave_up:  # a stop without Redis: the lease lapses in `lease_s`
            return
        with contextlib.suppress(RedisError, OSError):
            await redis_bus.redis.eval(_RELEASE, 1, self.key, self.token)


class StoreLock:
    """One process writing a role's store file: an advisory lock on `<store>.lock`.

    The bus lease covers runs of one name on one bus; two runs on one data directory but on
    different namespaces (or Redis servers) would still write one store. The operating system
    drops the lock with its process, so a run killed with -9 leaves nothing to wait for. Where
    `fcntl` is missing (Windows) there is no lock.
    """

    def __init__(self, store: Path, *, role: str, hint: str) -> None:
        self.path = store.with_name(store.name + ".lock")
        self.role = role
        self.hint = hint
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            UsageError: Another process holds it.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise UsageError(
                f"another {self.role} is using {self.path.parent} — stop it, or {self.hint}"
            ) from None
        self._file = handle

    def release(self) -> None:
        """Give the lock up (closing the file releases it)."""
        if self._file is not None:
            self._file.close()
            self._file = None
